#!/usr/bin/env bash
# Step time of the fitting loop (512^2, N=1000, chunks of 100 steps) under XLA's
# command-buffer (CUDA graph) settings, for the installed build:
#
#   bash benchmarks/step_variants.sh LABEL [BATCHES]     (BATCHES: default "0 16"; 0 = fit's single-scene loop)
#
# Variants: XLA's defaults; command buffers off; command buffers around while
# loops and conditionals too (the whole chunk as one graph when every command in
# it can be captured); autotune: XLA's default gemm autotuning, which the
# library turns off for its own programs (diffbmp_jax/rendering/compiling.py). Each line: profile_step.py --time (median of 20 chunks).
REPO=$(cd "$(dirname "$0")/.." && pwd)
LABEL=${1:-build}
BATCHES=${2:-"0 16"}
declare -A FLAGS=(
  [default]=""
  [off]="--xla_gpu_enable_command_buffer="
  [graphs]="--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE,CONDITIONAL --xla_gpu_graph_min_graph_size=1"
  [autotune]="--xla_gpu_autotune_level=4"
)
cd /tmp || exit 1
for variant in ${VARIANTS:-default off graphs}; do
  for b in $BATCHES; do
    line=$(XLA_FLAGS="${FLAGS[$variant]}" timeout ${VARIANT_S:-90} python3 "$REPO/benchmarks/profile_step.py" \
      --what step --batch "$b" --steps ${STEPS:-100} --size ${SIZE:-512} --n ${N:-1000} --time 2>&1 | grep -E "^wall|Error|error" | tail -2)
    echo "$LABEL $variant: $line"
  done
done

#!/usr/bin/env bash
# One call on the GPU machine: build + install the package (CUDA kernels for
# sm_90 only, to save compile time), check the cuda backend, benchmark it.
#
#   bash benchmarks/run_gpu.sh [all | comma list of check,test,bench,render,fit,clip,scale,quality]   (default: all;
#   fit, clip, scale and quality run only when named)
#
# Logs and JSON go to $OUT (the device tool's output folder), else /tmp/diffbmp_gpu.
# Stage time limits (seconds): CHECK_S, TEST_S, BENCH_S, RENDER_S. check and test run
# side by side (gpu_check.py split into GPU_CHECK_PARTS processes, default 4).
# Scripts run from /tmp so that the source folder does not shadow the
# installed package. Extra bench_cuda.py arguments: BENCH_ARGS="...".
set -o pipefail
STAGE=${1:-all}
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/diffbmp_gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
status=0

cd "$REPO" || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | tee "$OUT/build.log"
t0=$(date +%s)
python3 -m pip install -q --no-build-isolation --no-deps \
  --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90 \
  --config-settings=cmake.define.DIFFBMP_CUDA=ON . 2>&1 | tail -30 | tee -a "$OUT/build.log" || exit 2
echo "build+install: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/build.log"

cd /tmp || exit 1
python3 -c "import diffbmp_jax, diffbmp_jax.rendering.registry as f; print(diffbmp_jax.__file__, 'cuda_available', f.cuda_available())" \
  2>&1 | tee -a "$OUT/build.log"

want() { [[ $STAGE == all || ",$STAGE," == *,$1,* ]]; }
# check and test share the machine: gpu_check.py runs as GPU_CHECK_PARTS processes
# (its time is mostly compilation, on the CPU cores) while pytest runs beside them.
# No preallocation, so the processes share the GPU's memory.
pids=()
if want check; then
  parts=${GPU_CHECK_PARTS:-4}
  for ((i = 1; i <= parts; i++)); do
    XLA_PYTHON_CLIENT_PREALLOCATE=false timeout ${CHECK_S:-300} python3 "$REPO/benchmarks/gpu_check.py" \
      --part "$i/$parts" --json "$OUT/gpu_check_$i.json" > "$OUT/gpu_check_$i.log" 2>&1 &
    pids+=($!)
  done
fi
if want test; then
  if python3 -c "import pytest" 2>/dev/null; then
    XLA_PYTHON_CLIENT_PREALLOCATE=false timeout ${TEST_S:-300} python3 -m pytest -q -p no:cacheprovider \
      "$REPO/tests/test_cuda.py" "$REPO/tests/test_mipmap.py" > "$OUT/pytest_cuda_full.log" 2>&1 &
    pids+=($!)
  else
    echo "pytest not installed: tests/test_cuda.py skipped" > "$OUT/pytest_cuda_full.log"
  fi
fi
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
if want check; then
  cat "$OUT"/gpu_check_*.log > "$OUT/gpu_check.log"
  awk '/ passed, .* failed/ {p += $1; f += $3} END {print p " passed, " f " failed (all parts)"}' \
    "$OUT/gpu_check.log" | tee -a "$OUT/gpu_check.log"
  grep -h "^FAIL" "$OUT/gpu_check.log"
fi
if want test; then
  tail -15 "$OUT/pytest_cuda_full.log" | tee "$OUT/pytest_cuda.log"
fi
if [[ $STAGE == all || ",$STAGE," == *,bench,* ]]; then
  timeout ${BENCH_S:-200} python3 "$REPO/benchmarks/bench_cuda.py" --json "$OUT/bench_cuda.json" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench_cuda.log" || status=1
  # The bf16 atlas on the two larger targets (table appended to the same log).
  timeout ${BENCH_S:-200} python3 "$REPO/benchmarks/bench_cuda.py" --atlas-bf16 --canvases 512,1024,2048 \
    --ns 1000,10000,100000 ${BENCH_ARGS:-} 2>&1 | tee -a "$OUT/bench_cuda.log" || status=1
fi
if [[ $STAGE == all || ",$STAGE," == *,bench,* || ",$STAGE," == *,render,* ]]; then
  # The lead's cross-backend benchmark with the cuda column (moderate sizes: the
  # reference and the cpu backend are slow at the largest ones).
  timeout ${RENDER_S:-150} python3 "$REPO/benchmarks/bench_render.py" --backends cuda,cpu,reference \
    --sizes 512,1024 --counts 1000,10000 --repeats 5 --json "$OUT/bench_render.json" 2>&1 | tee "$OUT/bench_render.log" || status=1
fi
if [[ ",$STAGE," == *,fit,* ]]; then
  # Fitting speed per backend at 512², and pruning on vs off with cuda.
  timeout ${FIT_S:-300} python3 "$REPO/benchmarks/bench_fit.py" --size 512 --ns 500 2000 10000 --steps 100 \
    --backends cuda reference --prune-backend cuda --json "$OUT/bench_fit.json" 2>&1 | tee "$OUT/bench_fit.log" || status=1
fi
if [[ ",$STAGE," == *,clip,* ]]; then
  # Real CLIP weights if the machine has them; otherwise the loader's message and a random-weight smoke run.
  timeout ${CLIP_S:-150} python3 "$REPO/benchmarks/clip_text_run.py" --prompt "a galaxy" --steps 150 \
    --out "$OUT" 2>&1 | tee "$OUT/clip_text_run.log" || status=1
fi
if [[ ",$STAGE," == *,scale,* ]]; then
  # Batched fits (scenes/s for B = 1..64) and, with several GPUs, the speed-up over one.
  timeout ${SCALE_S:-300} python3 "$REPO/benchmarks/bench_scale.py" --json "$OUT/bench_scale.json" ${SCALE_ARGS:-} \
    2>&1 | tee "$OUT/bench_scale.log" || status=1
fi
if [[ ",$STAGE," == *,quality,* ]]; then
  # Fit quality per iteration on the shared bench scenes (QUALITY_BENCH: a copy of ../shared/bench
  # inside the checkout, which is all that travels to the device).
  timeout ${QUALITY_S:-420} python3 "$REPO/benchmarks/quality.py" --bench "${QUALITY_BENCH:-$REPO/.bench}" \
    --json "$OUT/quality.json" ${QUALITY_ARGS:-} 2>&1 | grep -v "Palette images" | tee "$OUT/quality.log" || status=1
fi
exit $status

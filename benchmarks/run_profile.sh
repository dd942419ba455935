#!/usr/bin/env bash
# Per-kernel GPU times of the batched render (Nsight Compute), next to wall times.
# Run after `bash benchmarks/run_gpu.sh build` (the package installed):
#   bash benchmarks/run_profile.sh            # 16 scenes at 512², N=1000
# Logs go to $OUT (else /tmp/diffbmp_gpu). Needs an ncu that can read counters
# (the Firecracker machines; see the device notes). DETAIL=0 skips the
# per-kernel sections (occupancy, pipes, stalls) of the two tile kernels.
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/diffbmp_gpu}
B=${B:-16}
mkdir -p "$OUT"
cd /tmp || exit 1
# Several processes one after another: no preallocation, so none waits on another's memory.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
P="python3 $REPO/benchmarks/profile_step.py"
NCU="ncu --clock-control none"
$P --time --batch "$B" 2>&1 | grep wall | tee "$OUT/profile_wall.log"
$P --time --batch 0 2>&1 | grep wall | tee -a "$OUT/profile_wall.log"
$NCU --metrics gpu__time_duration.sum --csv --print-units base --log-file "$OUT/ncu_render.csv" \
  $P --what render --batch "$B" > "$OUT/ncu_render.log" 2>&1
$P --parse "$OUT/ncu_render.csv" | tee "$OUT/profile_kernels.log"
if [[ ${DETAIL:-1} != 0 ]]; then
  # The 4th call's forward and backward (3 warm-up calls of 2 tile kernels each before it).
  timeout "${DETAIL_S:-240}" $NCU -k regex:"forward_kernel|backward_kernel" --launch-skip 6 --launch-count 2 \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
    --section SchedulerStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
    $P --what render --batch "$B" > "$OUT/ncu_detail.log" 2>&1
  grep -v "^==PROF==" "$OUT/ncu_detail.log" | tail -n 300
fi

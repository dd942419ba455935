#!/usr/bin/env bash
# Per-kernel GPU times of a fitting step (Nsight Compute), next to wall times.
# Run after `bash benchmarks/run_gpu.sh build` (the package installed):
#   bash benchmarks/run_profile.sh            # 16 scenes at 512², N=1000
# Logs go to $OUT (else /tmp/diffbmp_gpu). Needs ncu that can read counters
# (the Firecracker machines; see the device notes).
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/diffbmp_gpu}
B=${B:-16}
STEPS=${STEPS:-10}
mkdir -p "$OUT"
cd /tmp || exit 1
# Several processes one after another: no preallocation, so none waits on another's memory.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
WHAT=${WHAT:-render forward step}
P="python3 $REPO/benchmarks/profile_step.py"
NCU="ncu --clock-control none --profile-from-start off"
$P --time --batch "$B" --steps "$STEPS" 2>&1 | grep -v Warning | tee "$OUT/profile_wall.log"
$P --time --batch 0 --steps "$STEPS" 2>&1 | grep -v Warning | tee -a "$OUT/profile_wall.log"
for what in $WHAT; do
  $NCU --metrics gpu__time_duration.sum --csv --print-units base --log-file "$OUT/ncu_$what.csv" \
    $P --what $what --batch "$B" --steps "$STEPS" > "$OUT/ncu_$what.log" 2>&1
  per=1; [[ $what == step ]] && per=$STEPS
  $P --parse "$OUT/ncu_$what.csv" --per $per | tee -a "$OUT/profile_kernels.log"
done
[[ -n ${SINGLE:-1} ]] && {
  $NCU --metrics gpu__time_duration.sum --csv --print-units base --log-file "$OUT/ncu_single.csv" \
    $P --what step --batch 0 --steps "$STEPS" > "$OUT/ncu_single.log" 2>&1
  $P --parse "$OUT/ncu_single.csv" --per "$STEPS" | tee -a "$OUT/profile_kernels.log"
}
# The two tile kernels in detail.
[[ -n ${DETAIL:-1} ]] && timeout ${DETAIL_S:-240} $NCU -k regex:"forward_kernel|backward_kernel" --launch-count 2 \
  --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
  --section SchedulerStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
  $P --what render --batch "$B" > "$OUT/ncu_detail.log" 2>&1
tail -c 20000 "$OUT/ncu_detail.log" | grep -v "^==PROF==" | head -400 > "$OUT/ncu_detail_tail.log"

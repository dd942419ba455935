#!/usr/bin/env bash
# Kernel experiments in one GPU call: builds the working tree and patched copies
# of it side by side (each into a folder of its own, CUDA for sm_90 only), then
# runs the same command against each build, one after another.
#
#   bash benchmarks/run_variants.sh "CMD" [name=a.patch+b.patch ...]
#
# The unpatched tree is the variant "base". CMD runs from /tmp with the build on
# PYTHONPATH and $REPO set to this repository (an editable install of the
# package in the same Python would be imported instead: its finder comes
# before PYTHONPATH). The scripts CMD names are this tree's, run against every
# build: a name they import that an older build lacks fails that build's run
# (profile_step.py and bench_scale.py pass engine.AHEAD only where it exists). E.g.
#   bash benchmarks/run_variants.sh \
#     'python3 $REPO/benchmarks/profile_step.py --batch 16 --time --timeline' \
#     w8x4=patches/8x4.patch
REPO=$(cd "$(dirname "$0")/.." && pwd)
export REPO PYTHONUNBUFFERED=1
CMD=$1
shift
declare -A PATCHES=([base]="")
names=(base)
for spec in "$@"; do
  names+=("${spec%%=*}")
  PATCHES[${spec%%=*}]=${spec#*=}
done

build() {  # name -> /tmp/variant_<name>/pkg
  local name=$1 src=/tmp/variant_$1/src
  rm -rf "/tmp/variant_$name" && mkdir -p "$src"
  tar -C "$REPO" --exclude=.git --exclude=.variants --exclude=build --exclude='*.egg-info' -cf - . \
    | tar -C "$src" -xf - || return 1
  local p
  for p in ${PATCHES[$name]//+/ }; do
    (cd "$src" && { patch -s -p1 < "$REPO/$p" 2>/dev/null || git apply "$REPO/$p"; }) || { echo "$name: $p does not apply"; return 1; }
  done
  (cd "$src" && python3 -m pip install -q --no-build-isolation --no-deps --target "/tmp/variant_$name/pkg" \
     --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90 \
     --config-settings=cmake.define.DIFFBMP_CUDA=ON . > "/tmp/variant_$name/build.log" 2>&1) \
    || { tail -30 "/tmp/variant_$name/build.log"; return 1; }
}

t0=$(date +%s)
for name in "${names[@]}"; do build "$name" & done
wait
echo "builds: $(( $(date +%s) - t0 )) s"
cd /tmp || exit 1
for name in "${names[@]}"; do
  [[ -d /tmp/variant_$name/pkg/diffbmp_jax ]] || { echo "== $name: no build"; continue; }
  echo "== $name"
  PYTHONPATH=/tmp/variant_$name/pkg bash -c "$CMD"
done

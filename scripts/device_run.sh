#!/usr/bin/env bash
# One device call: install cutlass-wsp on the lent GPU machine (no network there: wheels carried in
# .whl/ (nvidia-cutlass; the Dask wheels of docs/distributed.md when carried), the compile cache built here carried in .cache/wsp), run the GPU tests, then whatever
# benchmark commands are given as arguments. Everything worth keeping lands in $OUT.
#   usage (device tool): bash scripts/device_run.sh [TEST_ARGS...] [-- CMD ...]
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
START=$(mktemp); sleep 1   # files of the compile cache newer than this were made by this call
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "wheel install failed"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD
export CUTLASS_WSP_CACHE=$PWD/.cache/wsp
# kernels carried xz-compressed (scripts/fused_carry.py): restored in place, keeping their times (not carried back)
[ -d .cache/wsp/kernels ] && python3 scripts/carry_xz.py unpack .cache/wsp/kernels
export MPLBACKEND=Agg
# the tree arrives without .git: the commit it was copied from is written here before the call
[ -f .cache/git-commit ] && export CUTLASS_WSP_GIT_COMMIT=$(cat .cache/git-commit)
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,memory.total --format=csv; nvcc --version | tail -1; } 2>&1 | tee "$OUT/device.txt"
python3 -m cutlass_wsp env 2>&1 | tee -a "$OUT/device.txt"
tests=(); while [ $# -gt 0 ] && [ "$1" != "--" ]; do tests+=("$1"); shift; done; [ "${1:-}" = "--" ] && shift
if [ ${#tests[@]} -gt 0 ]; then
  # -rs lists each skip with its reason; pass no -q (with -qq pytest drops its closing summary line)
  python3 -m pytest -rs -p no:cacheprovider --junitxml="$OUT/junit.xml" "${tests[@]}" 2>&1 | tee "$OUT/gpu-tests.log" | tail -40
  echo "pytest exit status: ${PIPESTATUS[0]}" | tee -a "$OUT/gpu-tests.log"
fi
[ $# -gt 0 ] && { "$@" 2>&1 | tee "$OUT/bench.log"; }
# carry back what this call compiled and tuned (only that: the whole cache is over $OUT's size limit)
(cd .cache && find wsp -type f -newer "$START" \( -name '*.so' -o -name '*.json' \) -print0 \
  | tar czf "$OUT/cache-new.tgz" --null -T -) 2>/dev/null || true
exit 0

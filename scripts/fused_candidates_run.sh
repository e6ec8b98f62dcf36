#!/usr/bin/env bash
# One device call for the unrun generation-4 candidates on this branch (docs/fused.md, "Next steps"): verify them
# (the GPU tests of generation 4 and its variants), then time each option beside cuDNN, then Nsight Compute.
#   bash scripts/device_run.sh tests/gpu/test_fused_gpu.py -k gen4 -- bash scripts/fused_candidates_run.sh
# Build the kernels here first (CUTLASS_WSP_CACHE=.cache/wsp):
#   for o in "" "--epi regs" "--epi regs --mcast 2"; do python bench/fused_layer.py compile --gen4 --gens-only --ps 4 $o; done
set -u
OUT=${OUT:-/tmp/out}
if grep -qE "[0-9]+ failed|[0-9]+ error" "$OUT/gpu-tests.log" 2>/dev/null; then
  echo "the GPU tests failed: nothing is timed (see gpu-tests.log)"; exit 1
fi
# $OUT brings back at most 8 files: the rows go to $T and are packed into one archive after every step
T=/tmp/cand; mkdir -p "$T"
pack() { tar czf "$OUT/cand.tgz" -C "$T" . ; }
n=0
for opts in "" "--epi regs" "--epi regs --mcast 2"; do
  n=$((n + 1))
  echo "# time --gen4 --gens-only $opts"
  python3 bench/fused_layer.py time --gen4 --gens-only --ps 4 --nets vgg16,resnet18 $opts --out "$T/cand$n.jsonl" \
    2>&1 | tee "$T/cand$n.log" | tail -16
  pack
done
OUT=$T bash scripts/ncu_fused.sh --gen4 --layers vgg16:conv4_2
rm -f "$T/ncu-fused.ncu-rep"; pack

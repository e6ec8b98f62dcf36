#!/usr/bin/env bash
# One device call for the generation-4 candidates on this branch (docs/fused.md, "Next steps"): verify them
# (the GPU tests of generation 4 and its variants), then time each option beside cuDNN, then Nsight Compute.
#   bash scripts/device_run.sh -- bash scripts/fused_candidates_run.sh
# Build the kernels here first (CUTLASS_WSP_CACHE=.cache/wsp):
#   for o in "" "--epi regs" "--epi regs --mcast 2"; do python bench/fused_layer.py compile --gen4 --gens-only --ps 4 $o; done
# Every step runs under a timeout: a kernel that never finishes (a cluster barrier never released, say) costs
# that step, not the call. The bench verifies each variant before timing it, so a variant whose test failed
# is reported there and not timed.
set -u
OUT=${OUT:-/tmp/out}
# $OUT brings back at most 8 files: the rows go to $T and are packed into one archive after every step
T=/tmp/cand; mkdir -p "$T"
pack() { tar czf "$OUT/cand.tgz" -C "$T" . ; }
timeout 300 python3 -m pytest -rs -p no:cacheprovider tests/gpu/test_fused_gpu.py -k gen4 2>&1 \
  | tee "$OUT/gpu-tests.log" | tail -30
echo "pytest exit status: ${PIPESTATUS[0]}" | tee -a "$OUT/gpu-tests.log"
n=0
for opts in "" "--epi regs" "--epi regs --mcast 2"; do
  n=$((n + 1))
  echo "# time --gen4 --gens-only $opts"
  timeout 150 python3 bench/fused_layer.py time --gen4 --gens-only --ps 4 --nets vgg16,resnet18 $opts \
    --out "$T/cand$n.jsonl" 2>&1 | tee "$T/cand$n.log" | tail -18
  pack
done
OUT=$T timeout 120 bash scripts/ncu_fused.sh --gen4 --layers vgg16:conv4_2
rm -f "$T/ncu-fused.ncu-rep"; pack

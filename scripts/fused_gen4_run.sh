#!/usr/bin/env bash
# One device call for generation 4 (docs/fused.md): verify it (the GPU tests of generation 4 and its variants),
# time it beside cuDNN (dense, and the pruned forms in FB 32 and in the widest filter block), then Nsight
# Compute on VGG conv4_2: the dense kernel and WSP-RB 0.7 in its wide block.
#   bash scripts/device_run.sh -- bash scripts/fused_gen4_run.sh [TIME OPTIONS...]
# Build the kernels here first (CUTLASS_WSP_CACHE=.cache/wsp): python bench/fused_layer.py compile --gen4 --gens-only --ps 4
# Every step runs under a timeout: a kernel that never finishes (a barrier never released, say) costs that step,
# not the call. The bench verifies each variant before timing it: a variant that fails is reported, not timed.
set -u
OUT=${OUT:-/tmp/out}
# $OUT brings back at most 8 files: the rows go to $T and are packed into one archive after every step
T=/tmp/gen4; mkdir -p "$T"
pack() { tar czf "$OUT/gen4.tgz" -C "$T" . ; }
timeout 300 python3 -m pytest -rs -p no:cacheprovider tests/gpu/test_fused_gpu.py -k gen4 2>&1 \
  | tee "$OUT/gpu-tests.log" | tail -30
echo "pytest exit status: ${PIPESTATUS[0]}" | tee -a "$OUT/gpu-tests.log"
echo "# time --gen4 --gens-only $*"
timeout 240 python3 bench/fused_layer.py time --gen4 --gens-only --ps 4 --nets vgg16,resnet18 "$@" \
  --out "$T/time.jsonl" 2>&1 | tee "$T/time.log" | grep -v '^{'
pack
for what in "--gen4" "--pattern wsp-rb --ratio 0.7"; do
  tag=$(echo "$what" | tr -dc 'a-z0-9.')
  mkdir -p "$T/ncu-$tag"
  OUT="$T/ncu-$tag" timeout 100 bash scripts/ncu_fused.sh $what --layers vgg16:conv4_2
  rm -f "$T/ncu-$tag/ncu-fused.ncu-rep"; pack
done

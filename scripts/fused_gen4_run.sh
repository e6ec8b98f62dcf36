#!/usr/bin/env bash
# One device call for generation 4 (docs/fused.md): verify it (the GPU tests of generation 4, its variants and
# the sweep's generation-4 points, and the fused config search), time it beside cuDNN (dense, and the pruned
# forms in FB 32 and in the widest filter block), run the sweep's fused points (VGG-16 and ResNet-18, batch 32,
# with cuDNN), then Nsight Compute on VGG conv4_2 (WSP-RB 0.7 in its block of 96; NCU="--gen4" for dense, NCU=none
# for no profile). Environment: NCU_LAYERS the profiled layers, SWEEP=none skips the sweep, TESTS_K the tests' -k
# expression (one that matches nothing skips them), TIME=none skips the time step, TIME_S its limit in seconds.
#   bash scripts/device_run.sh -- bash scripts/fused_gen4_run.sh [TIME OPTIONS...]
# Build the kernels here first and carry them lean: python scripts/fused_carry.py [--sweep] with the same time
# options (docs/fused.md, "Third round", has the whole command).
# Every step runs under a timeout: a kernel that never finishes (a barrier never released, say) costs that step,
# not the call. The bench and the sweep verify each variant before timing it: a failure is reported, not timed.
set -u
OUT=${OUT:-/tmp/out}
# $OUT brings back at most 8 files: the rows go to $T and are packed into one archive after every step
T=/tmp/gen4; mkdir -p "$T"
pack() { tar czf "$OUT/gen4.tgz" -C "$T" . ; }
# The persistent, the region-multicast and the generation-5 kernels' tests run each in a process of their own, after
# the others: a kernel that traps (the mbarrier watchdog) leaves its CUDA context unusable, and would fail every later
# test of its process. Where they fail, the timing runs without them (the same reason).
tests() {
  timeout 300 python3 -m pytest -rs -p no:cacheprovider tests/gpu/test_fused_gpu.py -k "$1" 2>&1 \
    | tee -a "$OUT/gpu-tests.log" | tail -20
  local st=${PIPESTATUS[0]}; echo "pytest exit status: $st" | tee -a "$OUT/gpu-tests.log"; return "$st"
}
K=${TESTS_K:-gen4 or gen5 or config_search}
tests "($K) and not persistent and not rmc and not gen5"
tests "($K) and persistent and not rmc and not gen5"; st=$?
tests "($K) and rmc"; st_rmc=$?   # the region multicast, with persistent CTAs too
# generation 5: its persistent pair in a process of its own, so that a failure there costs the timing only its tags
# (on the device's pytest 9.1, -k "tma" selected every generation-5 test: no split by that word)
tests "($K) and gen5 and not persist"; st_gen5=$?
tests "($K) and gen5 and persist"; st_persist=$?
args=("$@")
if [ "$st_gen5" -ne 0 ] && [ "$st_gen5" -ne 5 ]; then
  echo "# generation 5 failed its tests: timed without it"
  kept=(); for x in "${args[@]}"; do [ "$x" = --gen5 ] || kept+=("$x"); done; args=("${kept[@]}")
fi
drop_tags() {   # drop generation 5's tags containing $1 from --gen5-tags
  for i in "${!args[@]}"; do
    if [ "$i" -gt 0 ] && [ "${args[$((i - 1))]}" = --gen5-tags ]; then
      args[$i]=$(echo "${args[$i]}" | tr ',' '\n' | grep -v -- "$1" | paste -sd, -)
    fi
  done
}
if [ "$st_persist" -ne 0 ] && [ "$st_persist" -ne 5 ]; then
  echo "# the persistent pair failed its tests: timed without it"; drop_tags -persist
fi
if [ "$st" -ne 0 ] && [ "$st" -ne 5 ]; then   # 5: no test collected
  echo "# the persistent kernels failed their tests: timed without them"
  args=("${args[@]//,persistent/}"); args=("${args[@]//persistent,/}")
fi
if [ "$st_rmc" -ne 0 ] && [ "$st_rmc" -ne 5 ]; then
  echo "# the region-multicast kernels failed their tests: timed without them"
  for i in "${!args[@]}"; do [ "$i" -gt 0 ] && [ "${args[$((i - 1))]}" = --rmcasts ] && args[$i]=1; done
fi
if [ "${TIME:-}" != none ]; then
  echo "# time --gen4 --gens-only ${args[*]}"
  timeout ${TIME_S:-240} python3 bench/fused_layer.py time --gen4 --gens-only --ps 4 --nets vgg16,resnet18 "${args[@]}" \
    --out "$T/time.jsonl" 2>&1 | tee -a "$T/time.log" | grep -v '^{'
  # the table, each fused cell the fastest verified variant of its form (which one: the last line)
  python3 bench/fused_layer.py table "$T/time.jsonl" --gen 4 --best > "$T/table.md" 2>&1; tail -3 "$T/table.md"
fi
pack
[ "${SWEEP:-}" = none ] || timeout 240 python3 -m cutlass_wsp sweep --net vgg16,resnet18 \
  --pattern conv,dense,fp,wsp-r,wsp-rb --impl fused,cudnn --ratio 0.5,0.7,0.9 --no-tune --budget-ms 100 \
  --out "$T/sweep-fused.jsonl" --no-plots 2>&1 | tail -3
rm -f "$T"/*.lock "$T"/*.csv; pack
[ "${NCU:-}" = none ] && exit 0
what=${NCU:-"--pattern wsp-rb --ratio 0.7"}
tag=$(echo "$what" | tr -dc 'a-z0-9.')
mkdir -p "$T/ncu-$tag"
OUT="$T/ncu-$tag" timeout 100 bash scripts/ncu_fused.sh $what --layers ${NCU_LAYERS:-vgg16:conv4_2} | tail -16
rm -f "$T/ncu-$tag/ncu-fused.ncu-rep"; pack

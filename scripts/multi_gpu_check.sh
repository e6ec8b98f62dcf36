#!/usr/bin/env bash
# Issue 15's "Must show", in ONE device call on a machine with two GPUs or more (nvidia-h200-x2):
#   0. tune and compile ahead once, so that both timed runs start from the same warm caches;
#   1. a worker killed mid-sweep (SIGKILL to a worker process once 12 rows are in; a short sweep,
#      --net resnet18 --pattern dense,wsp-r): no row lost, its point one error row naming the death,
#      the restarted worker measures on;
#   2. the README's main sweep on ONE GPU (CUDA_VISIBLE_DEVICES=0)            -> one.jsonl, wall time;
#   3. the same sweep with --workers all (every GPU, dask-cuda)               -> all.jsonl, wall time;
#   4. checks: rows from every GPU, no duplicate, every point has its row, results equal within noise
#      to the one-GPU run, and the wall time against one GPU (target: >= 0.9 x GPUs, 1.8x on two).
# It prints one VERDICT line per check and a last line `MULTI-GPU CHECK: PASS` or `FAIL (n)`. $OUT gets
# verdicts.txt, device.txt, results.tgz (the results files and every log) and cache-new.tgz (what this
# call compiled and tuned: unpack it into .cache to carry it next time). The steps share the call's
# 10 minutes: each gets what is left, the kill check (short) before the timed runs (long).
#
# Before the call, here: bash scripts/prepare_device.sh, and the wheels docs/distributed.md lists in
# .whl/ (nvidia-cutlass, dask, distributed, dask-cuda, tornado, zict, tblib, partd, locket).
# The call (device tool): kind nvidia-h200-x2, carry [".whl", ".cache"],
#   command: bash scripts/multi_gpu_check.sh [SWEEP OPTIONS...]
# Sweep options (default: none, the README's main sweep, 736 points: about 230 s on one H200 once
# tuned) narrow both timed runs, e.g. `--net resnet18` when the 10 minutes are short: a cold tuning
# cache costs about 150 s more.
set -u
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
DEADLINE=$((SECONDS + ${MGC_SECONDS:-575}))             # the device call's limit is 600 s
left() { local n=$(( DEADLINE - SECONDS - ${1:-0} )); [ "$n" -gt 5 ] && echo "$n" || echo 5; }
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
W=$(mktemp -d)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "wheel install failed"; echo "MULTI-GPU CHECK: FAIL (1)"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD
export CUTLASS_WSP_CACHE=$PWD/.cache/wsp
[ -f .cache/git-commit ] && export CUTLASS_WSP_GIT_COMMIT=$(cat .cache/git-commit)
START=$(mktemp); sleep 1   # files of the compile cache newer than this were made by this call
WSP=(python3 -m cutlass_wsp)
SCOPE=("$@")
KILL_SCOPE=(--net resnet18 --pattern dense,wsp-r)

fails=0
verdict() {  # verdict PASS|FAIL text
  echo "VERDICT $1: $2" | tee -a "$OUT/verdicts.txt"
  [ "$1" = PASS ] || fails=$((fails + 1))
}
verdicts_of() {  # the VERDICT lines a check printed into $1
  grep '^VERDICT' "$1" >> "$OUT/verdicts.txt"
  fails=$((fails + $(grep -c '^VERDICT FAIL' "$1")))
}
finish() {
  (cd .cache && find wsp -type f -newer "$START" \( -name '*.so' -o -name '*.json' \) -print0 \
    | tar czf "$OUT/cache-new.tgz" --null -T -) 2>/dev/null || true
  (cd "$W" && tar czf "$OUT/results.tgz" -- *.jsonl *.log) 2>/dev/null || true
  if [ "$fails" -eq 0 ]; then echo "MULTI-GPU CHECK: PASS"; else echo "MULTI-GPU CHECK: FAIL ($fails)"; fi
  exit 0
}

nvidia-smi --query-gpu=index,name,pci.bus_id,driver_version,memory.total --format=csv 2>&1 | tee "$OUT/device.txt"
NGPU=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
if ! python3 -c "import dask, distributed, dask_cuda; print('dask', dask.__version__, 'distributed',
distributed.__version__, 'dask-cuda', dask_cuda.__version__)" 2>&1 | tee -a "$OUT/device.txt"; then
  verdict FAIL "dask-cuda does not import (carry the wheels of docs/distributed.md; cuda-core too if the image's is older than 0.5.1)"
  finish
fi
if [ "$NGPU" -lt 2 ]; then verdict FAIL "this machine has $NGPU GPU(s): the check needs two or more"; finish; fi

# 0. tune and compile ahead once (what `sweep` does first), for the timed sweep and the kill check
timeout "$(left 300)" python3 - "$W" "${SCOPE[@]}" <<'PY' 2>&1 | tee "$W/prepare.log" | tail -3
import sys
from cutlass_wsp.commands.sweep_options import from_args
from cutlass_wsp.sweep.plan import expand
from cutlass_wsp.sweep.worker import prepare_here

points = {p.key: p for argv in (sys.argv[2:], ["--net", "resnet18", "--pattern", "dense,wsp-r"])
          for p in expand(from_args(argv))}
prepare_here(list(points.values()), say=print)
PY

# 1. a worker killed mid-sweep
: > "$W/kill.log"   # appended to by the sweep and by the kill step below (O_APPEND: neither overwrites the other)
timeout "$(left 330)" "${WSP[@]}" sweep "${KILL_SCOPE[@]}" --workers all --out "$W/kill.jsonl" --no-plots \
  >> "$W/kill.log" 2>&1 &
GUARD=$!                                  # `timeout`; the sweep is its child, the workers the sweep's
victim=""
for _ in $(seq 1800); do                  # wait for 12 rows (line 1 is the header), then kill a worker
  n=$(( $( (wc -l < "$W/kill.jsonl") 2>/dev/null || echo 1) - 1 ))
  if [ "$n" -ge 12 ]; then
    sweep=$(pgrep -P "$GUARD" | head -1)
    victim=$(pgrep -P "$sweep" -f spawn_main | head -1)
    [ -n "$victim" ] && kill -9 "$victim" && echo "killed worker process $victim after $n rows" | tee -a "$W/kill.log"
    break
  fi
  kill -0 "$GUARD" 2>/dev/null || break
  sleep 0.1
done
wait "$GUARD"; rck=$?
[ -n "$victim" ] || verdict FAIL "no worker process was found to kill (kill.log)"
[ $rck -eq 0 ] || verdict FAIL "the sweep with a killed worker exited $rck (kill.log)"
python3 - "$W" "${KILL_SCOPE[@]}" <<'PY' 2>&1 | tee "$W/kill-check.log"
import re
import sys
from cutlass_wsp.commands.sweep_options import from_args
from cutlass_wsp.sweep.plan import expand
from cutlass_wsp.sweep.results import ResultStore

w = sys.argv[1]
keys = {p.key for p in expand(from_args(sys.argv[2:]))}
rows = ResultStore(f"{w}/kill.jsonl").load(all_rows=True)
seen = [r["key"] for r in rows]
dead = [i for i, r in enumerate(rows) if "worker measuring this point died" in (r.get("reason") or "")]
ok = len(seen) == len(set(seen)) and set(seen) == keys
print(f"VERDICT {'PASS' if ok else 'FAIL'}: killed worker, no row lost: {len(set(seen))} of {len(keys)} points "
      f"have their row, {len(seen) - len(set(seen))} duplicates")
# the kill may land between two points (the worker had ended one, not started the next): then no row is an
# error and the sweep's log says so; otherwise exactly the point it was measuring is
log = open(f"{w}/kill.log").read()
between = "died between points" in log
m = re.search(r"killed worker process \d+ after (\d+) rows", log)
first_after = dead[0] + 1 if dead else (int(m.group(1)) if m else len(rows))
after = {r.get("gpu_bus_id") for r in rows[first_after:]}
ok = (len(dead) == 1 or (not dead and between)) and len(after) >= 2
print(f"VERDICT {'PASS' if ok else 'FAIL'}: the killed worker's point is "
      f"{len(dead)} error row(s)" + (f" ({rows[dead[0]]['reason'][:150]}...)" if dead else "")
      + (" (it died between points, as the sweep reported)" if between and not dead else "")
      + f"; after it, rows from {len(after)} GPUs (the restarted worker measures on)")
PY
verdicts_of "$W/kill-check.log"

# 2. one GPU
t0=$SECONDS
CUDA_VISIBLE_DEVICES=0 timeout "$(left 150)" "${WSP[@]}" sweep "${SCOPE[@]}" --out "$W/one.jsonl" --no-plots \
  > "$W/one.log" 2>&1
rc1=$?; t1=$SECONDS
tail -2 "$W/one.log"
# 3. every GPU
timeout "$(left 15)" "${WSP[@]}" sweep "${SCOPE[@]}" --workers all --out "$W/all.jsonl" --no-plots \
  > "$W/all.log" 2>&1
rc2=$?; t2=$SECONDS
tail -2 "$W/all.log"
[ $rc1 -eq 0 ] || verdict FAIL "the one-GPU sweep exited $rc1 (124: out of time; one.log)"
[ $rc2 -eq 0 ] || verdict FAIL "the --workers all sweep exited $rc2 (124: out of time; all.log)"

# 4. the checks of the two timed runs
python3 - "$W" "$t0" "$t1" "$t2" "$NGPU" "${SCOPE[@]}" <<'PY' 2>&1 | tee "$W/check.log"
import math, statistics, sys
from datetime import datetime
from cutlass_wsp.commands.sweep_options import from_args
from cutlass_wsp.sweep.plan import expand
from cutlass_wsp.sweep.results import ResultStore

w, t0, t1, t2, ngpu = sys.argv[1], *map(float, sys.argv[2:5]), int(sys.argv[5])
keys = {p.key for p in expand(from_args(sys.argv[6:]))}
one = ResultStore(f"{w}/one.jsonl").load(all_rows=True, missing_ok=True)
allr = ResultStore(f"{w}/all.jsonl").load(all_rows=True, missing_ok=True)


def say(ok, text):
    print(f"VERDICT {'PASS' if ok else 'FAIL'}: {text}")


def span(rows):
    ts = sorted(datetime.fromisoformat(r["timestamp"]).timestamp() for r in rows)
    return ts[-1] - ts[0] if len(ts) > 1 else float("nan")


seen = [r["key"] for r in allr]
say(bool(seen) and len(seen) == len(set(seen)), f"no duplicates: {len(seen)} rows, {len(set(seen))} keys in all.jsonl")
say(set(seen) == keys, f"every point has its row: {len(keys & set(seen))} of {len(keys)}")
by_bus = {}
for r in allr:
    by_bus[str(r.get("gpu_bus_id"))] = by_bus.get(str(r.get("gpu_bus_id")), 0) + 1
say(len(by_bus) == ngpu, f"rows from every GPU: {by_bus} (gpu_bus_id: rows), hosts {sorted({str(r.get('host')) for r in allr})}")

a = {r["key"]: r for r in allr}
pairs = [(r, a[r["key"]]) for r in one if r["key"] in a]
same = sum(x["status"] == y["status"] for x, y in pairs)
ratios = [y["median_ms"] / x["median_ms"] for x, y in pairs
          if x["status"] == y["status"] == "ok" and x["median_ms"] and y["median_ms"]]
gm = math.exp(statistics.fmean(map(math.log, ratios))) if ratios else float("nan")
within = sum(abs(q - 1) <= 0.10 for q in ratios) / len(ratios) if ratios else 0.0
say(bool(pairs) and same >= len(pairs) - 2 and 0.95 <= gm <= 1.05 and within >= 0.90,
    f"results equal within noise: status equal on {same} of {len(pairs)} points; median_ms all/one geomean "
    f"{gm:.3f}, {within:.0%} of {len(ratios)} ok points within 10%")

wall1, wall2 = t1 - t0, t2 - t1
s1, s2 = span(one), span(allr)
say(len(one) == len(allr) == len(keys) and wall1 / wall2 >= 0.9 * ngpu,
    f"wall time of the whole command: one GPU {wall1:.0f} s, {ngpu} GPUs {wall2:.0f} s: {wall1 / wall2:.2f}x "
    f"(target >= {0.9 * ngpu:.1f}x); measuring alone (first to last row): {s1:.0f} s vs {s2:.0f} s, {s1 / s2:.2f}x")
PY
verdicts_of "$W/check.log"
finish

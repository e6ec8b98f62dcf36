#!/usr/bin/env bash
# Nsight Compute on the fused layer kernel (device machine, after scripts/device_run.sh has installed the tree):
#   bash scripts/device_run.sh -- bash scripts/ncu_fused.sh [PROFILE ARGS...]   e.g. --gen3 --layers vgg16:conv4_2
# Writes $OUT/ncu-fused.ncu-rep, the details page ($OUT/ncu-fused-details.txt) and the per-SASS-line source
# page with stall samples ($OUT/ncu-fused-sass.csv).
set -u
OUT=${OUT:-/tmp/out}
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | tail -1)
[ -n "$ncu" ] || { echo "error: Nsight Compute (ncu) not found on PATH or under /opt/nvidia (install it)"; exit 1; }
"$ncu" --version | tail -1
"$ncu" -k wsp_fused_layer --set full --import-source no -f -o "$OUT/ncu-fused" \
  python3 bench/fused_layer.py profile "$@" || { echo "error: ncu failed"; exit 1; }
"$ncu" -i "$OUT/ncu-fused.ncu-rep" --page details > "$OUT/ncu-fused-details.txt"
"$ncu" -i "$OUT/ncu-fused.ncu-rep" --page source --csv --print-source sass > "$OUT/ncu-fused-sass.csv" 2>&1 || true
grep -E "wsp_fused_layer|Duration|Throughput|Ipc Active|Eligible Warps|No Eligible|Hit Rate" "$OUT/ncu-fused-details.txt"

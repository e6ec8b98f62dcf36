#!/usr/bin/env python
"""Where the dense GEMM batch's time goes: our tuned kernel against cuBLAS, per shape, from the
hardware counters (Nsight Compute) and from timings under each L2 state.

    python bench/profile_dense.py flush [--only LABEL,...] [--tiles 4,6]   # dirty / clean / warm L2
    python bench/profile_dense.py ncu   [--only LABEL,...] [--out results/ncu-dense-h100.csv]

`flush`: ours (the tuned kernel, else the default) and cuBLAS (cublasGemmStridedBatchedEx), both
verified first, timed with the L2 flushed by writing 2x its size ("dirty": the launch also writes
back the flush's dirty lines), by reading it ("clean": the launch pays for its own bytes only), and
warm (no flush).
`ncu`: runs this script's `launch` mode under `ncu --clock-control none` (Nsight Compute flushes
and invalidates the caches before each profiled kernel, i.e. a clean cold L2) and prints, per shape
and library: kernel name (cuBLAS's encodes its tile and cluster), duration, DRAM and L2 bytes,
DRAM / L2 / SM throughput as % of peak, grid, registers and shared memory. Only the timed launches
are profiled (cudaProfilerStart/Stop around them); a marker kernel `wsp_mark_<i>_<who>` precedes each.
Shapes: the 24 of bench/tune_dense.py (labels as printed there, matched by prefix).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tune_dense import Shape, shapes, short_config, verified_launches  # bench/ is this script's directory

METRICS = (
    "gpu__time_duration.sum",
    "dram__bytes_read.sum", "dram__bytes_write.sum", "lts__t_bytes.sum",
    "dram__throughput.avg.pct_of_peak_sustained_elapsed",
    "lts__throughput.avg.pct_of_peak_sustained_elapsed",
    "sm__throughput.avg.pct_of_peak_sustained_elapsed",
    "sm__warps_active.avg.pct_of_peak_sustained_active",
    "launch__grid_size", "launch__block_size", "launch__registers_per_thread",
    "launch__shared_mem_per_block_dynamic",
)
DEFAULT_ONLY = ("vgg16.conv3_1", "vgg16.conv4_1", "vgg16.conv4_2", "vgg16.conv5_1", "resnet18.layer2",
                "resnet18.layer3", "resnet18.layer4")


def selected(args) -> list[Shape]:
    tiles = [int(t) for t in args.tiles.split(",")]
    only = [o.strip() for o in args.only.split(",")] if args.only else list(DEFAULT_ONLY)
    return [s for s in shapes(["vgg16", "resnet18"], tiles, 32, args.dtype)
            if any(s.label.startswith(o) for o in only)]


def operands(shape: Shape, dtype: str, cache, choices):
    """(ours, cublas, desc): the tuned kernel of this run's `choices` (else the default) and cuBLAS,
    verified (verified_launches)."""
    from cutlass_wsp.families.dense import DENSE_KERNEL
    from cutlass_wsp.gpu.device import compute_capability
    from cutlass_wsp.kernels.manifest import arch_for_device

    arch = arch_for_device(compute_capability())
    desc = choices.lookup(DENSE_KERNEL.name, shape.problem, dtype, arch) or \
        DENSE_KERNEL.default(shape.problem, dtype, arch)
    ours, cub, _ = verified_launches(shape, desc, dtype, cache)
    return ours, cub, desc


def flush_mode(args, cache) -> int:
    from cutlass_wsp.gpu.harness import time_launch
    from cutlass_wsp.sweep.session import tuned_choices

    print(f"{'shape':28s} p {'who':6s} {'dirty us':>9s} {'clean us':>9s} {'warm us':>8s}  config", flush=True)
    choices = tuned_choices(cache)            # the tuning store, read once for the run
    for s in selected(args):
        ours, cub, desc = operands(s, args.dtype, cache, choices)
        for who, launch in (("ours", ours), ("cuBLAS", cub)):
            t = {m: time_launch(launch, budget_s=args.budget, flush_mode=m).median_ms * 1e3 for m in ("dirty", "clean")}
            warm = time_launch(launch, budget_s=args.budget, flush_l2=False).median_ms * 1e3
            print(f"{s.label:28s} {s.p} {who:6s} {t['dirty']:9.1f} {t['clean']:9.1f} {warm:8.1f}  "
                  f"{short_config(desc) if who == 'ours' else ''}", flush=True)
    return 0


def launch_mode(args, cache) -> int:
    """What ncu profiles: per shape a marker, ours, a marker, cuBLAS; setup and checks outside the range."""
    import cupy

    from cutlass_wsp.sweep.session import tuned_choices

    work = []
    choices = tuned_choices(cache)            # the tuning store, read once for the run
    for i, s in enumerate(selected(args)):
        ours, cub, desc = operands(s, args.dtype, cache, choices)
        work.append((i, s, ours, cub, desc))
    marks = {}
    for i, s, *_ in work:
        for who in ("ours", "cublas"):
            name = f"wsp_mark_{i}_{who}"
            marks[name] = cupy.RawKernel(f'extern "C" __global__ void {name}() {{}}', name)
            marks[name]((1,), (1,), ())
    for i, s, ours, cub, desc in work:      # warm: lazy library set-up stays out of the profile
        ours(), cub()
    cupy.cuda.get_current_stream().synchronize()
    for i, s, ours, cub, desc in work:
        print(f"mark {i}: {s.label} p={s.p} {s.problem} ours={desc.name}", flush=True)
    cupy.cuda.profiler.start()
    for i, s, ours, cub, desc in work:
        marks[f"wsp_mark_{i}_ours"]((1,), (1,), ())
        ours()
        marks[f"wsp_mark_{i}_cublas"]((1,), (1,), ())
        cub()
    cupy.cuda.get_current_stream().synchronize()
    cupy.cuda.profiler.stop()
    return 0


def parse_ncu_csv(text: str) -> list[dict]:
    """ncu --csv --print-units base rows (one per metric) -> one dict per kernel launch, in order."""
    start = next((i for i, line in enumerate(text.splitlines()) if line.startswith('"ID"')), None)
    if start is None:
        return []
    kernels: dict[str, dict] = {}
    for row in csv.DictReader(io.StringIO("\n".join(text.splitlines()[start:]))):
        k = kernels.setdefault(row["ID"], {"id": int(row["ID"]), "kernel": row["Kernel Name"]})
        value = row["Metric Value"].replace(",", "")
        try:
            k[row["Metric Name"]] = float(value)
        except ValueError:
            k[row["Metric Name"]] = value
    return sorted(kernels.values(), key=lambda k: k["id"])


def attribute(kernels: list[dict]) -> list[dict]:
    """Give each kernel the shape/who of the last marker before it; drop the markers."""
    out, tag = [], None
    for k in kernels:
        if k["kernel"].startswith("wsp_mark_"):
            _, _, i, who = k["kernel"].split("(")[0].split("_", 3)
            tag = (int(i), who)
            continue
        if tag is not None:
            out.append({**k, "shape": tag[0], "who": tag[1]})
    return out


def ncu_mode(args, cache) -> int:
    ncu = shutil.which("ncu") or next((str(p) for p in sorted(Path("/opt/nvidia").glob("nsight-compute/*/ncu"))), None)
    if ncu is None:
        print("error: Nsight Compute (ncu) is not on PATH (install it, or run `flush` mode instead)", file=sys.stderr)
        return 2
    cmd = [ncu, "--clock-control", "none", "--profile-from-start", "off", "--csv", "--print-units", "base",
           "--metrics", ",".join(METRICS), sys.executable, os.path.abspath(__file__), "launch",
           "--dtype", args.dtype, "--tiles", args.tiles] + (["--only", args.only] if args.only else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(proc.stdout)
    labels = [line for line in proc.stdout.splitlines() if line.startswith("mark ")]
    for line in labels:
        print(line)
    kernels = attribute(parse_ncu_csv(proc.stdout))
    if proc.returncode != 0 or not kernels:
        print(f"error: ncu exited {proc.returncode} with {len(kernels)} kernels profiled; stderr tail:\n"
              + proc.stderr[-3000:], file=sys.stderr)
        return 1
    print(f"{'#':>2s} {'who':6s} {'us':>7s} {'DRAM rd MB':>10s} {'wr MB':>7s} {'L2 MB':>7s} {'dram%':>5s} "
          f"{'l2%':>4s} {'sm%':>4s} {'warps%':>6s} {'grid':>6s} {'blk':>4s} {'regs':>4s} {'smem KB':>7s}  kernel")
    for k in kernels:
        g = lambda m: k.get(m, float("nan"))                              # noqa: E731
        print(f"{k['shape']:2d} {k['who']:6s} {g('gpu__time_duration.sum') / 1e3:7.1f} "
              f"{g('dram__bytes_read.sum') / 1e6:10.1f} {g('dram__bytes_write.sum') / 1e6:7.1f} "
              f"{g('lts__t_bytes.sum') / 1e6:7.1f} {g('dram__throughput.avg.pct_of_peak_sustained_elapsed'):5.0f} "
              f"{g('lts__throughput.avg.pct_of_peak_sustained_elapsed'):4.0f} "
              f"{g('sm__throughput.avg.pct_of_peak_sustained_elapsed'):4.0f} "
              f"{g('sm__warps_active.avg.pct_of_peak_sustained_active'):6.1f} {g('launch__grid_size'):6.0f} "
              f"{g('launch__block_size'):4.0f} {g('launch__registers_per_thread'):4.0f} "
              f"{g('launch__shared_mem_per_block_dynamic') / 1024:7.1f}  {k['kernel'][:110]}")
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=("flush", "ncu", "launch"))
    ap.add_argument("--only", default=None, help="comma-separated shape label prefixes (default: the K >= 128 "
                    "layers from VGG conv3_1 and ResNet-18 layer2 on)")
    ap.add_argument("--tiles", default="4,6")
    ap.add_argument("--dtype", default="fp16", choices=("fp16", "bf16"))
    ap.add_argument("--budget", type=float, default=0.3, help="timing seconds per measurement (flush mode)")
    ap.add_argument("--out", default="results/ncu-dense.csv", help="raw ncu CSV (ncu mode)")
    args = ap.parse_args(argv)

    from cutlass_wsp.errors import WspError
    from cutlass_wsp.kernels.cache import KernelCache

    try:
        cache = KernelCache()
        return {"flush": flush_mode, "ncu": ncu_mode, "launch": launch_mode}[args.mode](args, cache)
    except WspError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())

"""The host-side parts of the bench/ tools: report tables from result rows, the ncu CSV reader, and
the cuobjdump readers -- fed with synthetic rows and tool output (no GPU, no profiler)."""

from __future__ import annotations

import pytest


def _load(name: str):
    from bench_scripts import load_bench_script

    return load_bench_script(name)


def _row(pattern, impl, ms, ratio=None, balance=None, floor=0.050, H=28):
    return {"status": "ok", "net": "vgg16", "c": 512, "n": 512, "H": H, "batch": 32, "p": 4, "dtype": "fp16",
            "pattern": pattern, "impl": impl, "ratio": ratio, "balance": balance, "median_ms": ms,
            "floor_ms": floor, "layers": ["vgg16.conv4_2"]}


def test_kept_share_is_the_median_fraction_of_the_balanced_gain():
    report = _load("report")
    rows = [_row("dense", "cutlass", 0.100),
            _row("wsp-r", "cutlass", 0.050, 0.7, "balanced"),          # gain 1.0
            _row("wsp-r", "cutlass-grouped", 0.080, 0.7, "unbalanced"),  # 0.25 of it
            _row("wsp-r", "cutlass-padded", 0.100, 0.7, "unbalanced"),   # none of it
            _row("wsp-r", "cutlass", 0.098, 0.5, "balanced"),          # gain 2 %: not counted
            _row("wsp-r", "cutlass-grouped", 0.050, 0.5, "unbalanced")]
    text = report.kept_share(rows)
    assert "| cutlass-grouped | 1 | 25% | 25% | 25% |" in text
    assert "| cutlass-padded | 1 | 0% | 0% | 0% |" in text


def test_target_table_names_each_wsp_c_implementation_apart():
    report = _load("report")
    rows = [_row("dense", "cutlass", 0.100, floor=0.050),
            _row("wsp-c-fused", "cutlass", 0.080, 0.7, "balanced", floor=0.025),
            _row("wsp-c-fused", "cutlass-xform", 0.055, 0.7, "balanced", floor=0.025)]
    text = report.target_table(rows)
    # predicted 2.00x; achieved 1.25x (62 %) in the mainloop, 1.82x (91 %) in the transform
    assert "| wsp-c fused (gather in the GEMM mainloop) | 0.7 | 1 | 1.25× | 2.00× | 62% |" in text
    assert "| wsp-c fused (gather in the input transform) | 0.7 | 1 | 1.82× | 2.00× | 91% |" in text


NCU_CSV = '''==PROF== Connected to process 1
"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size","Device","CC","Section Name","Metric Name","Metric Unit","Metric Value"
"0","1","python3","h","wsp_mark_0_ours","1","7","(1, 1, 1)","(1, 1, 1)","0","9.0","Command line profiler metrics","gpu__time_duration.sum","ns","1,024"
"1","1","python3","h","void cutlass::device_kernel<X>(T1)","1","7","(384, 1, 1)","(132, 1, 1)","0","9.0","Command line profiler metrics","gpu__time_duration.sum","ns","27,700"
"1","1","python3","h","void cutlass::device_kernel<X>(T1)","1","7","(384, 1, 1)","(132, 1, 1)","0","9.0","Command line profiler metrics","dram__bytes_read.sum","byte","34,100,000"
"2","1","python3","h","wsp_mark_0_cublas","1","7","(1, 1, 1)","(1, 1, 1)","0","9.0","Command line profiler metrics","gpu__time_duration.sum","ns","1,000"
"3","1","python3","h","nvjet_sm90_hsh_160x128_64x5_1x2_h_bz_NNN","1","7","(384, 1, 1)","(132, 1, 1)","0","9.0","Command line profiler metrics","gpu__time_duration.sum","ns","24,100"
'''


def test_ncu_csv_rows_become_one_record_per_launch_tagged_by_the_marker_before_it():
    prof = _load("profile_dense")
    kernels = prof.parse_ncu_csv(NCU_CSV)
    assert [k["id"] for k in kernels] == [0, 1, 2, 3]
    assert kernels[1]["gpu__time_duration.sum"] == 27700.0 and kernels[1]["dram__bytes_read.sum"] == 34.1e6
    tagged = prof.attribute(kernels)
    assert [(k["shape"], k["who"], k["kernel"][:5]) for k in tagged] == [(0, "ours", "void "), (0, "cublas", "nvjet")]
    assert prof.parse_ncu_csv("no profile here\n") == []


RES = """
Resource usage:
 Common:
  GLOBAL:0
 Function _ZN7cutlass13device_kernelIN4wsp6KernelEEEvNT_6ParamsE:
  REG:168 STACK:304 SHARED:1024 LOCAL:0 CONSTANT[0]:1040 TEXTURE:0 SURFACE:0 SAMPLER:0
"""
SASS = """
        /*0a10*/                   HGMMA.64x128x16.F32 R24, gdesc[UR4], RZ, !UPT ;
        /*0a20*/                   HGMMA.64x128x16.F32 R24, gdesc[UR8], R24 ;
        /*0a30*/               @P0 UTMALDG.2D [UR8], [UR10] ;
        /*0a40*/                   LDGSTS.E.BYPASS.128 [R3], desc[UR4][R4.64] ;
        /*0a50*/                   LDG.E.128 R8, desc[UR4][R2.64] ;
        /*0a60*/              @!P1 SYNCS.EXCH.64 URZ, [UR4], UR6 ;
        /*0a70*/                   LDSM.16.M88.4 R4, [R2] ;
"""


def test_cuobjdump_readers(monkeypatch, tmp_path):
    res = _load("kernel_resources")

    class Done:
        def __init__(self, out):
            self.stdout = out

    monkeypatch.setattr(res.subprocess, "run", lambda cmd, **kw: Done(RES if "-res-usage" in cmd else SASS))
    usage = res.resources("cuobjdump", tmp_path / "k.so")
    assert usage == [{"function": "_ZN7cutlass13device_kernelIN4wsp6KernelEEEvNT_6ParamsE", "regs": 168,
                      "stack": 304, "shared": 1024, "local": 0}]
    mix = res.sass_mix("cuobjdump", tmp_path / "k.so")
    assert mix["HGMMA"] == 2 and mix["UTMALDG"] == 1 and mix["LDGSTS"] == 1 and mix["LDG"] == 1
    assert mix["SYNCS"] == 1 and mix["LDSM"] == 1 and mix["LDS"] == 0


@pytest.mark.parametrize("only, expect", [("resnet18.layer4", 2), ("vgg16.conv5_1,resnet18.layer3", 4)])
def test_profile_shape_selection_by_label_prefix(only, expect):
    prof = _load("profile_dense")
    args = type("A", (), {"only": only, "tiles": "4,6", "dtype": "fp16"})()
    picked = prof.selected(args)
    assert len(picked) == expect and all(any(s.label.startswith(o) for o in only.split(",")) for s in picked)


def test_ncu_source_page_summary_counts_stalls_opcodes_and_wavefronts(tmp_path, capsys):
    """bench/ncu_summary.py on a two-kernel source page: the chosen kernel's stall shares, its top instruction,
    opcodes per unit, shared wavefronts; a missing kernel index or file is one line and exit status 1."""
    ncu_summary = _load("ncu_summary")
    head = ('"Address","Source","Warp Stall Sampling (All Samples)","Instructions Executed",'
            '"L1 Wavefronts Shared","L1 Wavefronts Shared Ideal","stall_long_sb","stall_wait","stall_wait (Not Issued)"\n')
    kernel = ('"Kernel Name","k",\n' + head +
              '"0x0","      LDS.64 R2, [R4+UR4]","30","100","400","200","20","10","5"\n'
              '"0x10","@P0   BRA 0x0","70","100","0","0","70","0","0"\n')
    f = tmp_path / "src.csv"
    f.write_text(kernel + kernel.replace('"30","100","400"', '"1","100","400"'))
    assert ncu_summary.main([str(f), "--units", "50", "--top", "1"]) == 0
    out = capsys.readouterr().out
    assert "stall samples: 100; by reason: long_sb 90%, wait 10%" in out
    assert "BRA 0x0" in out and "LDS.64" not in out.split("top 1")[1].split("warp instructions")[0]
    assert "per unit: 4.0; per unit by opcode: LDS 2.0, BRA 2.0" in out
    assert "400 (8.0 per unit), ideal 200" in out
    assert ncu_summary.main([str(f), "--units", "1", "--kernel", "2"]) == 1
    assert "holds 2 kernels" in capsys.readouterr().err
    assert ncu_summary.main([str(tmp_path / "none.csv"), "--units", "1"]) == 1


def test_fused_table_of_a_generation_with_the_sweeps_columns_against_each_runs_cudnn(capsys):
    """bench/fused_layer.py table --gen 4 over the committed H200 rows: each fused cell is the run's median with
    the same run's cuDNN over it; the sweep's columns (unfused dense, WSP-C) use the sweep's own cuDNN row."""
    import json
    from pathlib import Path

    from cutlass_wsp.sweep.results import ResultStore

    root = Path(__file__).resolve().parents[1]
    timed = root / "results/fused/gen4-time-h200.jsonl"
    sweep = root / "results/sweep-h200-b32.jsonl"
    fused_layer = _load("fused_layer")
    assert fused_layer.main(["table", str(timed), "--sweep", str(sweep), "--gen", "4"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| vgg16:conv4_2 "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    header = [c.strip() for c in out.splitlines()[0].strip("|").split("|")]
    got = dict(zip(header, cells))
    rows = [json.loads(line) for line in timed.open()]
    mine = {(r["impl"], r.get("ratio")): r["median_ms"] for r in rows if r["layer"] == "vgg16:conv4_2"}
    cudnn, dense, wspr = mine["cudnn", None], mine["p4 gen4 dense", None], mine["p4 gen4 wsp-r", 0.7]
    assert got["fused dense"] == f"{dense:.3f} ({cudnn / dense:.2f}×)"
    assert got["fused wsp-r 0.7"] == f"{wspr:.3f} ({cudnn / wspr:.2f}×)"
    assert "fused wsp-rb 0.5" not in header                                # generations 1-2 only
    ok = [r for r in ResultStore(str(sweep)).load() if r.get("status") == "ok" and r.get("layer_ms")
          and (r["c"], r["n"], r["H"], r["W"]) == (512, 512, 28, 28)]
    sweep_cudnn = min(r["layer_ms"] for r in ok if r.get("impl") == "cudnn")
    wspc = min(r["layer_ms"] for r in ok if r.get("pattern") in ("wsp-c", "wsp-c-fused") and r.get("ratio") == 0.7
               and r.get("p") == 4)
    assert got["unfused wsp-c 0.7 (sweep)"] == f"{wspc:.3f} ({sweep_cudnn / wspc:.2f}×)"


def test_fused_layer_variants_side_by_side_and_one_line_without_a_gpu(capsys):
    """`time --pipes one,halves --scheds one,persistent` yields the default generation-4 variants once and each
    candidate beside them under its own label (persistent: dense and FP only); an unknown choice is argparse's
    one-line error; without a GPU, `time` ends with one line naming the problem (no traceback)."""
    from cutlass_wsp.gpu.device import gpu_status

    fused_layer = _load("fused_layer")
    labels = {}
    for label, r, make in fused_layer.fused_variants(512, 512, 28, 28, [4], "fp16", 32, [0.7], [4], None, True,
                                                     pipes=("one", "halves"), scheds=("one", "persistent")):
        labels.setdefault(label.split(" ")[1], set()).add(label.split(" ")[2])
        d = make().desc.extra_dict()
        assert ("pipe" in d) == ("halves" in label) and ("sched" in d) == ("persistent" in label)
    assert labels["gen4"] == labels["gen4-halves"] == {"dense", "wsp-r", "fp", "wsp-cb", "wsp-rb"}
    # persistent: the dense map (dense, FP) and the full map (WSP-RB, WSP-R in wide blocks); not WSP-CB's chunk map
    assert labels["gen4-persistent"] == labels["gen4-persistent-halves"] == {"dense", "fp", "wsp-r", "wsp-rb"}
    with pytest.raises(SystemExit):
        fused_layer.main(["time", "--gen4", "--pipes", "thirds"])
    assert "unknown choice thirds: use one or more of one, halves" in capsys.readouterr().err
    # region multicast: every form of the one-shot kernel, beside the default and with the other variants
    rmc = {}
    for label, r, make in fused_layer.fused_variants(256, 256, 56, 56, [4], "fp16", 32, [0.7], [4], None, True,
                                                     pipes=("one", "halves"), scheds=("one", "persistent"),
                                                     rmcasts=(1, 2)):
        rmc.setdefault(label.split(" ")[1], set()).add(label.split(" ")[2])
        assert (make().desc.extra_dict().get("rmcast") == 2) == ("rmc2" in label)
    assert rmc["gen4-rmc2"] == rmc["gen4-halves-rmc2"] == rmc["gen4"]
    # with persistent CTAs: a cluster walking its items, the forms persistent CTAs serve
    assert rmc["gen4-persistent-rmc2"] == rmc["gen4-persistent"] == {"dense", "fp", "wsp-r", "wsp-rb"}
    # generation 5: dense and FP in filter blocks of 64, once per chunk width (it has no variants of generation 4's)
    g5 = [(label, r, make().desc) for label, r, make in fused_layer.fused_variants(
        256, 256, 56, 56, [4], "fp16", 32, [0.7], [4, 5], None, True, pipes=("one", "halves"))
        if label.startswith("p4 gen5")]
    assert [(label, r) for label, r, _ in g5] == [
        ("p4 gen5 dense", None), ("p4 gen5 fp", 0.7), ("p4 gen5 wsp-rb", 0.7),
        ("p4 gen5-k32 dense", None), ("p4 gen5-k32 fp", 0.7), ("p4 gen5-k32 wsp-rb", 0.7),
        ("p4 gen5-k32-vpair dense", None), ("p4 gen5-k32-vpair fp", 0.7), ("p4 gen5-k32-vpair wsp-rb", 0.7),
        ("p4 gen5-k32-vpair-halves dense", None), ("p4 gen5-k32-vpair-halves fp", 0.7),
        ("p4 gen5-k32-vpair-halves wsp-rb", 0.7),
        ("p4 gen5-k32-vpair-lean dense", None), ("p4 gen5-k32-vpair-lean fp", 0.7),   # epilogues: the dense map's
        ("p4 gen5-k32-vpair-early dense", None), ("p4 gen5-k32-vpair-early fp", 0.7),
        ("p4 gen5-k32-vpair-async dense", None), ("p4 gen5-k32-vpair-async fp", 0.7),
        ("p4 gen5-k32-vpair-tma dense", None), ("p4 gen5-k32-vpair-tma fp", 0.7),
        ("p4 gen5-k32-vpair-tma-s2 dense", None), ("p4 gen5-k32-vpair-tma-s2 fp", 0.7),
        ("p4 gen5-k32-vpair-persist dense", None), ("p4 gen5-k32-vpair-persist fp", 0.7),   # persistent pairs
        ("p4 gen5-k32-vpair-tma-persist dense", None), ("p4 gen5-k32-vpair-tma-persist fp", 0.7),
        ("p4 gen5-k32-vpair-tma-late dense", None), ("p4 gen5-k32-vpair-tma-late fp", 0.7),   # the late refill
        ("p4 gen5-k32-vpair-tma-persist-late dense", None), ("p4 gen5-k32-vpair-tma-persist-late fp", 0.7),
        ("p4 gen5-k32-vpair-tma-persist-late-table dense", None), ("p4 gen5-k32-vpair-tma-persist-late-table fp", 0.7),
        ("p4 gen5-k32-vpair-tma-light dense", None), ("p4 gen5-k32-vpair-tma-light fp", 0.7),   # the producer
        ("p4 gen5-k32-vpair-tma-persist-light dense", None), ("p4 gen5-k32-vpair-tma-persist-light fp", 0.7),
        ("p4 gen5-k32-vpair-tma-split dense", None), ("p4 gen5-k32-vpair-tma-split fp", 0.7),
        ("p4 gen5-k32-vpair-tma-persist-split dense", None), ("p4 gen5-k32-vpair-tma-persist-split fp", 0.7),
        ("p4 gen5-k32-vpair-tma-light-half dense", None), ("p4 gen5-k32-vpair-tma-light-half fp", 0.7),   # fp16 trades
        ("p4 gen5-k32-vpair-tma-persist-light-half dense", None), ("p4 gen5-k32-vpair-tma-persist-light-half fp", 0.7),
        ("p4 gen5-k32-vpair-wg-persist-light-half dense", None), ("p4 gen5-k32-vpair-wg-persist-light-half fp", 0.7),
    ] + [(f"p4 gen5-k32-vpair-{t} {pat}", 0.7)   # the full map's gathers: WSP-RB, and unbalanced WSP-R
         for t in ("gather", "push", "push-half", "push-light", "push-light-half", "push-light-half-relaxed",
                   "push-light-half-relaxed-fast", "push-light-half-wg-persist") for pat in ("wsp-rb", "wsp-r")] + [
        # the region in planes: the sweep's defaults with it (tenth session)
        ("p4 gen5-k32-vpair-tma-light-half-planes dense", None), ("p4 gen5-k32-vpair-tma-light-half-planes fp", 0.7),
        ("p4 gen5-k32-vpair-tma-persist-light-half-planes dense", None),
        ("p4 gen5-k32-vpair-tma-persist-light-half-planes fp", 0.7)] + [
        (f"p4 gen5-k32-vpair-push-light-half-relaxed-fast-planes {pat}", 0.7) for pat in ("wsp-rb", "wsp-r")]
    assert all(d.extra_dict()["gen"] == 5 for _, _, d in g5)
    assert [d.tile[2] for _, _, d in g5] == [16, 16, 16] + [32] * 65
    assert [d.extra_dict().get("tiles") for _, _, d in g5] == [None] * 6 + ["vpair"] * 62
    assert [d.extra_dict().get("region") for _, _, d in g5] == [None] * 62 + ["planes"] * 6
    assert [d.extra_dict().get("pipe") for _, _, d in g5] == [None] * 9 + ["halves"] * 3 + [None] * 56
    assert [d.extra_dict().get("epi") for _, _, d in g5] == ([None] * 12 + ["lean"] * 2 + ["early"] * 2 + ["async"] * 2
                                                             + ["tma"] * 4 + ["async"] * 2 + ["tma"] * 20 + ["wg"] * 2 + [None] * 14 + ["wg"] * 2
                                                             + ["tma"] * 4 + [None] * 2)
    assert [d.stages for _, _, d in g5][18:22] == [4, 4, 2, 2]   # the tma kernels' rings: the deepest that fits, and 2
    assert [d.extra_dict().get("sched") for _, _, d in g5] == ([None] * 22 + ["persistent"] * 4 + [None] * 2
                                                               + ["persistent"] * 4 + ([None] * 2 + ["persistent"] * 2) * 3
                                                               + ["persistent"] * 2 + [None] * 14 + ["persistent"] * 2
                                                               + [None] * 2 + ["persistent"] * 2 + [None] * 2)
    assert [d.extra_dict().get("refill") for _, _, d in g5] == [None] * 26 + ["late"] * 6 + [None] * 36
    assert [d.extra_dict().get("table") for _, _, d in g5] == [None] * 30 + ["early"] * 2 + [None] * 36
    assert [d.extra_dict().get("producer") for _, _, d in g5] == ([None] * 32 + ["light"] * 4 + ["split"] * 4
                                                                  + ["light"] * 6 + [None] * 6 + ["light"] * 16)
    assert [d.extra_dict().get("xchg") for _, _, d in g5] == ([None] * 40 + ["half"] * 6 + [None] * 4
                                                              + ["half"] * 2 + [None] * 2 + ["half"] * 14)
    assert [(d.extra_dict().get("gather"), d.extra_dict()["map"]) for _, _, d in g5][-22:] == [
        ("batched", "full")] * 2 + [("push", "full")] * 14 + [(None, "dense")] * 4 + [("push", "full")] * 2
    # unbalanced WSP-R 0.7 on the full map: the widest block whose (block, position)s keep at most 64 rows
    assert {(d.extra_dict()["fb"], d.tile[0]) for label, _, d in g5 if label.endswith(" wsp-r")} == {(64, 64)}
    assert [d.extra_dict().get("join") for _, _, d in g5] == [None] * 56 + ["relaxed"] * 4 + [None] * 6 + ["relaxed"] * 2
    assert [d.extra_dict().get("stores") for _, _, d in g5] == [None] * 58 + ["fast"] * 2 + [None] * 6 + ["fast"] * 2
    # --gen5-tags picks generation 5's variants (time and compile); an unknown one is refused in one line
    picked = [label for label, _, _ in fused_layer.fused_variants(
        256, 256, 56, 56, [4], "fp16", 32, [0.7], [5], None, True, gen5_tags=("gen5-k32-vpair-halves",))]
    assert picked == [label for label, _, _ in g5[9:12]]
    with pytest.raises(SystemExit):
        fused_layer.main(["time", "--gen5", "--gen5-tags", "gen5-k64"])
    assert "'gen5-k64': use one or more of gen5, gen5-k32, gen5-k32-vpair" in capsys.readouterr().err
    # dense and FP on the dense map in blocks of 64; WSP-RB 0.7 on the full map: 64 packed rows for blocks of 192
    assert [(d.extra_dict()["map"], d.extra_dict()["fb"], d.tile[0]) for _, _, d in g5[:3]] == [
        ("dense", 64, 64), ("dense", 64, 64), ("full", 192, 64)]
    with pytest.raises(SystemExit):
        fused_layer.main(["time", "--gen4", "--rmcasts", "1,3"])
    assert "'1,3': use one or more of 1, 2, 4" in capsys.readouterr().err
    if gpu_status()[0]:
        return
    for argv in (["time", "--gen4", "--gens-only", "--ps", "4", "--nets", "resnet18", "--ratios", "0.7"],
                 ["profile", "--gen5", "--kc", "32", "--vpair", "--sched", "persistent", "--epi5", "wg",
                  "--producer", "light", "--xchg", "half", "--item-stamps", "--layers", "vgg16:conv4_2"],
                 ["verify"]):
        assert fused_layer.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("fused_layer: no CUDA GPU") and "Traceback" not in err[0], argv


def test_fused_table_best_takes_each_cells_fastest_variant(tmp_path, capsys):
    """`table --gen 4 --best`: a column's cell is the fastest of "p4 gen4 ...", "p4 gen4-halves ..." and the
    other variants' rows of that layer, each against the run's cuDNN, and the count of cells each variant won is
    printed; without --best the default variant's rows alone fill the columns."""
    import json

    rows = [{"layer": "vgg16:conv4_2", "impl": "cudnn", "median_ms": 0.160},
            {"layer": "vgg16:conv4_2", "impl": "p4 gen4 dense", "ratio": None, "median_ms": 0.360, "floor_ms": 0.07},
            {"layer": "vgg16:conv4_2", "impl": "p4 gen4-persistent dense", "ratio": None, "median_ms": 0.320,
             "floor_ms": 0.07},
            {"layer": "vgg16:conv4_2", "impl": "p4 gen4 fp", "ratio": 0.7, "median_ms": 0.125},
            {"layer": "vgg16:conv4_2", "impl": "p4 gen4-halves fp", "ratio": 0.7, "median_ms": 0.130},
            {"layer": "vgg16:conv4_2", "impl": "p4 gen5 fp", "ratio": 0.5, "median_ms": 0.200},   # competes too
            {"layer": "vgg16:conv4_2", "impl": "p4 gen4 fp", "ratio": 0.5, "median_ms": 0.210}]
    f = tmp_path / "t.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    fused_layer = _load("fused_layer")
    assert fused_layer.main(["table", str(f), "--gen", "4", "--best"]) == 0
    out = capsys.readouterr().out
    assert "| 0.320 (0.50×) |" in out and "| 0.125 (1.28×) |" in out and "| 0.200 (0.80×) |" in out
    assert "fastest variant per fused cell: gen4 1, gen4-persistent 1, gen5 1" in out
    assert fused_layer.main(["table", str(f), "--gen", "4"]) == 0
    assert "| 0.360 (0.44×) |" in capsys.readouterr().out
    assert fused_layer.main(["table", str(tmp_path / "none.jsonl"), "--gen", "4"]) == 2   # one line, no traceback
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fused_layer: cannot read the timed rows")


def test_fused_bound_sets_the_mainloop_alone_beside_cudnn_and_the_kernel(tmp_path, capsys):
    """`bound ROWS --chunk-us T`: generation 5's CTAs (2 per tile rectangle of pick_rectangle with vertical pairs and
    filter block of 64) in waves of one per SM, times the layer's 32-channel chunks and T, against the same rows'
    cuDNN, with the kernel's time as a multiple of it; a missing file or a row set without cuDNN is one line."""
    import json

    fused_layer = _load("fused_layer")
    # conv1_2 (64 -> 64 at 224, batch 32): rectangles of 2 images x 2 x 16 tiles, 16 x 56 x 7 of them, one block
    assert fused_layer.gen5_grid(64, 64, 224, 224, 32) == (2 * 16 * 56 * 7, 2)
    assert fused_layer.gen5_grid(512, 512, 28, 28, 32) == (1568, 16)   # conv4_2: 8 blocks of 64 filters
    # 9 x 11 at batch 3: 5 x 6 tiles in rectangles of 4 images x 2 x 8 tiles (3 of them), 65 filters in 2 blocks,
    # 100 channels in 7 chunks of 16
    assert fused_layer.gen5_grid(100, 65, 9, 11, 3, kc=16) == (2 * 3 * 2, 7)
    rows = [{"layer": "vgg16:conv4_2", "impl": "cudnn", "median_ms": 0.160, "batch": 32},
            {"layer": "vgg16:conv4_2", "impl": "p4 gen5-k32-vpair-async dense", "ratio": None, "median_ms": 0.240},
            {"layer": "vgg16:conv4_2", "impl": "p4 gen5-k32-vpair-async fp", "ratio": 0.7, "median_ms": 0.1}]
    f = tmp_path / "t.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert fused_layer.main(["bound", str(f), "--chunk-us", "1.0"]) == 0
    out = capsys.readouterr().out
    # 1568 CTAs: 12 waves of 132 SMs, 16 chunks of 1 us each: 0.192 ms; the kernel 1.25x that, cuDNN 0.83x
    assert "| vgg16:conv4_2 | 1568 | 16 | 0.1600 | 0.2400 | 0.1920 | 1.25 | 0.83× |" in out
    assert "geomean 0.83×, min 0.83×" in out
    assert fused_layer.main(["bound", str(tmp_path / "none.jsonl"), "--chunk-us", "1"]) == 2
    f.write_text(json.dumps(rows[1]) + "\n")
    assert fused_layer.main(["bound", str(f), "--chunk-us", "1"]) == 2
    assert fused_layer.main(["bound", str(f), "--chunk-us", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(e.startswith("fused_layer: ") for e in err)


def test_the_fused_profile_builds_generation_5_as_it_is_timed(capsys):
    """`profile --gen5 [--kc 32]` profiles generation 5 in its timed configuration (dense, filter blocks of 64, 16 or
    32 channels a chunk); another chunk width is refused in one line."""
    fused_layer = _load("fused_layer")
    from cutlass_wsp.pruning import prune
    from cutlass_wsp.weights import he_winograd_weights

    for kc in (16, 32):
        case = fused_layer.Case(prune(he_winograd_weights((128, 64), 4, seed=1), "dense", 0.0), 4, "fp16", 32, 28, 28,
                                fb=64, gen=5, kc=kc)
        assert case.desc.tile == (64, 64, kc) and case.desc.extra_dict()["gen"] == 5
    with pytest.raises(SystemExit):
        fused_layer.main(["profile", "--gen5", "--kc", "48"])
    assert "argument --kc: invalid choice: 48" in capsys.readouterr().err


def test_stamp_phases_splits_each_ctas_time_and_finds_the_gaps_between_ctas():
    """profile --stamps: per CTA 10 clock stamps, the global timer at entry and end, the SM. Two SMs, two CTAs each,
    at 2 GHz: the phases' medians in cycles and µs, the chunk's cycles, and the gap between one CTA's end and the
    next one's entry on the same SM; CTAs that recorded nothing (beyond the buffer) are left out."""
    import numpy as np

    fl = _load("fused_layer")
    STAMP_NAMES, stamp_phases = fl.STAMP_NAMES, fl.stamp_phases

    rows = []
    for sm in (0, 1):
        for i in range(2):
            t0 = 10_000 + i * 6_000 + sm * 100          # ns: 5 us of CTA, then a 1 us gap
            c0 = 2 * t0                                 # the SM clock at 2 GHz
            steps = [0, 500, 700, 1000, 3000, 7000, 8000, 8500, 9000, 10_000]   # barriers 500, ..., mainloop 4000
            rows.append([c0 + s for s in steps] + [t0, t0 + 5_000, sm] + [0] * 3)
    rows.append([0] * 16)                               # a CTA past the buffer
    out = stamp_phases(np.array(rows), 10, chunks=8)
    assert out["ctas"] == 4 and abs(out["clock_ghz"] - 2.0) < 1e-9
    assert list(out["phases"]) == list(STAMP_NAMES)
    assert [out["phases"][n]["median_cycles"] for n in STAMP_NAMES] == [500, 200, 300, 2000, 4000, 1000, 500, 500,
                                                                        1000]
    assert out["phases"]["mainloop"]["median_us"] == pytest.approx(2.0)
    assert out["chunk_median_cycles"] == 500 and out["cta_median_us"] == pytest.approx(5.0)
    assert out["gap_median_us"] == pytest.approx(1.0) and out["ctas_per_sm"] == 2
    assert out["sm_covered"] == pytest.approx(10 / 11)
    assert out["span_us"] == pytest.approx((10_000 + 6_000 + 100 + 5_000 - 10_000) / 1e3)
    with pytest.raises(ValueError, match="no CTA recorded"):
        stamp_phases(np.zeros((3, 16)), 10, chunks=8)



def test_profile_stamps_outside_generation_5_is_one_line(capsys):
    """--stamps and --chunk-stamps are generation 5's profiling builds: asked for another kernel (or, chunk stamps,
    another epilogue), one line naming the fix, no traceback."""
    fl = _load("fused_layer")
    assert fl.main(["profile", "--stamps", "--gen4", "--layers", "vgg16:conv4_2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    msg = ["fused_layer: --stamps (dense, or WSP-RB in the full map) and --chunk-stamps (dense) are generation 5's "
           "profiling builds (add --gen5, with --pattern dense or wsp-rb)"]
    assert err == msg
    for bad in (["--stamps", "--gen5", "--pattern", "wsp-r"], ["--chunk-stamps", "--gen5", "--pattern", "wsp-rb"]):
        assert fl.main(["profile", *bad, "--layers", "vgg16:conv4_2"]) == 2
        assert capsys.readouterr().err.strip().splitlines() == msg
    assert fl.main(["profile", "--chunk-stamps", "--gen5", "--kc", "32", "--layers", "vgg16:conv4_2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["fused_layer: --chunk-stamps is a build of generation 5 at 32 channels a chunk with the async or "
                   "tma epilogue (add --kc 32 --epi5 tma (or async), without --stamps or --pipe)"]
    # --ablate only in a stamps build (its output is wrong by design), and only of known parts
    assert fl.main(["profile", "--gen5", "--kc", "32", "--vpair", "--epi5", "tma", "--ablate", "mma+weights"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "fused_layer: --ablate is a chunk- or item-stamps build (its output is wrong by design: only its stamps are "
        "read) (add --chunk-stamps or --item-stamps)"]
    with pytest.raises(SystemExit):
        fl.main(["profile", "--gen5", "--kc", "32", "--chunk-stamps", "--epi5", "tma", "--ablate", "transform"])
    assert "transform only with mma" in capsys.readouterr().err


def test_chunk_stamps_summary_splits_a_chunk_and_measures_the_warps_drift():
    """bench/chunk_stamps.py on synthetic stamps with known steps: 2 CTAs x 8 warps, items of 4 chunks, warp w of a
    warpgroup ready 10 w cycles late (drift 30, warp 3 last), warpgroup 1 half a period after warpgroup 0, an item
    end 800 cycles after its products; slots left 0 (not recorded) are not counted."""
    import numpy as np

    cs = _load("chunk_stamps")
    ctas, warps, items, chunks, period = 2, 8, 3, 4, 1000
    nseq = items * chunks + 4   # the buffer holds more chunks than were run
    raw = np.zeros((ctas, warps, nseq, len(cs.SLOTS)), np.int64)
    gap = 2000   # each item's end: exchange and stores before the next item's head
    for g in range(items * chunks):
        item = g // chunks
        for w in range(warps):
            head = 10_000 + g * period + item * gap + (period // 2) * (w // 4)
            raw[:, w, g, :5] = [head, head + 40, head + 100, head + 350 + 10 * (w % 4), head + 380 + 10 * (w % 4)]
            if g % chunks == chunks - 1:
                raw[:, w, g, 5:] = [head + 900, head + 1500, head + 1700]
    # the item's end comes after the last chunk's products: the next head is `gap` after this item's last period
    s = cs.summarize(raw, chunks)
    assert s["ctas"] == 2 and s["chunks_recorded"] == ctas * items * chunks
    assert s["inner"]["period"] == period and s["inner"]["wait_region"] == 40
    assert s["inner"]["wait_products"] == 60 and s["inner"]["issue"] == 30
    assert s["inner"]["transform"] == 265   # 250 + the median warp's 15
    assert s["drift"] == 30 and s["issue_spread"] == 30 and s["last_ready_warp"] == [3, 3]
    assert s["wg_offset_cycles"] == 500 and s["wg_offset_share"] == 0.5
    assert s["period_by_rank_wg"] == [[period, period], [period, period]]
    assert s["wg1_lead_at_item_end_by_rank"] == [500, 500]
    slow = raw.copy()   # rank 1's warpgroup 1 falls 100 cycles behind per chunk within each item
    for g in range(items * chunks):
        slow[1, 4:, g, :5] += 100 * (g % chunks)
        if g % chunks == chunks - 1:
            slow[1, 4:, g, 5:] += 100 * (g % chunks)
    s2 = cs.summarize(slow, chunks)
    assert s2["period_by_rank_wg"] == [[period, period], [period, period + 100]]
    assert s2["wg1_lead_at_item_end_by_rank"] == [500, 500 + 100 * (chunks - 1)]
    assert s["item"]["products_to_exchange"] == 600 and s["item"]["exchange_to_end"] == 200
    assert s["item"]["end_to_next_head"] == period + gap - 1700
    assert any("warps of a warpgroup ready apart 30" in line for line in cs.report(s))
    with pytest.raises(ValueError, match="no warp"):
        cs.summarize(np.zeros_like(raw), chunks)
    with pytest.raises(ValueError, match="expected"):
        cs.summarize(raw[..., :5], chunks)


def test_item_stamps_summary_splits_an_item_between_the_mainloop_and_the_epilogue_warpgroup():
    """bench/item_stamps.py on synthetic stamps with known steps: 2 CTAs, 5 items each of 8 chunks (1,000 cycles a
    chunk), the mainloop waiting 700 cycles for the epilogue's buffer, a 300-cycle handoff and a 500-cycle restart;
    the epilogue warpgroup busy 9,000 cycles an item. Without the epilogue warpgroup (tma) only the start, products
    done and end are recorded. Items past those run (zeros) are not counted."""
    import numpy as np

    st = _load("item_stamps")
    ctas, items, chunks = 2, 5, 8
    raw = np.zeros((ctas, items + 3, len(st.SLOTS)), np.int64)
    period = chunks * 1000 + 700 + 300 + 500
    for i in range(items):
        t = 50_000 + i * period
        raw[:, i, :5] = [t, t + 8000, t + 8700, t + 9000, t + 8040]
        e = t + 9000   # the epilogue: its data at the handoff, then pfree, the partner's part, the writes
        raw[:, i, 5:] = [e - 2500, e + 20, e + 120, e + 4120, e + 9020]
    s = st.summarize(raw, chunks)
    assert s["ctas"] == 2 and s["items_recorded"] == ctas * items and s["epilogue_warpgroup"]
    assert s["period"] == period and s["mainloop"] == 8000 and s["chunk"] == 1000
    assert s["free_wait"] == 700 and s["handoff"] == 300 and s["restart"] == 500 and s["wg1_lag"] == 40
    assert not s["full_map"] and s["epi_idle"] == 2520 and s["epi_pfree"] == 100 and s["epi_partner"] == 4000
    assert s["epi_write"] == 4900 and s["epi_busy"] == 9000 and s["epi_share"] == 9000 / period
    assert s["cta_span"] == (items - 1) * period + 9000
    full = raw.copy()   # the full map: SINV staged (epi_mid) before the data wait, the gather done at epi_part
    full[:, :items, 7] = full[:, :items, 5] + 400
    s2 = st.summarize(full, chunks)
    assert s2["full_map"] and s2["epi_stage"] == 400 and s2["epi_idle"] == 2520 - 400 and s2["epi_gather"] == 4100
    tma = raw.copy()   # no epilogue warpgroup: the end is the item's (its epilogue between the items)
    tma[..., 2] = 0
    tma[..., 5:] = 0
    s3 = st.summarize(tma, chunks)
    assert not s3["epilogue_warpgroup"] and s3["epilogue"] == 1000 and "epi_busy" not in s3 and "free_wait" not in s3
    assert "epilogue busy / item period" in st.report(s) and "epilogue busy" not in st.report(s3)
    with pytest.raises(ValueError, match="no CTA"):
        st.summarize(np.zeros_like(raw), chunks)
    with pytest.raises(ValueError, match="expected"):
        st.summarize(raw[..., :5], chunks)


def test_fused_carry_names_the_chunk_stamps_builds_and_refuses_others_in_one_line():
    """scripts/fused_carry.py --chunk-stamps: EPI[-SCHED][-light][-planes] per build (the profiling builds `profile
    --chunk-stamps` asks for, with --producer light --xchg half, --region planes); an unknown epilogue, schedule or
    option (or one out of order) is refused with the choices."""
    import argparse
    import importlib.util
    from pathlib import Path

    import sys

    path = Path(__file__).resolve().parents[1] / "scripts" / "fused_carry.py"
    spec = importlib.util.spec_from_file_location("fused_carry", path)
    mod = importlib.util.module_from_spec(spec)
    saved = list(sys.path)
    try:
        spec.loader.exec_module(mod)   # (it puts the repo and bench/ first on sys.path: restored after)
    finally:
        sys.path[:] = saved
    assert mod._chunk_stamp_builds("tma, tma-persistent,async,tma-light-planes,tma-persistent-light") == (
        ("tma", None, ()), ("tma", "persistent", ()), ("async", None, ()), ("tma", None, ("light", "planes")),
        ("tma", "persistent", ("light",)))
    for bad in ("lean", "tma-oneshot", "tma-planes-persistent"):
        with pytest.raises(argparse.ArgumentTypeError, match=f"unknown chunk-stamps build '{bad}'.*tma.*persistent"):
            mod._chunk_stamp_builds(bad)
    # --item-stamps: the epilogue, the full map, the 2-stage ring (profile --item-stamps)
    assert mod._item_stamp_builds("wg, wg-full,tma-s2,tma-mma+weights") == ("wg", "wg-full", "tma-s2", "tma-mma+weights")
    assert mod._chunk_stamp_builds("tma-persistent-light-weights+loads") == (
        ("tma", "persistent", ("light", "weights+loads")),)
    for bad in ("lean", "tma-s4", "", "tma-transform", "wg-mma"):
        with pytest.raises(argparse.ArgumentTypeError, match="unknown item-stamps build.*wg, wg-full, tma"):
            mod._item_stamp_builds(bad)

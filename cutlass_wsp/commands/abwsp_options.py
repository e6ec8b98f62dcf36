"""Options `abwsp` and `network` share: which rows (network, ratio, batch, tile, dtype), the ABWSP knob,
and where the accuracy proxies' weights, calibration inputs and measured drops come from."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from cutlass_wsp.abwsp import PROXIES


def add_selection_arguments(parser: argparse.ArgumentParser, *, several_batches: bool) -> None:
    parser.add_argument("results", nargs="+", metavar="RESULTS.jsonl",
                        help="result files of one GPU (a point in several files: the later file wins)")
    parser.add_argument("--net", default=None, metavar="SPEC",
                        help="vgg16, resnet18, resnet34, a layer file (.csv/.json/.yaml) or a selection "
                             "(vgg16:conv4_2,conv5_1); default: the one network the results hold. Rows are "
                             "found by layer shape, so resnet34 reads a resnet18 sweep")
    parser.add_argument("--ratio", default="0.7",
                        help="pruning ratio of every prunable layer, 0.7 or 70%% (default 0.7)")
    if several_batches:
        parser.add_argument("--batch", default=None, metavar="B,...",
                            help="batch sizes, each from its own rows (default: every batch in the results)")
    else:
        parser.add_argument("--batch", default=None, metavar="B",
                            help="batch size whose rows give the speedups (default: the one in the results)")
    parser.add_argument("--tile", default=None, metavar="P",
                        help="Winograd input tile size p (default: the one in the results)")
    parser.add_argument("--dtype", default=None, help="fp16, bf16, tf32, fp32 (default: the one in the results)")


def add_choice_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("the ABWSP choice (docs/abwsp.md)")
    g.add_argument("--accuracy-weight", default="0.5", metavar="A",
                   help="0 = the fastest candidate, 1 = the most accurate, between: score = (1-A)·ln(speedup) "
                        "- A·loss (default 0.5; 0.3 or 30%%)")
    g.add_argument("--proxy", default="output",
                   help="accuracy proxy, the loss: output (relative output error on calibration inputs) or "
                        "energy (1 - share of Winograd weight energy kept) (default output); --accuracy-csv "
                        "overrides it")
    g.add_argument("--weights", default=None, metavar="FILE",
                   help="real conv weights: .npz with one array per layer name ([n, c, 3, 3] or [p², n, c]), "
                        ".npy for a single layer, or a torch state_dict .pt/.pth (torchvision names work); "
                        "default He-initialised")
    g.add_argument("--calibration", default=None, metavar="FILE",
                   help="calibration inputs: .npz with each layer's NCHW input under its name (or .npy for a "
                        "single layer); layers it lacks get random ones (default: random, rectified normal)")
    g.add_argument("--calibration-images", default="2", metavar="N",
                   help="images of the calibration batch (default 2)")
    g.add_argument("--calibration-size", default="28", metavar="S",
                   help="calibration maps are cropped to at most S×S (default 28)")
    g.add_argument("--accuracy-csv", default=None, metavar="FILE",
                   help="measured top-1 drops (columns layer,pattern,ratio,balance,drop in points): they "
                        "replace the proxy for the layers they cover")


# ------------------------------------------------------------------------------------------ parsing
def positive_int(text: str, option: str) -> int:
    from cutlass_wsp.errors import InputError

    try:
        v = int(str(text).strip())
    except ValueError:
        v = 0
    if v < 1:
        raise InputError(f"{option} {text!r} is not a whole number >= 1", f"give {option} 1 or more")
    return v


def pick(requested: str | None, measured: Sequence, option: str, what: str, source: str, kind=str):
    """The value of a coordinate: `requested` (must be measured), or the only measured one."""
    from cutlass_wsp.errors import InputError

    have = ", ".join(str(v) for v in measured) or "none"
    if requested is not None:
        try:
            value = kind(str(requested).strip())
        except ValueError:
            raise InputError(f"{option} {requested!r} is not a {what}", f"pick one of: {have}") from None
        if value not in measured:
            raise InputError(f"{source} has no verified rows at {option} {value}", f"pick one of: {have}")
        return value
    if len(measured) == 1:
        return measured[0]
    if not measured:
        raise InputError(f"{source} has no verified (ok) rows", "measure with cutlass-wsp sweep first")
    raise InputError(f"{source} holds several {what}s ({have})", f"pick one with {option}")


def pick_net(requested: str | None, rows: Sequence[dict], source: str) -> str:
    from cutlass_wsp.errors import InputError

    if requested:
        return requested.strip()
    from cutlass_wsp.layers import NETWORKS

    nets = sorted({str(r.get("net")) for r in rows if r.get("net")})
    if len(nets) == 1:
        if nets[0].lower().replace("-", "").replace("_", "") not in NETWORKS:
            raise InputError(f"{source}'s rows name network {nets[0]!r}, not a built-in network",
                             "pass the layer file they were measured from with --net FILE")
        return nets[0]
    raise InputError(f"{source} holds {len(nets)} networks ({', '.join(nets) or 'none'})",
                     "pick one with --net (vgg16, resnet18, resnet34 or a layer file)")


def source_name(paths: Sequence[str]) -> str:
    return str(paths[0]) if len(paths) == 1 else f"{paths[0]} (+{len(paths) - 1} more)"


def proxy_source(args: argparse.Namespace, table, p: int):
    """The ProxySource the options describe (files checked against the layers that need them)."""
    from cutlass_wsp.abwsp_plan import ProxySource
    from cutlass_wsp.accuracy_drops import AccuracyDrops
    from cutlass_wsp.errors import InputError
    from cutlass_wsp.layer_inputs import ActivationFile, WeightFile

    prunable = [x for x in table if x.prunable and x.is_winograd]
    weights = activations = drops = None
    if args.weights:
        weights = WeightFile(args.weights)
        weights.file.require_single_layer(prunable)
    if args.calibration:
        activations = ActivationFile(args.calibration)
        activations.file.require_single_layer(prunable)
    if args.accuracy_csv:
        drops = AccuracyDrops(args.accuracy_csv, list(table))
    proxy = str(args.proxy).strip().lower()
    if proxy not in PROXIES:
        raise InputError(f"--proxy {args.proxy!r}", f"use one of {', '.join(PROXIES)}")
    return ProxySource(p, weights=weights, activations=activations, drops=drops,
                       images=positive_int(args.calibration_images, "--calibration-images"),
                       size=positive_int(args.calibration_size, "--calibration-size"))


def out_for_batch(paths: Sequence[str], batch: int) -> str:
    """The results file a sweep of `batch` should append to: the first one holding rows of that batch
    (a file per batch is how the README's sweeps are kept), else the first file. Read quietly: a cut-off
    last line was reported once, when the files were loaded."""
    import warnings

    from cutlass_wsp.sweep.results import ResultStore, ResultsWarning

    for path in paths:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResultsWarning)
                rows = ResultStore(path).load()
        except Exception:       # unreadable files were reported when they were loaded
            continue
        if any(r.get("batch") == batch for r in rows):
            return str(path)
    return str(paths[0])


def default_out(paths: Sequence[str], name: str) -> Path:
    """A file beside the first results file."""
    return Path(paths[0]).parent / name


def load_selection(args, formats: tuple[str, ...]):
    """What `abwsp` and `network` start from: (format, rows, source name, Measured index, network spec).
    An unknown --format is one line."""
    from cutlass_wsp.errors import InputError
    from cutlass_wsp.sweep.measured import Measured
    from cutlass_wsp.sweep.results import load_many

    fmt = str(args.format).strip().lower()
    if fmt not in formats:
        raise InputError(f"--format {args.format!r}", f"use one of {', '.join(formats)}")
    rows = load_many(args.results)
    source = source_name(args.results)
    return fmt, rows, source, Measured(rows), pick_net(args.net, rows, source)

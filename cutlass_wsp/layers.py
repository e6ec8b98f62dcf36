"""Which conv layers to benchmark: built-in network tables, user tables, and the GEMM batch of a layer.

Only 3×3 stride-1 convolutions are Winograd layers, so the built-in tables list exactly those
(ResNet's 7×7 stem and its stride-2 3×3 convs are left out). A layer's Winograd GEMM batch is
p² GEMMs of n × T × c with T = batch · ceil(H/m) · ceil(W/m) (see problem.py for the layouts).
"""

from __future__ import annotations

import csv
import json
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cutlass_wsp.errors import InputError, Unsupported
from cutlass_wsp.problem import BatchProblem


@dataclass(frozen=True)
class Layer:
    """One conv layer: c input channels → n filters on an H × W map (output size = input size)."""

    net: str
    name: str      # unique within its table; built-in names are '<net>.<layer>', e.g. 'vgg16.conv1_2'
    c: int
    n: int
    H: int
    W: int
    kernel: int = 3
    stride: int = 1
    prunable: bool = True

    def __post_init__(self):
        for field in ("c", "n", "H", "W", "kernel", "stride"):
            v = getattr(self, field)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"layer {self.name!r}: {field}={v!r}", "sizes must be integers >= 1")

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(c, n, H, W): what the GEMM batch depends on; layers with equal shapes time the same."""
        return (self.c, self.n, self.H, self.W)

    @property
    def is_winograd(self) -> bool:
        return self.kernel == 3 and self.stride == 1


# ---------------------------------------------------------------------------------------------
# Built-in tables (224 × 224 ImageNet inputs)
# ---------------------------------------------------------------------------------------------

def _vgg16() -> tuple[Layer, ...]:
    # (name, c, n, H): conv1_1 sees the 3-channel image and is never pruned (seed 001).
    spec = [("conv1_1", 3, 64, 224), ("conv1_2", 64, 64, 224),
            ("conv2_1", 64, 128, 112), ("conv2_2", 128, 128, 112),
            ("conv3_1", 128, 256, 56), ("conv3_2", 256, 256, 56), ("conv3_3", 256, 256, 56),
            ("conv4_1", 256, 512, 28), ("conv4_2", 512, 512, 28), ("conv4_3", 512, 512, 28),
            ("conv5_1", 512, 512, 14), ("conv5_2", 512, 512, 14), ("conv5_3", 512, 512, 14)]
    return tuple(Layer("vgg16", f"vgg16.{name}", c, n, h, h, prunable=(name != "conv1_1"))
                 for name, c, n, h in spec)


def _resnet(net: str, blocks: tuple[int, int, int, int]) -> tuple[Layer, ...]:
    """3×3 stride-1 convs of a basic-block ResNet, torchvision names (layer<s>.<b>.conv<k>).
    Stages 2-4 start with a stride-2 conv1 (He et al. 2016, Table 1): not a Winograd layer."""
    out = []
    for stage, (nblocks, width, size) in enumerate(zip(blocks, (64, 128, 256, 512), (56, 28, 14, 7)), 1):
        for b in range(nblocks):
            for k in (1, 2):
                if stage > 1 and b == 0 and k == 1:
                    continue  # stride-2 downsampling conv
                out.append(Layer(net, f"{net}.layer{stage}.{b}.conv{k}", width, width, size, size))
    return tuple(out)


NETWORKS: dict[str, tuple[Layer, ...]] = {
    "vgg16": _vgg16(),
    "resnet18": _resnet("resnet18", (2, 2, 2, 2)),
    "resnet34": _resnet("resnet34", (3, 4, 6, 3)),
}


def network(name: str) -> tuple[Layer, ...]:
    """The Winograd layers of a built-in network, in forward order."""
    key = name.strip().lower().replace("-", "").replace("_", "")
    if key not in NETWORKS:
        raise InputError(f"unknown network {name!r}",
                         f"use one of {', '.join(NETWORKS)} or a layer file (.json, .yaml, .csv)")
    return NETWORKS[key]


# ---------------------------------------------------------------------------------------------
# User tables
# ---------------------------------------------------------------------------------------------

REQUIRED_COLUMNS = ("name", "c", "n", "H", "W")
OPTIONAL_COLUMNS = ("kernel", "stride", "prunable", "net")
_ACCEPTED = ", ".join(REQUIRED_COLUMNS) + " (optional: " + ", ".join(OPTIONAL_COLUMNS) + ")"
_TRUE = {"true", "yes", "1", "y", "t"}
_FALSE = {"false", "no", "0", "n", "f"}


def _int_field(value, where: str, column: str, minimum: int = 1) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError  # True is an int to Python, not a size
        v = operator.index(value) if not isinstance(value, str) else int(value.strip())
    except (TypeError, ValueError):
        raise InputError(f"{where}: column {column!r} is {value!r}, not an integer",
                         f"write a whole number >= {minimum}") from None
    if v < minimum:
        raise InputError(f"{where}: column {column!r} is {v}", f"it must be >= {minimum}")
    return v


def _bool_field(value, where: str) -> bool:
    if isinstance(value, bool):
        return value
    s = str(value).strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise InputError(f"{where}: column 'prunable' is {value!r}", "write true or false")


def _layer_from_row(row: Mapping, where: str, net: str) -> Layer:
    if not isinstance(row, Mapping):
        raise InputError(f"{where} is a {type(row).__name__}, not a mapping",
                         f"give each layer as an object with {_ACCEPTED}")
    unknown = [k for k in row if k not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if unknown:
        raise InputError(f"{where}: unknown column {unknown[0]!r}", f"accepted columns: {_ACCEPTED}")
    missing = [k for k in REQUIRED_COLUMNS if row.get(k) in (None, "")]
    if missing:
        raise InputError(f"{where}: column {missing[0]!r} is missing or empty",
                         f"every layer needs {', '.join(REQUIRED_COLUMNS)}")
    name = str(row["name"]).strip()
    sizes = {k: _int_field(row[k], where, k) for k in ("c", "n", "H", "W")}
    kernel = 3 if row.get("kernel") in (None, "") else _int_field(row["kernel"], where, "kernel")
    stride = 1 if row.get("stride") in (None, "") else _int_field(row["stride"], where, "stride")
    if (kernel, stride) != (3, 1):
        raise InputError(f"{where} ({name}): a {kernel}×{kernel} stride-{stride} conv is not a Winograd layer",
                         "only 3×3 stride-1 convs are accepted; remove this row")
    prunable = True if row.get("prunable") in (None, "") else _bool_field(row["prunable"], where)
    row_net = str(row.get("net") or net).strip() or net
    return Layer(row_net, name, sizes["c"], sizes["n"], sizes["H"], sizes["W"], kernel, stride, prunable)


def _read_rows(path: Path) -> tuple[list, str]:
    """(rows, table net name) from a JSON/YAML list or {'net':..., 'layers': [...]}, or a CSV file."""
    suffix = path.suffix.lower()
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")      # a byte order mark (spreadsheet exports) is not a column
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not a text file (byte {e.start} is not UTF-8)",
                         "save the layer table as UTF-8 text: .csv, .json or .yaml") from None
    if suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        if reader.fieldnames is None:
            raise InputError(f"{path}: the CSV file is empty", f"write a header row: {_ACCEPTED}")
        fields = [f.strip() for f in reader.fieldnames]
        rows = []
        for r in reader:
            if None in r:  # more cells than header columns
                raise InputError(f"{path}: row {reader.line_num - 1} has more cells than the header",
                                 f"write one cell per header column: {', '.join(fields)}")
            rows.append({k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in r.items()})
        return rows, path.stem
    try:
        if suffix == ".json":
            data = json.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml
            data = yaml.safe_load(text)
        else:
            raise InputError(f"{path}: unknown layer-file type {suffix or '(none)'!r}",
                             "use .json, .yaml/.yml or .csv")
    except (json.JSONDecodeError, ValueError) as e:
        raise InputError(f"{path}: not valid {suffix[1:].upper()} ({str(e).splitlines()[0]})",
                         "fix the syntax") from None
    except Exception as e:  # yaml.YAMLError without importing yaml at module top
        if type(e).__module__.startswith("yaml"):
            raise InputError(f"{path}: not valid YAML ({str(e).splitlines()[0]})", "fix the syntax") from None
        raise
    net = path.stem
    if isinstance(data, Mapping):
        net = str(data.get("net") or net)
        data = data.get("layers")
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a list of layers or {{'net': ..., 'layers': [...]}}",
                         f"write one object per layer with {_ACCEPTED}")
    return data, net


def load_layer_table(path: str | Path) -> tuple[Layer, ...]:
    """Layers from a .json, .yaml/.yml or .csv file with columns name, c, n, H, W
    (optional kernel, stride, prunable, net). Rows that are not 3×3 stride-1 are rejected."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"layer file {str(path)!r} not found", "pass an existing .json, .yaml or .csv file")
    rows, net = _read_rows(path)
    if not rows:
        raise InputError(f"{path}: the table has no layers", "add at least one row")
    layers = tuple(_layer_from_row(r, f"{path}: row {i}", net) for i, r in enumerate(rows, 1))
    seen: set[str] = set()
    for i, layer in enumerate(layers, 1):
        if layer.name in seen:
            raise InputError(f"{path}: row {i}: layer name {layer.name!r} appears twice", "give each layer its own name")
        seen.add(layer.name)
    return layers


# ---------------------------------------------------------------------------------------------
# Selection
# ---------------------------------------------------------------------------------------------

def _table(source: str) -> tuple[Layer, ...]:
    path = Path(source)
    if path.suffix.lower() in (".json", ".yaml", ".yml", ".csv") or path.is_file():
        return load_layer_table(path)
    return network(source)


def _select(table: tuple[Layer, ...], selector: str, source: str) -> Layer:
    s = selector.strip()
    for layer in table:
        if s == layer.name or layer.name == f"{layer.net}.{s}":
            return layer
    try:
        idx = int(s)
    except ValueError:
        idx = None
    if idx is not None and -len(table) <= idx < len(table):
        return table[idx]
    short = [x.name.removeprefix(f"{x.net}.") for x in table]
    raise InputError(f"{source} has no layer {s!r}",
                     f"use a name ({', '.join(short[:4])}{', ...' if len(short) > 4 else ''}) "
                     f"or an index 0..{len(table) - 1}")


def resolve_layers(spec: str) -> tuple[Layer, ...]:
    """Layers named by `spec`: a network ('vgg16'), a layer file ('my.csv'), or a selection from
    either: 'vgg16:conv4_2', 'resnet18:layer1.0.conv1', 'vgg16:1,5,-1' (0-based indices, comma lists)."""
    spec = spec.strip()
    if not spec:
        raise InputError("no layers named", f"pass a network ({', '.join(NETWORKS)}) or a layer file")
    source, sep, selection = spec.rpartition(":")
    if not sep or Path(spec).is_file():
        return _table(spec)
    table = _table(source)
    return tuple(_select(table, s, source) for s in selection.split(",") if s.strip()) or table


def unique_shapes(layers: Iterable[Layer]) -> dict[tuple[int, int, int, int], list[Layer]]:
    """Layers grouped by (c, n, H, W), in first-seen order: each key is one GEMM batch to measure."""
    groups: dict[tuple[int, int, int, int], list[Layer]] = {}
    for layer in layers:
        groups.setdefault(layer.shape, []).append(layer)
    return groups


def layer_tiles(layer: Layer, batch: int, p: int) -> int:
    """T = batch · ceil(H/m) · ceil(W/m) with m = p - 2."""
    from cutlass_wsp.winograd import tile_grid, tile_m

    m = tile_m(p)
    try:
        b = operator.index(batch)
    except TypeError:
        b = None
    if b is None or isinstance(batch, bool) or b < 1:
        raise InputError(f"batch {batch!r} is not a positive integer", "use --batch 1 or more")
    th, tw = tile_grid(layer.H, layer.W, m)
    return b * th * tw


def layer_problem(layer: Layer, batch: int, p: int) -> BatchProblem:
    """The layer's Winograd GEMM batch: L = p² GEMMs of M = n, K = c, N = T."""
    if not layer.is_winograd:
        raise Unsupported(f"{layer.name} is a {layer.kernel}×{layer.kernel} stride-{layer.stride} conv",
                          "only 3×3 stride-1 convs have a Winograd GEMM batch")
    return BatchProblem(L=p * p, M=layer.n, N=layer_tiles(layer, batch, p), K=layer.c)

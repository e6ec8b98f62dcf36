"""JSON-lines result store: one header line, then one row per measured point (docs/results-schema.md).

Every row is written with flush + fsync, so a sweep killed at any moment loses at most the row it
was writing. A line cut off by such a kill is ignored on load (with a warning) and removed by the
next append; a complete row is never dropped. Re-running a sweep skips the points already in the file.
"""

from __future__ import annotations

import csv
import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

from cutlass_wsp.errors import InputError

SCHEMA_NAME = "cutlass-wsp/results"
SCHEMA_VERSION = 1

from cutlass_wsp.status import FINAL_STATUSES, RETRYABLE_STATUSES, STATUSES  # noqa: E402,F401 (one vocabulary)

IDENTITY_FIELDS = ("key", "status", "reason")
COORDINATE_FIELDS = ("net", "layers", "c", "n", "H", "W", "batch", "p", "dtype", "pattern", "impl",
                     "ratio", "balance")
SHAPE_FIELDS = ("L", "M", "N", "K", "T", "Npad", "kept_m", "kept_k", "nnz", "kept_fraction", "flops")
KERNEL_FIELDS = ("kernel", "kernel_config", "tuned")   # tuned: the kernel came from the tuning cache (null: nothing tunable)
TIME_FIELDS = ("median_ms", "q1_ms", "q3_ms", "iqr_ms", "min_ms", "reps", "method")
QUALITY_FIELDS = ("rel_error", "floor_ms", "pct_of_floor", "gflops")
# The whole layer (input transform + GEMM batch + output transform, or cuDNN's conv): what a
# Winograd layer must beat. Null where the layer was not timed (--no-layer-time).
LAYER_FIELDS = ("layer_ms", "layer_q1_ms", "layer_q3_ms", "transform_ms", "transform_floor_ms",
                "transform_pct_of_floor", "layer_rel_error", "layout")
LAYOUTS = ("nchw", "nhwc")   # the layer input's layout (gpu/transforms.py and gpu/cudnn.py spell them so)
SPEEDUP_FIELDS = ("dense_ms", "speedup", "floor_speedup")
PROVENANCE_FIELDS = ("gpu", "sm_count", "sm_clock_mhz", "mem_clock_mhz", "driver", "cuda", "cupy",
                     "cutlass", "nvcc", "git_commit", "timestamp")

# Every row has exactly these fields, in this order (CSV columns too). docs/results-schema.md explains each.
ROW_FIELDS: tuple[str, ...] = (IDENTITY_FIELDS + COORDINATE_FIELDS + SHAPE_FIELDS + KERNEL_FIELDS
                               + TIME_FIELDS + QUALITY_FIELDS + LAYER_FIELDS + SPEEDUP_FIELDS + PROVENANCE_FIELDS)
# Times a row carries only when its status is ok (reps and method may record a partial run).
MEASURED_TIME_FIELDS = ("median_ms", "q1_ms", "q3_ms", "iqr_ms", "min_ms", "layer_ms", "layer_q1_ms",
                        "layer_q3_ms", "transform_ms")
HEADER_FIELDS = ("schema", "version", "created", "provenance")


class ResultsWarning(UserWarning):
    """A results file had a cut-off last line (a sweep killed mid-write); it was ignored."""


# ---------------------------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------------------------

def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def derive(row: dict) -> dict:
    """Fill iqr_ms, gflops, pct_of_floor and transform_pct_of_floor from the measured fields where
    they are missing."""
    med = row.get("median_ms")
    if row.get("iqr_ms") is None and _finite(row.get("q1_ms")) and _finite(row.get("q3_ms")):
        row["iqr_ms"] = row["q3_ms"] - row["q1_ms"]
    if _finite(med) and med > 0:
        if row.get("gflops") is None and _finite(row.get("flops")):
            row["gflops"] = row["flops"] / (med * 1e6)      # FLOP / (ms · 1e-3) / 1e9
        if row.get("pct_of_floor") is None and _finite(row.get("floor_ms")):
            row["pct_of_floor"] = 100.0 * row["floor_ms"] / med
    tr = row.get("transform_ms")
    if row.get("transform_pct_of_floor") is None and _finite(tr) and tr > 0 and _finite(row.get("transform_floor_ms")):
        row["transform_pct_of_floor"] = 100.0 * row["transform_floor_ms"] / tr
    return row


def make_row(point=None, status: str = "ok", **fields) -> dict:
    """A complete row: every ROW_FIELDS entry (None where unknown), the point's key and coordinates,
    then `fields`; derived fields filled. Raises ValueError for a field the schema does not have."""
    row = dict.fromkeys(ROW_FIELDS)
    if point is not None:
        row["key"] = point.key
        row.update(point.coordinates())
    row["status"] = status
    unknown = [k for k in fields if k not in row]
    if unknown:
        raise ValueError(f"result rows have no field {unknown[0]!r}; the fields are results.ROW_FIELDS")
    row.update(fields)
    return derive(row)


def check_row(row: Mapping) -> None:
    """Raise ValueError if `row` breaks the schema (a programming error in the caller, not user input)."""
    unknown = [k for k in row if k not in ROW_FIELDS]
    if unknown:
        raise ValueError(f"result rows have no field {unknown[0]!r}; the fields are results.ROW_FIELDS")
    if not isinstance(row.get("key"), str) or not row["key"]:
        raise ValueError("a result row needs a non-empty string 'key'")
    status = row.get("status")
    if status not in STATUSES:
        raise ValueError(f"row {row['key']}: status {status!r} is not one of {', '.join(STATUSES)}")
    if status == "ok":
        if not _finite(row.get("median_ms")) or row["median_ms"] <= 0:
            raise ValueError(f"row {row['key']}: status ok needs a positive median_ms")
        for f in ("layer_ms", "layer_q1_ms", "layer_q3_ms", "transform_ms"):
            v = row.get(f)
            if v is not None and not (_finite(v) and v > 0):
                raise ValueError(f"row {row['key']}: {f} must be a positive number or null, not {v!r}")
        if row.get("layer_ms") is None and (row.get("layer_q1_ms") is not None or row.get("layer_q3_ms") is not None):
            raise ValueError(f"row {row['key']}: layer quartiles without layer_ms")
    else:
        timed = [f for f in MEASURED_TIME_FIELDS if row.get(f) is not None]
        if timed:
            raise ValueError(f"row {row['key']}: status {status} must carry no time, but {timed[0]} is set")
    layout = row.get("layout")
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"row {row['key']}: layout {layout!r} is not one of {', '.join(LAYOUTS)}")


def _json_safe(value):
    """JSON has no NaN/Inf: a non-finite number (a kernel that wrote NaN) is stored as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _row_line(obj: Mapping) -> bytes:
    full = {k: obj.get(k) for k in ROW_FIELDS} if "key" in obj else dict(obj)
    return (json.dumps(_json_safe(full), allow_nan=False) + "\n").encode()


# gpu/info.provenance() names -> row provenance fields (a name already in PROVENANCE_FIELDS maps to itself)
_PROVENANCE_SOURCES = {"gpu": ("gpu", "gpu_name"), "driver": ("driver", "driver_version", "cuda_driver_version"),
                       "cuda": ("cuda", "cuda_runtime_version"), "cutlass": ("cutlass", "cutlass_version"),
                       "nvcc": ("nvcc", "nvcc_version"), "timestamp": ("timestamp", "timestamp_utc")}


def row_provenance(prov: Mapping) -> dict:
    """The PROVENANCE_FIELDS of a row from a provenance dict (gpu/info.provenance() or already mapped);
    a dirty work tree marks the commit '-dirty'."""
    out = {}
    for name in PROVENANCE_FIELDS:
        sources = _PROVENANCE_SOURCES.get(name, (name,))
        out[name] = next((prov[s] for s in sources if prov.get(s) is not None), None)
    if out["git_commit"] and prov.get("git_dirty") and not str(out["git_commit"]).endswith("-dirty"):
        out["git_commit"] = f"{out['git_commit']}-dirty"
    return out


def new_header(provenance: Mapping | None = None) -> dict:
    return {"schema": SCHEMA_NAME, "version": SCHEMA_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "provenance": dict(provenance or {})}


# ---------------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------------

def _parse_object(line: bytes):
    try:
        obj = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def latest_by_key(rows: Iterable[Mapping]) -> list[dict]:
    """One row per key: the last one written wins, placed where the key first appeared."""
    out: dict[str, dict] = {}
    for r in rows:
        out[r["key"]] = dict(r)
    return list(out.values())


class ResultStore:
    """A results .jsonl file. `provenance` goes into the header when the file is created."""

    def __init__(self, path: str | Path, provenance: Mapping | None = None):
        self.path = Path(path)
        self.provenance = dict(provenance or {})
        self.header: dict | None = None
        self._ready = False   # header checked and tail repaired for appending

    # -- reading ---------------------------------------------------------------------------------
    def _check_header(self, obj: dict | None, line_no: int = 1) -> dict:
        if obj is None or obj.get("schema") != SCHEMA_NAME:
            raise InputError(f"{self.path} is not a cutlass-wsp results file (line {line_no} is not its header)",
                             "pass a .jsonl file written by cutlass-wsp sweep, or use a new --out file")
        if obj.get("version") != SCHEMA_VERSION:
            raise InputError(f"{self.path} is schema version {obj.get('version')}; "
                             f"this cutlass-wsp reads version {SCHEMA_VERSION}",
                             "use a new --out file or convert")
        return obj

    def _read(self) -> tuple[dict | None, list[dict], int | None]:
        """(header, every complete row, byte offset of a cut-off tail to drop or None)."""
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        tail = lines.pop()          # b"" when the file ends with a newline
        header: dict | None = None
        rows: list[dict] = []
        cut: int | None = None
        if tail:
            obj = _parse_object(tail)
            if obj is None:
                cut = len(data) - len(tail)
                warnings.warn(f"{self.path}: the last line is cut off (a sweep stopped mid-write); "
                              "it is ignored and will be removed by the next append", ResultsWarning, stacklevel=3)
            else:
                lines.append(tail)   # a complete object that only lacks its newline: keep it
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            obj = _parse_object(line)
            if header is None:
                header = self._check_header(obj, i)
                continue
            if obj is None or not isinstance(obj.get("key"), str):
                raise InputError(f"{self.path}: line {i} is not a result row",
                                 "the file is damaged: repair or delete that line, or use a new --out file")
            rows.append(obj)
        return header, rows, cut

    def load(self, all_rows: bool = False, missing_ok: bool = False) -> list[dict]:
        """Rows of the file: one per key (the last written wins) unless `all_rows`."""
        if not self.path.exists():
            if missing_ok:
                return []
            raise InputError(f"results file {str(self.path)!r} not found",
                             "pass a .jsonl file written by cutlass-wsp sweep")
        if self.path.is_dir():
            raise InputError(f"{self.path} is a directory", "pass a .jsonl results file")
        self.header, rows, _ = self._read()
        return rows if all_rows else latest_by_key(rows)

    def done_keys(self, retry_failed: bool = False) -> set[str]:
        """Keys a resumed sweep skips: every key in the file, or with `retry_failed` only the keys
        whose last row has a final status (ok, wrong, unsupported, compile_error)."""
        rows = self.load(missing_ok=True)
        return {r["key"] for r in rows if not retry_failed or r.get("status") in FINAL_STATUSES}

    def pending(self, points: Sequence, retry_failed: bool = False) -> list:
        """The points (anything with a .key) that still need measuring, in their order."""
        done = self.done_keys(retry_failed)
        return [p for p in points if p.key not in done]

    # -- writing ---------------------------------------------------------------------------------
    def _prepare(self) -> None:
        """Before the first append: check the header, drop a cut-off last line, end the file with a
        newline, or create the file with its header."""
        if self.path.exists() and self.path.stat().st_size > 0:
            header, _rows, cut = self._read_quiet()
            with open(self.path, "rb+") as f:
                if cut is not None:
                    f.truncate(cut)
                f.seek(0, os.SEEK_END)
                if f.tell() > 0:
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":
                        f.write(b"\n")
                f.flush()
                os.fsync(f.fileno())
            self.header = header
        if self.header is None:     # new, empty, or only a cut-off header line
            self.header = new_header(self.provenance)
            self._write(json.dumps(_json_safe(self.header)).encode() + b"\n")
        self._ready = True

    def _read_quiet(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResultsWarning)
            return self._read()

    def _write(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())   # the row is on disk before the next point starts

    def append(self, row: Mapping) -> None:
        """Write one row (checked against the schema; missing fields written as null)."""
        check_row(row)
        if not self._ready:
            self._prepare()
        try:
            self._write(_row_line(row))
        except BaseException:
            self._ready = False    # a partial line may be left: repair it before the next append
            raise


def load_many(paths: Iterable[str | Path]) -> list[dict]:
    """Rows of several files. A point measured on the same GPU in more than one file keeps the row of
    the later file, so a few points re-measured into a new file replace the old ones."""
    out: dict[tuple, dict] = {}
    for path in paths:
        for r in ResultStore(path).load():
            out[(r.get("gpu"), r["key"])] = r
    return list(out.values())


# ---------------------------------------------------------------------------------------------
# Derived: speedups over dense, CSV export
# ---------------------------------------------------------------------------------------------

def _shape_id(r: Mapping) -> tuple:
    return (r.get("gpu"), r.get("c"), r.get("n"), r.get("H"), r.get("W"), r.get("batch"), r.get("p"), r.get("dtype"))


def fill_speedups(rows: Iterable[Mapping]) -> list[dict]:
    """Copies of `rows` with dense_ms (fastest ok dense row of the same GEMM batch on the same GPU),
    speedup = dense_ms / median_ms and floor_speedup = dense floor_ms / floor_ms (what the roofline
    predicts). Fields that cannot be computed stay as they were."""
    rows = [dict(r) for r in rows]
    dense_ms: dict[tuple, float] = {}
    dense_floor: dict[tuple, float] = {}
    for r in rows:
        if r.get("pattern") != "dense":
            continue
        sid = _shape_id(r)
        if r.get("status") == "ok" and _finite(r.get("median_ms")):
            dense_ms[sid] = min(dense_ms.get(sid, math.inf), r["median_ms"])
        if _finite(r.get("floor_ms")) and r["floor_ms"] > 0:
            dense_floor.setdefault(sid, r["floor_ms"])
    for r in rows:
        sid = _shape_id(r)
        if sid in dense_ms:
            r["dense_ms"] = dense_ms[sid]
            if r.get("status") == "ok" and _finite(r.get("median_ms")) and r["median_ms"] > 0:
                r["speedup"] = dense_ms[sid] / r["median_ms"]
        if sid in dense_floor and _finite(r.get("floor_ms")) and r["floor_ms"] > 0:
            r["floor_speedup"] = dense_floor[sid] / r["floor_ms"]
    return rows


def _csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def to_csv(rows: Iterable[Mapping], path: str | Path) -> Path:
    """Write rows as CSV, columns in ROW_FIELDS order; lists and dicts as JSON, null as empty."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(ROW_FIELDS)
        for r in rows:
            w.writerow([_csv_cell(r.get(k)) for k in ROW_FIELDS])
    return path

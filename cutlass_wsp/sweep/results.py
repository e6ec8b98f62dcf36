"""JSON-lines result store: one header line, then one row per measured point (docs/results-schema.md).

Every row is written with flush + fsync, so a sweep killed at any moment loses at most the row it
was writing. A last line cut off by such a kill is ignored on load (with a warning) and removed by the
next append; garbage (binary data, a damaged line) is an error, never taken for a cut-off line; a
complete row is never dropped. Re-running a sweep skips the points already in the file. One process
writes a file at a time (an exclusive lock on `<file>.lock`, cutlass_wsp/storage.py), and a sweep
appends a point only if the file does not have it yet: no point is recorded twice.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

from cutlass_wsp.errors import Busy, InputError
from cutlass_wsp.status import FINAL_STATUSES, RETRYABLE_STATUSES, STATUSES  # noqa: F401 (one vocabulary)
from cutlass_wsp.storage import append_durably, atomic_write_text, locked

SCHEMA_NAME = "cutlass-wsp/results"
SCHEMA_VERSION = 1


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
PROVENANCE_FIELDS = ("gpu", "gpu_bus_id", "host", "sm_count", "sm_clock_mhz", "mem_clock_mhz", "driver", "cuda", "cupy",
                     "cutlass", "nvcc", "git_commit", "timestamp")

# Every row has exactly these fields, in this order (CSV columns too). docs/results-schema.md explains each.
ROW_FIELDS: tuple[str, ...] = (IDENTITY_FIELDS + COORDINATE_FIELDS + SHAPE_FIELDS + KERNEL_FIELDS
                               + TIME_FIELDS + QUALITY_FIELDS + LAYER_FIELDS + SPEEDUP_FIELDS + PROVENANCE_FIELDS)
# Times a row carries only when its status is ok (reps and method may record a partial run).
MEASURED_TIME_FIELDS = ("median_ms", "q1_ms", "q3_ms", "iqr_ms", "min_ms", "layer_ms", "layer_q1_ms",
                        "layer_q3_ms", "transform_ms")
HEADER_FIELDS = ("schema", "version", "created", "provenance")
APPEND_WAIT_S = 5.0   # an append outside writing() waits this long for another process's single append


class ResultsWarning(UserWarning):
    """A results file had a cut-off last line (a sweep killed mid-write): ignored when read, removed
    before the next append."""


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
_PROVENANCE_SOURCES = {"gpu": ("gpu", "gpu_name"), "gpu_bus_id": ("gpu_bus_id", "gpu_pci_bus_id"),
                       "host": ("host", "hostname"), "driver": ("driver", "driver_version", "cuda_driver_version"),
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


# What may follow the place a JSON parser stopped in an object cut off mid-token: a literal or number begun.
_PARTIAL_TOKEN = re.compile(r"(t(r(ue?)?)?|f(a(l(se?)?)?)?|n(u(ll?)?)?|-?\d*(\.\d*)?([eE][-+]?\d*)?)")
_HEADER_START = json.dumps({"schema": SCHEMA_NAME})[:-1].encode()     # b'{"schema": "cutlass-wsp/results"'


def _is_cut_off(tail: bytes) -> bool:
    """True when `tail` (a last line without its newline) is the start of a JSON object that a kill cut
    short: UTF-8 text (maybe ending inside a character) that opens with '{' and is wrong only where it
    ends. Anything else (binary data, other text, an object with an error in its middle) is damage."""
    try:
        text = tail.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.reason != "unexpected end of data":
            return False
        text = tail[:e.start].decode("utf-8", "replace")
    if not text.startswith("{"):
        return False
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        rest = text[e.pos:]
        return e.msg.startswith("Unterminated string") or not rest.strip() or bool(_PARTIAL_TOKEN.fullmatch(rest))
    return False


def _is_binary(line: bytes) -> bool:
    if b"\x00" in line:
        return True
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def latest_by_key(rows: Iterable[Mapping]) -> list[dict]:
    """One row per (gpu, key): the last one written wins, placed where it first appeared. A file has
    one row per key and GPU type: a sweep over several GPU types (`sweep --scheduler`) measures each
    point on each type, and readers split by GPU."""
    out: dict[tuple, dict] = {}
    for r in rows:
        out[(r.get("gpu"), r["key"])] = dict(r)
    return list(out.values())


class ResultStore:
    """A results .jsonl file. `provenance` goes into the header when the file is created.
    `out_option` names the option that gave the path ('--out') when the command writes the file: error
    hints then offer a new file there; a reader's hints (plot, plan, compare) do not."""

    def __init__(self, path: str | Path, provenance: Mapping | None = None, *, out_option: str | None = None):
        self.path = Path(path)
        self.provenance = dict(provenance or {})
        self.out_option = out_option
        self.header: dict | None = None
        self._ready = False   # header checked and tail repaired for appending, under the current lock
        self._lock_depth = 0
        # (file id, key -> last status, gpu -> key -> last status)
        self._known: tuple[tuple | None, dict[str, str | None], dict[str | None, dict[str, str | None]]] | None = None

    # -- reading ---------------------------------------------------------------------------------
    def _fix(self, reader_fix: str, writer_fix: str | None = None) -> str:
        if self.out_option is None:
            return reader_fix
        return writer_fix or f"give {self.out_option} a new file"

    def _check_header(self, obj: dict | None, line: bytes, line_no: int = 1) -> dict:
        if obj is None or obj.get("schema") != SCHEMA_NAME:
            why = "it holds binary data, not JSON lines" if _is_binary(line) else f"line {line_no} is not its header"
            raise InputError(f"{self.path} is not a cutlass-wsp results file ({why})",
                             self._fix("pass a .jsonl file written by cutlass-wsp sweep",
                                       f"give {self.out_option} a new file, or one written by cutlass-wsp sweep"))
        if obj.get("version") != SCHEMA_VERSION:
            raise InputError(f"{self.path} is schema version {obj.get('version')}; "
                             f"this cutlass-wsp reads version {SCHEMA_VERSION}",
                             self._fix("read it with the cutlass-wsp that wrote it, or measure again with this one"))
        return obj

    def _read(self) -> tuple[dict | None, list[dict], int | None]:
        """(header, every complete row, byte offset of a cut-off last line to drop or None)."""
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        tail = lines.pop()          # b"" when the file ends with a newline
        header: dict | None = None
        rows: list[dict] = []
        cut: int | None = None
        has_lines = any(line.strip() for line in lines)
        if tail and _parse_object(tail) is None and _is_cut_off(tail) \
                and (has_lines or _HEADER_START.startswith(tail[:len(_HEADER_START)])):
            cut = len(data) - len(tail)
            warnings.warn(f"{self.path}: the last line is cut off (a sweep stopped mid-write); it is ignored",
                          ResultsWarning, stacklevel=4)
        elif tail:
            lines.append(tail)      # a complete object that only lacks its newline, or damage: judged below
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            obj = _parse_object(line)
            if header is None:
                header = self._check_header(obj, line, i)
                continue
            if obj is None or not isinstance(obj.get("key"), str):
                raise InputError(f"{self.path}: line {i} is not a result row",
                                 self._fix(f"the file is damaged: repair or delete line {i}",
                                           f"the file is damaged: repair or delete line {i}, "
                                           f"or give {self.out_option} a new file"))
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

    def _file_id(self) -> tuple | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _statuses(self, gpu: str | None = None) -> dict[str, str | None]:
        """The last status of every key in the file (of the rows measured on `gpu`, when given), read
        again only when the file has changed."""
        fid = self._file_id()
        if self._known is None or self._known[0] != fid:
            by_key: dict[str, str | None] = {}
            by_gpu: dict[str | None, dict[str, str | None]] = {}
            for r in self.load(all_rows=True, missing_ok=True):
                by_key[r["key"]] = by_gpu.setdefault(r.get("gpu"), {})[r["key"]] = r.get("status")
            self._known = (fid, by_key, by_gpu)
        return self._known[1] if gpu is None else self._known[2].get(gpu, {})

    def done_keys(self, retry_failed: bool = False, gpu: str | None = None) -> set[str]:
        """Keys a resumed sweep skips: every key in the file, or with `retry_failed` only the keys
        whose last row has a final status (ok, wrong, unsupported, compile_error). With `gpu`, only
        the rows measured on that GPU type count (a sweep over several GPU types measures each point
        once per type)."""
        return {k for k, st in self._statuses(gpu).items() if not retry_failed or st in FINAL_STATUSES}

    def is_pending(self, key: str, retry_failed: bool = False, gpu: str | None = None) -> bool:
        st = self._statuses(gpu)
        return key not in st or (retry_failed and st[key] not in FINAL_STATUSES)

    def pending(self, points: Sequence, retry_failed: bool = False, gpu: str | None = None) -> list:
        """The points (anything with a .key) that still need measuring (on `gpu`, when given), in their order."""
        done = self.done_keys(retry_failed, gpu)
        return [p for p in points if p.key not in done]

    # -- one writer at a time --------------------------------------------------------------------
    @contextlib.contextmanager
    def writing(self, *, wait: bool | float = False) -> Iterator[ResultStore]:
        """Hold the file's writer lock (`<file>.lock`) for the block: one process appends at a time.
        Another writer makes this raise Busy at once (or after `wait` seconds) with one line naming
        it. Re-entrant within this store; appends outside the block take the lock for themselves."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield self
            finally:
                self._lock_depth -= 1
            return
        try:
            lock = locked(self.path, wait=wait)
            lock.__enter__()
        except Busy as e:
            who = f" (pid {e.holder_pid})" if e.holder_pid else ""
            again = f"give {self.out_option} another file" if self.out_option else "write to another file"
            raise Busy(f"{self.path} is being written by another cutlass-wsp process{who}",
                       f"wait for it to finish (running this again then measures only what it left), or {again}",
                       path=self.path, holder_pid=e.holder_pid) from None
        self._lock_depth = 1
        self._ready = False        # another writer may have appended (or been killed) since we last looked
        try:
            yield self
        finally:
            self._lock_depth = 0
            lock.__exit__(None, None, None)

    # -- writing ---------------------------------------------------------------------------------
    def _prepare(self) -> None:
        """Before the first append under a lock: check the header, drop a cut-off last line, end the
        file with a newline, or create the file with its header."""
        self.header = None
        if self.path.exists() and self.path.stat().st_size > 0:
            header, _rows, cut = self._read_quiet()
            with open(self.path, "rb+") as f:
                if cut is not None:
                    f.truncate(cut)
                    warnings.warn(f"{self.path}: removed the cut-off last line (a sweep stopped mid-write) "
                                  "before appending", ResultsWarning, stacklevel=5)
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
        append_durably(self.path, data)   # the row is on disk before the next point starts

    def _append_locked(self, row: Mapping) -> None:
        if not self._ready:
            self._prepare()
        try:
            self._write(_row_line(row))
        except BaseException:
            self._ready = False    # a partial line may be left: repair it before the next append
            raise
        if self._known is not None:        # what we just wrote needs no re-read
            self._known[1][row["key"]] = row.get("status")
            self._known[2].setdefault(row.get("gpu"), {})[row["key"]] = row.get("status")
            self._known = (self._file_id(), self._known[1], self._known[2])

    def append(self, row: Mapping) -> None:
        """Write one row (checked against the schema; missing fields written as null) under the
        writer lock. A row for a key already in the file is written too: the last row of a key wins
        (a re-measured point). A sweep appends with append_pending instead."""
        check_row(row)
        with self.writing(wait=APPEND_WAIT_S):
            self._append_locked(row)

    def append_pending(self, row: Mapping, retry_failed: bool = False, per_gpu: bool = False) -> bool:
        """Append `row` only if its key is still pending (see pending(); with `per_gpu`, pending on the
        row's GPU type), checked under the writer lock against the file as it is now: a point is never
        recorded twice. Returns whether it was written."""
        check_row(row)
        with self.writing(wait=APPEND_WAIT_S):
            if not self.is_pending(row["key"], retry_failed, gpu=row.get("gpu") if per_gpu else None):
                return False
            self._append_locked(row)
            return True


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


def _baseline_id(r: Mapping, layer_points: frozenset) -> tuple:
    """The shape and what the row's median times: a whole-layer implementation (the fused layer) is compared
    with the same implementation's dense layer, a GEMM batch with the fastest dense GEMM batch."""
    return (*_shape_id(r), r.get("impl") if (r.get("pattern"), r.get("impl")) in layer_points else "gemm")


def fill_speedups(rows: Iterable[Mapping]) -> list[dict]:
    """Copies of `rows` with dense_ms (fastest ok dense row of the same GEMM batch on the same GPU; for a
    whole-layer implementation such as `fused`, its own dense layer), speedup = dense_ms / median_ms and
    floor_speedup = dense floor_ms / floor_ms (what the roofline predicts). Fields that cannot be computed
    stay as they were."""
    from cutlass_wsp.families.registry import layer_points

    points = layer_points()
    rows = [dict(r) for r in rows]
    dense_ms: dict[tuple, float] = {}
    dense_floor: dict[tuple, float] = {}
    for r in rows:
        if r.get("pattern") != "dense":
            continue
        sid = _baseline_id(r, points)
        if r.get("status") == "ok" and _finite(r.get("median_ms")):
            dense_ms[sid] = min(dense_ms.get(sid, math.inf), r["median_ms"])
        if _finite(r.get("floor_ms")) and r["floor_ms"] > 0:
            dense_floor.setdefault(sid, r["floor_ms"])
    for r in rows:
        sid = _baseline_id(r, points)
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
    """Write rows as CSV (UTF-8), columns in ROW_FIELDS order; lists and dicts as JSON, null as empty.
    The file is replaced atomically: a reader never sees half of it."""
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(ROW_FIELDS)
    for r in rows:
        w.writerow([_csv_cell(r.get(k)) for k in ROW_FIELDS])
    return atomic_write_text(path, buf.getvalue())

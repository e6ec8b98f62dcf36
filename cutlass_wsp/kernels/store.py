"""The tuning cache: which kernel won for which problem on which GPU with which toolchain.

`<compile cache root>/tuning.json` holds {"format": 1, "entries": {key: entry}}. The key names what a
tuned choice depends on: GPU name, kernel family, dtype, arch, the problem as the kernel sees it (L, M,
N, K with N = Npad; gather_b adds c, grouped a digest of the per-group rows) and the nvcc and CUTLASS
versions (`tuning_key`). The file is replaced atomically (temp file + os.replace, under a lock file for
read-modify-write); a corrupt or foreign file reads as empty.

`TunedChoices` is what a run uses: the store read ONCE (for this GPU and toolchain) at the start of a
sweep or bench run, handed to the measurer and the families, looked up by key in memory. Nothing reads
tuning.json inside a family constructor. The search that fills the store is `kernels/search.py`.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from cutlass_wsp.errors import ToolchainError, WspError
from cutlass_wsp.kernels.description import KernelDesc

if TYPE_CHECKING:
    from cutlass_wsp.kernels.cache import KernelCache
    from cutlass_wsp.kernels.toolchain import Toolchain

STORE_NAME = "tuning.json"
STORE_FORMAT = 1


class TuningWarning(UserWarning):
    """The tuning cache file could not be read (corrupt, foreign): it was treated as empty."""


# ------------------------------------------------------------------------------------- the key
def key_fields(problem: Any, dtype: str, arch: str, *, gpu_name: str, toolchain: "Toolchain",
               family: str = "dense") -> dict[str, Any]:
    """What a tuned choice depends on: the GPU, the kernel family/dtype/arch, the exact problem (L, M, N,
    K; gather_b adds c, grouped 'Ms', a digest of the per-group rows), and the compiler and CUTLASS
    that built the kernels. `arch` is the GPU's kernel arch (gather_b kernels are sm80 code on sm90)."""
    return {"gpu": gpu_name, "family": family, "dtype": dtype, "arch": arch, **problem.key_fields(),
            "cutlass": toolchain.cutlass_version, "nvcc": toolchain.nvcc_version}


def tuning_key(problem: Any, dtype: str, arch: str, *, gpu_name: str, toolchain: "Toolchain",
               family: str = "dense") -> str:
    """e.g. 'gpu=NVIDIA H100 80GB HBM3|family=dense|dtype=fp16|arch=sm90|L=16|M=512|N=6272|K=512|cutlass=4.2.0|nvcc=13.0.88';
    gather_b: '...|K=160|c=512|...', wsp_r_grouped: '...|K=512|Ms=<12 hex digits>|...'."""
    fields = key_fields(problem, dtype, arch, gpu_name=gpu_name, toolchain=toolchain, family=family)
    return "|".join(f"{k}={v}" for k, v in fields.items())


# ----------------------------------------------------------------------------------- the store
class TuningStore:
    """The tuning cache: one JSON file {"format": 1, "entries": {key: entry}}. Writes replace the whole
    file atomically under an exclusive lock on `<file>.lock` (`cutlass_wsp/storage.py`, the results
    store's storage layer), so concurrent tuners never lose each other's entries and a reader never
    sees half a file."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser().resolve()
        self._parsed: tuple[tuple[int, int], dict[str, dict]] | None = None

    @classmethod
    def beside(cls, cache: "KernelCache") -> "TuningStore":
        """`tuning.json` in the compile cache's root (kernels and the choices among them live together)."""
        return cls(cache.root / STORE_NAME)

    @property
    def lock_path(self) -> Path:
        from cutlass_wsp.storage import lock_path

        return lock_path(self.path)

    def entries(self) -> dict[str, dict]:
        """Every entry; {} for a missing, unreadable or corrupt file (with a TuningWarning for the last)."""
        try:
            st = self.path.stat()
        except OSError:
            return {}
        sig = (st.st_mtime_ns, st.st_size)
        if self._parsed is not None and self._parsed[0] == sig:
            return dict(self._parsed[1])
        entries = self._read()
        self._parsed = (sig, entries)
        return dict(entries)

    def _read(self) -> dict[str, dict]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            warnings.warn(f"tuning cache {self.path} is unreadable ({type(e).__name__}); treated as empty",
                          TuningWarning, stacklevel=3)
            return {}
        if (not isinstance(data, dict) or data.get("format") != STORE_FORMAT
                or not isinstance(data.get("entries"), dict)):
            warnings.warn(f"tuning cache {self.path} is not a format-{STORE_FORMAT} tuning file; treated as "
                          "empty", TuningWarning, stacklevel=3)
            return {}
        return {k: v for k, v in data["entries"].items() if isinstance(k, str) and isinstance(v, dict)}

    def get(self, key: str) -> dict | None:
        return self.entries().get(key)

    def put(self, key: str, entry: dict) -> None:
        """Add or replace one entry (read, merge, atomic write, all under the lock)."""
        with self._locked():
            self._parsed = None
            entries = self.entries()
            entries[key] = entry
            self._write(entries)

    def remove(self, key: str) -> bool:
        with self._locked():
            self._parsed = None
            entries = self.entries()
            if entries.pop(key, None) is None:
                return False
            self._write(entries)
            return True

    def _write(self, entries: dict[str, dict]) -> None:
        from cutlass_wsp.storage import atomic_write_text

        atomic_write_text(self.path, json.dumps({"format": STORE_FORMAT, "entries": entries}, indent=1,
                                                sort_keys=True) + "\n")
        self._parsed = None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        from cutlass_wsp.storage import locked

        with locked(self.path):
            yield


_stores: dict[Path, TuningStore] = {}


def store_for(cache: "KernelCache | None" = None, store: TuningStore | None = None) -> TuningStore:
    """The given store, else the one beside the cache (one object per file, so its parse is reused)."""
    if store is not None:
        return store
    from cutlass_wsp.kernels.cache import default_cache

    path = ((cache or default_cache()).root / STORE_NAME).resolve()
    if path not in _stores:
        _stores[path] = TuningStore(path)
    return _stores[path]


# ------------------------------------------------------------------------------- one run's view
class TunedChoices:
    """The tuned kernels of one GPU and toolchain: a snapshot of the tuning store taken once per sweep or
    bench run (`load`), looked up in memory by (kernel family, problem, dtype, arch). An entry this
    version cannot build (fails `validate()` or the kernel family's check) is ignored."""

    def __init__(self, entries: Mapping[str, dict] | None = None, *, gpu_name: str | None = None,
                 toolchain: "Toolchain | None" = None,
                 checks: Mapping[str, Callable[[KernelDesc], Any]] | None = None):
        self.entries = dict(entries or {})
        self.gpu_name = gpu_name
        self.toolchain = toolchain
        self.checks = dict(checks or {})

    @classmethod
    def load(cls, cache: "KernelCache | None" = None, *, store: TuningStore | None = None,
             gpu_name: str | None = None, checks: Mapping[str, Callable[[KernelDesc], Any]] | None = None
             ) -> "TunedChoices":
        """Read the store once. Empty without a GPU name (no GPU) or without a toolchain."""
        from cutlass_wsp.gpu.device import current_gpu_name
        from cutlass_wsp.kernels.cache import default_cache

        cache = cache or default_cache()
        gpu_name = gpu_name or current_gpu_name()
        if gpu_name is None:
            return cls(checks=checks)
        try:
            toolchain = cache.toolchain
        except ToolchainError:
            return cls(gpu_name=gpu_name, checks=checks)
        return cls(store_for(cache, store).entries(), gpu_name=gpu_name, toolchain=toolchain, checks=checks)

    def __len__(self) -> int:
        return len(self.entries)

    def key(self, family: str, problem: Any, dtype: str, arch: str) -> str | None:
        """The tuning key of this problem on this GPU and toolchain; None without either."""
        if self.gpu_name is None or self.toolchain is None:
            return None
        return tuning_key(problem, dtype, arch, gpu_name=self.gpu_name, toolchain=self.toolchain, family=family)

    def entry(self, family: str, problem: Any, dtype: str, arch: str) -> dict | None:
        key = self.key(family, problem, dtype, arch)
        return None if key is None else self.entries.get(key)

    def lookup(self, family: str, problem: Any, dtype: str, arch: str) -> KernelDesc | None:
        """The tuned kernel of `family` for this problem, or None (not tuned, or not buildable here)."""
        entry = self.entry(family, problem, dtype, arch)
        if entry is None:
            return None
        try:
            desc = KernelDesc.from_dict(entry["desc"])
            desc.validate()
            check = self.checks.get(family)
            if check is not None:
                check(desc)
        except (KeyError, TypeError, ValueError, WspError):
            return None
        if (desc.family, desc.dtype) != (family, dtype):
            return None
        return desc

    def tuned(self, family: str, problem: Any, dtype: str, arch: str) -> bool:
        """Has this problem a usable tuned choice (so a budgeted tune can skip it)?"""
        return self.lookup(family, problem, dtype, arch) is not None

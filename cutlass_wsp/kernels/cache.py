"""Compile cache for kernel libraries, modelled on CuPy's cupy/cuda/compiler.py. Two compilers share it:
nvcc builds a CUTLASS `KernelDesc` into a shared library (`get`), NVRTC builds a plain CUDA source (the
Winograd transforms, the row gather) into a cubin that `cupy.RawModule(path=...)` loads (`get_nvrtc`).

Layout under the cache root ($CUTLASS_WSP_CACHE, else $XDG_CACHE_HOME/cutlass-wsp, else
~/.cache/cutlass-wsp):
  kernels/<name>-<key16>.json           manifest: key, description, toolchain, sha256 of the .so
  kernels/<name>-<key16>-<sha12>.so     the library (content-addressed: a published file never changes)
  kernels/<name>-<key16>.cu             the source it was built from (for reading, not for the key)
  failed/<name>-<key16>.cu / .log       sources that did not compile, with nvcc's output
  tmp/                                  private build directories, one per build

  kernels/<name>-<key16>-<sha12>.cubin  an NVRTC build (.ptx when this NVRTC does not know the GPU's arch)

nvcc key = sha256(source, flags without include paths, nvcc version, CUTLASS version, arch, ABI version);
NVRTC key = sha256(source, every option including the arch, NVRTC version).
Builds happen in a private temp dir and are published with os.replace (binary first, manifest last), so
readers see either no entry or a complete one, and concurrent builders of one key both succeed (the
last manifest wins; each points at its own complete binary). An entry whose binary is missing, truncated
or fails its recorded sha256, or whose manifest is unreadable, is a miss and is rebuilt. A failed build
keeps its source and log under failed/ and raises CompileError(source_path=, log=).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterable

from cutlass_wsp.errors import CompileError, ToolchainError
from cutlass_wsp.kernels import emitter
from cutlass_wsp.kernels.description import KernelDesc
from cutlass_wsp.kernels.abi import ABI_VERSION
from cutlass_wsp.kernels.toolchain import Toolchain, discover

MANIFEST_FORMAT = 1
COMPILE_TIMEOUT_S = 1800


def default_cache_dir() -> Path:
    env = os.environ.get("CUTLASS_WSP_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "cutlass-wsp"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _key_flags(flags: list[str]) -> list[str]:
    """Flags that change the binary: include paths are machine-specific and covered by the CUTLASS version."""
    return [f for f in flags if not f.startswith("-I")]


def _atomic_write_text(path: Path, text: str, tmp_dir: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=tmp_dir, suffix=path.suffix)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


_ERROR_LINE = [
    re.compile(r"^(?P<file>[^\s(][^(\n]*)\((?P<line>\d+)\): (?:catastrophic )?error", re.M),   # nvcc front end
    re.compile(r"^(?P<file>[^\s:][^:\n]*):(?P<line>\d+):(?:\d+:)? (?:fatal )?error", re.M),      # host compiler
]


def _source_excerpt(path: Path, line: int, around: int = 3) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    lo, hi = max(1, line - around), min(len(lines), line + around)
    return "\n".join(f"{'>' if i == line else ' '}{i:6d} | {lines[i - 1]}" for i in range(lo, hi + 1))


def describe_compile_error(log: str, source: Path) -> str:
    """First error line of an nvcc log and the source lines around it (plus, when the error is inside a
    CUTLASS header, the line of the generated source that instantiated it)."""
    first = None
    for pattern in _ERROR_LINE:
        m = pattern.search(log)
        if m and (first is None or m.start() < first.start()):
            first = m
    if first is None:
        tail = [ln for ln in log.strip().splitlines() if ln.strip()][-5:]
        return "\n".join(tail)
    end = log.find("\n", first.end())
    parts = [log[first.start(): end if end >= 0 else len(log)].strip()]
    where = Path(first.group("file"))
    excerpt = _source_excerpt(where, int(first.group("line")))
    if excerpt:
        parts.append(f"{where}:\n{excerpt}")
    if where.name != source.name:
        inst = re.search(rf"line (\d+) of {re.escape(str(source))}", log[first.start():])
        if inst:
            parts.append(f"instantiated from {source}:\n{_source_excerpt(source, int(inst.group(1)))}")
    return "\n".join(parts)


class NvrtcFailure(Exception):
    """NVRTC refused a source; `log` is its program log."""

    def __init__(self, log: str):
        super().__init__(log)
        self.log = log


class NvrtcCompiler:
    """NVRTC through CuPy's bindings (no GPU needed): CUDA source -> cubin for sm_<arch>, or PTX for
    compute_<arch> when this NVRTC does not know the arch. The options are what `cupy.RawModule(code=...,
    options=...)` compiles with (CuPy 14: the caller's, then -ftz=true, the arch, and
    --device-as-default-execution-space), so the binary is the one CuPy would have built."""

    RAWMODULE_OPTIONS = ("-ftz=true",)
    RAWMODULE_TAIL = ("--device-as-default-execution-space",)

    def _nvrtc(self):
        from cutlass_wsp.errors import ToolchainError

        try:
            from cupy_backends.cuda.libs import nvrtc

            nvrtc.getVersion()
        except Exception as e:  # no cupy, or no libnvrtc: a toolchain problem, not a compile error
            raise ToolchainError(f"NVRTC is not available ({type(e).__name__}: {e})",
                                 "install the CUDA toolkit's NVRTC (pip install nvidia-cuda-nvrtc)") from None
        return nvrtc

    def version(self) -> str:
        major, minor = self._nvrtc().getVersion()
        return f"{major}.{minor}"

    def cubin(self, arch: int) -> bool:
        """NVRTC emits SASS (cubin) for archs it knows; else PTX that the driver compiles at load."""
        try:
            return int(arch) in tuple(self._nvrtc().getSupportedArchs())
        except AttributeError:
            return True

    def suffix(self, arch: int) -> str:
        return ".cubin" if self.cubin(arch) else ".ptx"

    def options(self, options: tuple[str, ...], arch: int) -> tuple[str, ...]:
        target = f"-arch=sm_{arch}" if self.cubin(arch) else f"-arch=compute_{arch}"
        return (*options, *self.RAWMODULE_OPTIONS, target, *self.RAWMODULE_TAIL)

    def compile(self, source: str, filename: str, options: tuple[str, ...]) -> tuple[bytes, str]:
        """(binary, log); NvrtcFailure(log) when the source does not compile."""
        nvrtc = self._nvrtc()
        prog = nvrtc.createProgram(source, filename, (), ())
        try:
            try:
                nvrtc.compileProgram(prog, list(options))
            except nvrtc.NVRTCError:
                raise NvrtcFailure(nvrtc.getProgramLog(prog)) from None
            log = nvrtc.getProgramLog(prog)
            cubin = any(o.startswith("-arch=sm_") for o in options)
            binary = nvrtc.getCUBIN(prog) if cubin else nvrtc.getPTX(prog)
            return (binary.encode() if isinstance(binary, str) else bytes(binary)), log
        finally:
            nvrtc.destroyProgram(prog)


class KernelCache:
    """Compiles kernel descriptions to shared libraries once, and finds them again."""

    def __init__(self, root: str | os.PathLike | None = None, toolchain: Toolchain | None = None):
        # absolute: nvcc runs inside the build directory, so relative paths would point elsewhere
        root = Path(root).expanduser() if root is not None else default_cache_dir()
        self.root = root.resolve()
        self._toolchain = toolchain
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._verified: dict[Path, tuple[int, int]] = {}   # .so -> (size, mtime_ns) whose sha256 matched

    # ---------------------------------------------------------------------------------- paths
    @property
    def toolchain(self) -> Toolchain:
        if self._toolchain is None:
            self._toolchain = discover()
        return self._toolchain

    @property
    def kernels_dir(self) -> Path:
        return self.root / "kernels"

    @property
    def failed_dir(self) -> Path:
        return self.root / "failed"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    def _ensure_dirs(self) -> None:
        for d in (self.kernels_dir, self.failed_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------------------------ key
    def key(self, desc: KernelDesc, source: str | None = None) -> str:
        source = emitter.render(desc) if source is None else source
        tc = self.toolchain
        payload = json.dumps({
            "source": source,
            "flags": _key_flags(tc.flags(desc.arch)),
            "nvcc": tc.nvcc_version,
            "cutlass": tc.cutlass_version,
            "arch": desc.arch,
            "abi": ABI_VERSION,
        }, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    def _stem(self, desc: KernelDesc, key: str) -> str:
        return f"{desc.name}-{key[:16]}"

    # --------------------------------------------------------------------------------- lookup
    def _read_manifest(self, path: Path) -> dict | None:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and data.get("format") == MANIFEST_FORMAT else None

    def _verify(self, manifest: dict, key: str) -> Path | None:
        artifact = manifest.get("so", manifest.get("artifact"))     # .so (nvcc) or .cubin/.ptx (NVRTC)
        if manifest.get("key") != key or not isinstance(artifact, str):
            return None
        so = self.kernels_dir / artifact
        try:
            st = so.stat()
        except OSError:
            return None
        sig = (st.st_size, st.st_mtime_ns)
        if self._verified.get(so) == sig:
            return so
        if st.st_size != manifest.get("bytes") or _sha256_file(so) != manifest.get("sha256"):
            return None
        self._verified[so] = sig
        return so

    def lookup(self, desc: KernelDesc, source: str | None = None) -> Path | None:
        """Path of a verified library for `desc`, or None (no entry, or a corrupt one)."""
        source = emitter.render(desc) if source is None else source
        key = self.key(desc, source)
        manifest = self._read_manifest(self.kernels_dir / f"{self._stem(desc, key)}.json")
        return self._verify(manifest, key) if manifest else None

    def manifest(self, desc: KernelDesc) -> dict | None:
        key = self.key(desc)
        return self._read_manifest(self.kernels_dir / f"{self._stem(desc, key)}.json")

    def invalidate(self, desc: KernelDesc) -> None:
        """Drop the entry for `desc` (e.g. its .so failed to load) so the next get() rebuilds it."""
        key = self.key(desc)
        path = self.kernels_dir / f"{self._stem(desc, key)}.json"
        manifest = self._read_manifest(path)
        path.unlink(missing_ok=True)
        if manifest and isinstance(manifest.get("so"), str):
            so = self.kernels_dir / manifest["so"]
            self._verified.pop(so, None)
            so.unlink(missing_ok=True)

    # -------------------------------------------------------------------------------- compile
    def _lock(self, key: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())

    def get(self, desc: KernelDesc) -> Path:
        """Path of the library for `desc`, compiling it first when the cache has no valid entry."""
        source = emitter.render(desc)
        key = self.key(desc, source)
        with self._lock(key):
            found = self.lookup(desc, source)
            if found:
                return found
            return self._build(desc, source, key)

    def _build(self, desc: KernelDesc, source: str, key: str) -> Path:
        self._ensure_dirs()
        tc = self.toolchain
        stem = self._stem(desc, key)
        build = Path(tempfile.mkdtemp(prefix=f"{stem}.", dir=self.tmp_dir))
        try:
            src = build / f"{stem}.cu"
            src.write_text(source)
            out = build / f"{stem}.so"
            cmd = tc.command(src, out, desc.arch)
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(cmd, cwd=build, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
            except FileNotFoundError:
                raise ToolchainError(f"nvcc not found at {tc.nvcc}", "set CUTLASS_WSP_NVCC or CUDA_HOME") from None
            except subprocess.TimeoutExpired:
                self._fail(desc, stem, src, f"nvcc timed out after {COMPILE_TIMEOUT_S} s\n$ {' '.join(cmd)}")
            seconds = time.perf_counter() - t0
            log = (proc.stdout + proc.stderr).strip()
            if proc.returncode != 0 or not out.is_file():
                self._fail(desc, stem, src, f"$ {' '.join(cmd)}\n{log}\n(exit status {proc.returncode})")
            # Another process may have published this key while we compiled: use theirs.
            existing = self._read_manifest(self.kernels_dir / f"{stem}.json")
            if existing and (found := self._verify(existing, key)):
                return found
            return self._publish(desc, key, stem, src, out, seconds, tc, log)
        finally:
            shutil.rmtree(build, ignore_errors=True)

    def _publish(self, desc: KernelDesc, key: str, stem: str, src: Path, out: Path, seconds: float,
                 tc: Toolchain, log: str) -> Path:
        return self._publish_file(stem, key, out, src.read_text(), "so", {
            "name": desc.name, "desc": desc.as_dict(), "arch": desc.arch, "abi_version": ABI_VERSION,
            "nvcc": tc.nvcc, "nvcc_version": tc.nvcc_version, "cutlass_version": tc.cutlass_version,
            "flags": _key_flags(tc.flags(desc.arch)), "compile_seconds": round(seconds, 2),
            "log": log[-4000:],            # nvcc's warnings, if any
        })

    def _publish_file(self, stem: str, key: str, out: Path, source: str, field: str, info: dict) -> Path:
        """Move a finished build into kernels/ under a content-addressed name, then write its source and,
        last, its manifest (`field` names the binary: "so" or "artifact")."""
        sha = _sha256_file(out)
        size = out.stat().st_size
        final = self.kernels_dir / f"{stem}-{sha[:12]}{out.suffix}"
        os.replace(out, final)
        _atomic_write_text(self.kernels_dir / f"{stem}.cu", source, self.tmp_dir)
        manifest = {"format": MANIFEST_FORMAT, "key": key, **info, field: final.name, "sha256": sha, "bytes": size,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        _atomic_write_text(self.kernels_dir / f"{stem}.json", json.dumps(manifest, indent=1), self.tmp_dir)
        st = final.stat()
        self._verified[final] = (st.st_size, st.st_mtime_ns)
        return final

    def _fail(self, desc: KernelDesc, stem: str, src: Path, log: str) -> None:
        self._keep_failure(stem, src.read_text(), log.replace(str(src), str(self.failed_dir / f"{stem}.cu")),
                           f"nvcc could not build {desc.name}")

    def _keep_failure(self, stem: str, source: str, log: str, what: str) -> None:
        """Keep the source and the log under failed/ and raise the CompileError that names them."""
        self._ensure_dirs()
        kept = self.failed_dir / f"{stem}.cu"
        kept.write_text(source)
        log_path = self.failed_dir / f"{stem}.log"
        log_path.write_text(log + "\n")
        summary = describe_compile_error(log, kept)
        raise CompileError(f"{what} from {kept}:\n{summary}\n", f"full log: {log_path}",
                           source_path=str(kept), log=log)

    # ---------------------------------------------------------------------------------- NVRTC
    def nvrtc_key(self, source: str, options: tuple[str, ...], compiler: "NvrtcCompiler") -> str:
        payload = json.dumps({"compiler": "nvrtc", "source": source, "options": list(options),
                              "nvrtc": compiler.version()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    def get_nvrtc(self, source: str, name: str, *, options: tuple[str, ...] = (), arch: int,
                  compiler: "NvrtcCompiler | None" = None) -> Path:
        """Path of the cubin (or PTX) NVRTC builds from `source` for compute capability `arch` (e.g. 90),
        compiling it first when the cache has no valid entry. `options` are the caller's; the compiler
        adds the arch and CuPy's RawModule defaults (NvrtcCompiler.options), so a kernel built here is the
        one `cupy.RawModule(code=source, options=options)` would have built."""
        compiler = compiler or NvrtcCompiler()
        full = compiler.options(tuple(options), int(arch))
        key = self.nvrtc_key(source, full, compiler)
        stem = f"{name}-{key[:16]}"
        with self._lock(key):
            manifest = self._read_manifest(self.kernels_dir / f"{stem}.json")
            found = self._verify(manifest, key) if manifest else None
            if found:
                return found
            self._ensure_dirs()
            t0 = time.perf_counter()
            try:
                binary, log = compiler.compile(source, f"{stem}.cu", full)
            except NvrtcFailure as e:
                self._keep_failure(stem, source, e.log.replace(f"{stem}.cu", str(self.failed_dir / f"{stem}.cu")),
                                   f"NVRTC could not build {name}")
            build = Path(tempfile.mkdtemp(prefix=f"{stem}.", dir=self.tmp_dir))
            try:
                out = build / f"{stem}{compiler.suffix(int(arch))}"
                out.write_bytes(binary)
                return self._publish_file(stem, key, out, source, "artifact", {
                    "name": name, "compiler": "nvrtc", "nvrtc_version": compiler.version(), "options": list(full),
                    "compile_seconds": round(time.perf_counter() - t0, 2), "log": log[-4000:]})
            finally:
                shutil.rmtree(build, ignore_errors=True)

    def compile_many(self, descs: Iterable[KernelDesc], jobs: int | None = None) -> list[Path]:
        """Libraries for all `descs` (in order), building the missing ones `jobs` at a time (threads
        that each run one nvcc). Every build runs to the end; then the first failure is raised."""
        descs = list(descs)
        jobs = max(1, jobs or os.cpu_count() or 1)
        unique: dict[KernelDesc, None] = dict.fromkeys(descs)
        results: dict[KernelDesc, Path] = {}
        errors: list[tuple[KernelDesc, BaseException]] = []
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(jobs, len(unique) or 1)) as pool:
            futures = {pool.submit(self.get, d): d for d in unique}
            for fut in concurrent.futures.as_completed(futures):
                d = futures[fut]
                try:
                    results[d] = fut.result()
                except Exception as e:  # collected; re-raised below after the other builds finish
                    errors.append((d, e))
        if errors:
            d, first = errors[0]
            if len(errors) > 1 and isinstance(first, CompileError):
                names = ", ".join(e_d.name for e_d, _ in errors)
                raise CompileError(f"{len(errors)} of {len(unique)} kernels failed ({names}); first: {first.problem}",
                                   first.fix, source_path=first.source_path, log=first.log) from first
            raise first
        return [results[d] for d in descs]

    # ------------------------------------------------------------------------------ housekeeping
    def info(self) -> dict:
        """{'path', 'entries' (published kernels), 'bytes' (everything under the cache), 'failed'}."""
        entries = len(list(self.kernels_dir.glob("*.json"))) if self.kernels_dir.is_dir() else 0
        failed = len(list(self.failed_dir.glob("*.cu"))) if self.failed_dir.is_dir() else 0
        size = 0
        for d in (self.kernels_dir, self.failed_dir, self.tmp_dir):
            if d.is_dir():
                size += sum(p.stat().st_size for p in d.rglob("*") if p.is_file())
        return {"path": str(self.root), "entries": entries, "bytes": size, "failed": failed}

    def clear(self) -> int:
        """Delete every entry, failed source and build directory; returns how many entries there were.
        Only the cache's own subdirectories are removed, never other files under the root."""
        n = self.info()["entries"]
        for d in (self.kernels_dir, self.failed_dir, self.tmp_dir):
            shutil.rmtree(d, ignore_errors=True)
        self._verified.clear()
        return n


_default_cache: KernelCache | None = None
_default_guard = threading.Lock()


def default_cache() -> KernelCache:
    """Process-wide cache at default_cache_dir() (re-created if the environment moved it)."""
    global _default_cache
    with _default_guard:
        if _default_cache is None or _default_cache.root != default_cache_dir():
            _default_cache = KernelCache()
        return _default_cache

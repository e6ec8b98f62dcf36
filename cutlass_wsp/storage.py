"""Files the stores write: whole-file replacement, durable appends, one writer at a time, output folders.

Shared by the results store (sweep/results.py) and the tuning cache (kernels/store.py), so both
survive a kill and a second process the same way:

- `atomic_write_text(path, text)` / `atomic_write_bytes`: a temp file in the same folder, written,
  flushed and fsynced, then `os.replace`d over `path`. A reader sees the old file or the new one,
  never half of one; a failed write leaves the old file as it was and no temp file behind.
- `append_durably(path, data)`: append, flush, fsync: on disk before the call returns.
- `locked(path, wait=...)`: an exclusive `fcntl.flock` on `<path>.lock` for a `with` block. The holder
  writes its pid into the lock file so a refused process can say who holds it. The lock file is left
  in place afterwards (deleting it would race with a process about to lock it). Not re-entrant: a
  second `locked()` on the same path in the same process waits for the first like any other.
  Without fcntl (not POSIX) it does not lock; the atomic replace still keeps files whole.
- `ensure_dir(path, option=...)`: an output folder, created if missing and checked writable; bad
  paths (a file, /proc, no permission) become one InputError line naming the option.
  `folder_problem(path)` says what is wrong with such a path without creating anything.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from cutlass_wsp.errors import Busy, InputError

POLL_S = 0.05   # how often a waiting `locked()` tries again


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of `path`: `<path>.lock` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


# ---------------------------------------------------------------------------------------- writes
def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (best effort: not every platform opens folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Replace `path` with `data` atomically (temp file + fsync + os.replace); its folder is created.
    The new file keeps the mode of the one it replaces (else the umask's default, not 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)    # 0o666 & ~umask
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> Path:
    """`atomic_write_bytes` of `text` encoded (UTF-8 by default)."""
    return atomic_write_bytes(path, text.encode(encoding))


def append_durably(path: str | os.PathLike, data: bytes) -> None:
    """Append `data` to `path` (created with its folder if missing), flushed and fsynced before returning."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


# ------------------------------------------------------------------------------------------ lock
def _holder(fd: int) -> int | None:
    """The pid the current holder wrote into the lock file, if readable."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


@contextlib.contextmanager
def locked(path: str | os.PathLike, *, wait: bool | float = True) -> Iterator[Path]:
    """Hold the exclusive lock of `path` (`<path>.lock`) for the `with` block; yields the lock path.

    wait: True blocks until the lock is free; False tries once; a number of seconds keeps trying that
    long. When the lock stays taken: `Busy` (a WspError) naming the holder's pid, with `.holder_pid`."""
    lpath = lock_path(path)
    lpath.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:          # not POSIX: no lock, the atomic replace still keeps files whole
        yield lpath
        return
    fd = os.open(lpath, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = None if wait is True else time.monotonic() + (0.0 if wait is False else float(wait))
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if deadline is None else fcntl.LOCK_NB))
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    pid = _holder(fd)
                    who = f"another process (pid {pid})" if pid else "another process"
                    raise Busy(f"{path} is being written by {who}", "wait for it to finish",
                               path=Path(path), holder_pid=pid) from None
                time.sleep(POLL_S)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield lpath
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# -------------------------------------------------------------------------------- output folders
def _probe_writable(folder: Path) -> None:
    """Create and remove a file in `folder`; raises the OSError that writing there would raise."""
    with tempfile.TemporaryFile(dir=folder):
        pass


def folder_problem(path: str | os.PathLike) -> str | None:
    """Why `path` cannot serve as a writable folder, or None: it (or the nearest part of it that
    exists) is a file, or cannot be written. Only looks: leaves nothing behind (for `env`)."""
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return "is a file, not a folder" + ("" if existing == path else f" ({existing})")
    try:
        _probe_writable(existing)
    except OSError as e:
        return f"cannot be {'written' if existing == path else 'created'} ({e.strerror or e})"
    return None


def ensure_dir(path: str | os.PathLike, *, option: str = "--out") -> Path:
    """`path` as an existing, writable folder (created with its parents if missing). A path that is a
    file, cannot be created (under /proc, no permission) or cannot be written raises one InputError
    line naming `option`, the path and the fix."""
    path = Path(path)
    fix = f"give {option} a folder you can write to (it is created if missing)"
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {path} is a file, not a folder", fix)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):   # a parent is a file
        raise InputError(f"cannot create {option} folder {path}: a parent of it is a file", fix) from None
    except OSError as e:
        raise InputError(f"cannot create {option} folder {path}: {e.strerror or e}", fix) from None
    try:
        _probe_writable(path)
    except OSError as e:
        raise InputError(f"cannot write into {option} folder {path}: {e.strerror or e}", fix) from None
    return path

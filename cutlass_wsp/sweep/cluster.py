"""Where a sweep's Dask cluster comes from, and the one line that says how to install Dask.

- `--workers N|all` (one host): dask-cuda's LocalCUDACluster, one worker process per GPU, each pinned
  to its GPU with CUDA_VISIBLE_DEVICES, one thread each; its nannies restart a worker that dies.
  The scheduler allows no retry of a task whose worker died (`allowed-failures` 0): the point that
  killed it is recorded as a failure row (sweep/dispatch.py), not run again on the next worker.
- `--scheduler tcp://HOST:8786` (many hosts): an existing cluster, started with `dask scheduler` and
  one `dask-cuda-worker` per host, or by dask-jobqueue on Slurm/PBS (docs/distributed.md); a
  `--scheduler FILE.json` is a scheduler file (`dask scheduler --scheduler-file FILE.json`).

Dask (`distributed`, `dask_cuda`) is the optional extra `distributed`, imported only here, inside the
functions: without it, the single-GPU sweep is unchanged and these options say what to install.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

from cutlass_wsp.errors import InputError

INSTALL = "pip install -e '.[cuda13,distributed]' (or: pip install 'dask[distributed]' dask-cuda)"
CONNECT_TIMEOUT_S = 30


def parse_workers(text: str) -> int | str:
    """--workers: a positive number of GPUs, or 'all'."""
    value = str(text).strip().lower()
    if value == "all":
        return "all"
    try:
        n = int(value)
    except ValueError:
        raise InputError(f"--workers {text!r} is not a number of GPUs", "give a number (2) or all") from None
    if n < 1:
        raise InputError(f"--workers {text!r}: a sweep needs at least one worker", "give a number (2) or all")
    return n


def require_engine(option: str, cuda: bool) -> None:
    """InputError (one line) naming what to install when Dask, or dask-cuda with `cuda`, is missing."""
    wanted = [("distributed", "dask[distributed]")] + ([("dask_cuda", "dask-cuda")] if cuda else [])
    missing = [dist for mod, dist in wanted if importlib.util.find_spec(mod) is None]
    if missing:
        raise InputError(f"{option} runs the sweep on Dask, and {' and '.join(missing)} "
                         f"{'is' if len(missing) == 1 else 'are'} not installed", INSTALL)


def _visible_gpus() -> int:
    """The GPUs LocalCUDACluster would use (CUDA_VISIBLE_DEVICES, else all that NVML sees)."""
    from cutlass_wsp.errors import GpuUnavailable

    try:
        from dask_cuda.utils import get_n_gpus

        return get_n_gpus()
    except Exception as e:  # noqa: BLE001 -- NVML missing or no driver: one line, no traceback
        raise GpuUnavailable(f"--workers: no GPU found on this host ({type(e).__name__}: {e})",
                             "run it on a machine with NVIDIA GPUs and their driver") from None


def check_workers(workers: int | str) -> None:
    """InputError when this host has fewer GPUs than `workers` (NVML: no CUDA context is made)."""
    n = _visible_gpus()
    if workers != "all" and workers > n:
        raise InputError(f"--workers {workers}: this host has {n} GPU{'s' * (n != 1)}",
                         f"give --workers {n} or fewer, or all")


def worker_config(n_workers: int) -> dict:
    """Dask settings for the one-host cluster:
    - allowed-failures 0: a point that kills its worker fails at once instead of killing the next;
    - no statistical profiler in the workers (it samples the measuring thread every 10 ms: GIL time
      taken from the Python between kernel launches);
    - the host's cores shared among the workers for BLAS/OpenMP (the nanny's default is 1 thread:
      the NumPy work of a point, masks and weights, would run slower than on one GPU alone)."""
    threads = str(max(1, (os.cpu_count() or 1) // max(1, n_workers)))
    return {"distributed.scheduler.allowed-failures": 0,
            "distributed.worker.profile.enabled": False,
            "distributed.nanny.pre-spawn-environ": {"MALLOC_TRIM_THRESHOLD_": 65536, "OMP_NUM_THREADS": threads,
                                                    "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}}


@contextlib.contextmanager
def local_gpu_cluster(workers: int | str) -> Iterator:
    """A Client of a LocalCUDACluster on this host's GPUs: `workers` of them (the first ones of
    CUDA_VISIBLE_DEVICES) or 'all'."""
    import dask
    from dask_cuda import LocalCUDACluster
    from distributed import Client

    check_workers(workers)
    with dask.config.set(worker_config(_visible_gpus() if workers == "all" else workers)):
        cluster = LocalCUDACluster(n_workers=None if workers == "all" else workers, threads_per_worker=1,
                                   memory_limit=0, dashboard_address=None)
    try:
        with Client(cluster) as client:
            client.wait_for_workers(len(cluster.workers))
            yield client
    finally:
        cluster.close()


@contextlib.contextmanager
def remote_cluster(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> Iterator:
    """A Client of the running Dask scheduler at `address` (tcp://HOST:PORT, or a scheduler file)."""
    from distributed import Client

    kwargs = {"scheduler_file": address} if address.endswith(".json") else {"address": address}
    if "scheduler_file" in kwargs and not Path(address).is_file():
        raise InputError(f"--scheduler {address}: no such scheduler file",
                         "give the file `dask scheduler --scheduler-file` wrote, or tcp://HOST:8786")
    try:
        client = Client(timeout=timeout_s, **kwargs)
    except (OSError, TimeoutError, ValueError) as e:
        raise InputError(f"could not reach the Dask scheduler at {address} ({type(e).__name__}: {e})",
                         "start it (dask scheduler; docs/distributed.md) or check the address") from None
    with client:
        yield client

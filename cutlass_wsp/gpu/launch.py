"""What every kernel launch from Python needs: the SM count of a device and a raw stream pointer."""

from __future__ import annotations

import functools
from typing import Any


@functools.lru_cache(maxsize=None)
def sm_count(device_id: int) -> int:
    import cupy

    return int(cupy.cuda.Device(device_id).attributes["MultiProcessorCount"])


def stream_object(stream: Any):
    """A CuPy stream for `stream`: None = CuPy's current stream, an int = a raw cudaStream_t."""
    import cupy

    if stream is None:
        return cupy.cuda.get_current_stream()
    if isinstance(stream, int):
        return cupy.cuda.ExternalStream(stream)
    return stream


def stream_pointer(stream: Any) -> int:
    return stream if isinstance(stream, int) else int(stream_object(stream).ptr)


def bound_stream_pointer(stream: Any) -> int | None:
    """What a prepared launcher keeps: the raw pointer of an explicit stream, or None, meaning CuPy's
    current stream *at launch time* (so a launcher prepared once follows a timing loop's or a CUDA-graph
    capture's stream)."""
    return None if stream is None else stream_pointer(stream)


def launch_stream_pointer(bound: int | None) -> int:
    return bound if bound is not None else stream_pointer(None)

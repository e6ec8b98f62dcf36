"""torch on CuPy's buffers and stream: zero-copy tensor views and torch's handle on CuPy's current stream,
so a torch call is ordered and timed like any other launch (gpu/timing.py records events on CuPy's
stream). Used by cuDNN through torch (gpu/cudnn.py) and torch's cuSPARSELt binding (gpu/torch_cslt.py).
torch is imported inside the functions only."""

from __future__ import annotations

from typing import Any

from cutlass_wsp.gpu.launch import stream_pointer

TORCH_VALUES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32", "tf32": "float32"}


def torch_dtype(name: str):
    """torch's dtype of our dtype name (tf32 runs on float32 storage)."""
    import torch

    return getattr(torch, TORCH_VALUES[name])


def current_stream(cache: dict[int, Any] | None = None):
    """torch's stream object for CuPy's current stream (0, the legacy default stream, is torch's default);
    `cache` keeps the ExternalStream objects made (one per pointer)."""
    import cupy
    import torch

    ptr = stream_pointer(None)
    device = torch.device("cuda", cupy.cuda.Device().id)
    if ptr == 0:
        return torch.cuda.default_stream(device)
    cache = {} if cache is None else cache
    s = cache.get(ptr)
    if s is None:
        s = cache[ptr] = torch.cuda.ExternalStream(ptr, device=device)
    return s


def view(a: Any, values: Any):
    """Zero-copy torch tensor of a CuPy storage array, as torch dtype `values` (bf16 is stored as uint16
    bits: through int16, which every torch's DLPack knows)."""
    import cupy
    import torch

    if a.dtype == cupy.uint16:
        return torch.from_dlpack(a.view(cupy.int16)).view(values)
    return torch.from_dlpack(a)

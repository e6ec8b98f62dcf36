"""2:4 through torch's cuSPARSELt binding (torch._cslt_compress / torch._cslt_sparse_mm): one call per
Winograd position, since the binding multiplies one [M, K] by one [K, N]. The binding allocates its
result, so each position's result is copied into Y[i]: the timed launch is L library calls (each builds
its descriptors and plan on the host, the binding's way) plus L copies of an [M, N] block, which the
ctypes path (gpu/cusparselt.py, one strided-batched call writing Y) does not pay. torch is imported
lazily; a torch without the binding, or without CUDA, is Unsupported in one line."""

from __future__ import annotations

from typing import Any

from cutlass_wsp.errors import InputError, KernelError, Unsupported
from cutlass_wsp.gpu.cusparselt import batch_descriptors


def available() -> tuple[bool, str]:
    """(True, 'torch 2.11.0+cu130') or (False, why not). Never raises."""
    try:
        import torch
    except ImportError:
        return False, "torch is not installed"
    except Exception as e:  # a broken install
        return False, f"torch failed to import ({type(e).__name__}: {e})"
    if not hasattr(torch, "_cslt_compress") or not hasattr(torch, "_cslt_sparse_mm"):
        return False, f"torch {torch.__version__} has no _cslt_compress/_cslt_sparse_mm"
    try:
        if not torch.cuda.is_available():
            return False, "torch sees no CUDA GPU"
        cslt = getattr(getattr(torch.backends, "cusparselt", None), "is_available", None)
        if cslt is not None and not cslt():
            return False, f"torch {torch.__version__} was built without cuSPARSELt"
    except Exception as e:
        return False, f"torch cannot use CUDA ({type(e).__name__}: {e})"
    return True, f"torch {torch.__version__}"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


class TorchCslt:
    """Y[i] = W[i](2:4) · X[i] for i < L through torch's binding, on CuPy's current stream. `W` is the
    masked dense weights on the device in the storage dtype; compressed once here."""

    def __init__(self, W: Any, X: Any, Y: Any, *, dtype: str = "fp16"):
        ok, why = available()
        if not ok:
            raise Unsupported(f"2:4 through torch's cuSPARSELt binding unavailable: {why}",
                              "pip install torch (a CUDA build with cuSPARSELt), or run the cusparselt implementation")
        import torch

        from cutlass_wsp.gpu.torch_interop import current_stream, torch_dtype, view

        if W.ndim != 3 or X.ndim != 3 or Y.ndim != 3 or X.shape[:2] != (W.shape[0], W.shape[2]) \
                or Y.shape[:2] != W.shape[:2]:
            raise InputError(f"shapes do not chain: W {W.shape}, X {X.shape}, Y {Y.shape}",
                             "pass W[L, M, K], X[L, K, N], Y[L, M, >= N]")
        L, M, K = W.shape
        self.desc = batch_descriptors(L, M, K, X.shape[2], dtype=dtype, y_cols=Y.shape[2])
        self.version = torch.__version__
        self._values = torch_dtype(dtype)
        self._streams: dict[int, Any] = {}
        self._current, self._view = current_stream, view
        self._torch = torch
        self._views: dict[tuple, tuple] = {}
        Wt = view(W, self._values)
        try:
            with torch.cuda.stream(current_stream(self._streams)):
                self._compressed = [torch._cslt_compress(Wt[i]) for i in range(L)]
            import cupy

            cupy.cuda.get_current_stream().synchronize()    # W may be freed once this returns
        except RuntimeError as e:
            raise Unsupported(f"torch._cslt_compress refused W_i [{M}, {K}] {dtype}: {_first_line(e)}",
                              "record 2:4 through torch as unsupported for this shape or GPU") from None

    def _operands(self, X, Y) -> tuple:
        key = (X.data.ptr, Y.data.ptr, X.shape, Y.shape)
        found = self._views.get(key)
        if found is None:
            N = X.shape[2]
            found = self._views[key] = (self._view(X, self._values), self._view(Y, self._values)[..., :N], N)
        return found

    def run(self, X, Y) -> None:
        """L calls of torch._cslt_sparse_mm, each result copied into Y[i] (columns past X's N untouched)."""
        torch = self._torch
        Xt, Yt, _ = self._operands(X, Y)
        try:
            with torch.cuda.stream(self._current(self._streams)):
                for i, A in enumerate(self._compressed):
                    Yt[i].copy_(torch._cslt_sparse_mm(A, Xt[i]))
        except RuntimeError as e:
            raise KernelError(f"torch._cslt_sparse_mm failed: {_first_line(e)}",
                              "check the GPU state; the shapes passed the cuSPARSELt checks") from None

    def close(self) -> None:
        self._compressed = []
        self._views = {}

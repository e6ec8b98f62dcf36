"""Winograd-domain weights W[L, n, c] to prune: synthetic He-initialised ones, or a model's, from disk.

Synthetic weights go through the real filter transform so the p² positions differ in magnitude the
way a trained model's do (corner positions copy one tap of g, inner ones average several); that is
what makes a global threshold prune the positions unevenly.
"""

from __future__ import annotations

import operator
from pathlib import Path

import numpy as np

from cutlass_wsp.errors import InputError, Unsupported
from cutlass_wsp.layers import Layer
from cutlass_wsp.winograd import filter_transform, tile_m


def _filters_and_channels(layer) -> tuple[int, int]:
    if isinstance(layer, Layer):
        return layer.n, layer.c
    try:
        n, c = (operator.index(v) for v in layer)
    except (TypeError, ValueError):
        raise InputError(f"weights for {layer!r}", "pass a Layer or an (n, c) pair of integers") from None
    if n < 1 or c < 1:
        raise InputError(f"weights for n={n}, c={c}", "n and c must be >= 1")
    return n, c


def he_spatial_filters(layer: Layer | tuple[int, int], seed: int = 0) -> np.ndarray:
    """float64 g[n, c, 3, 3]: He-normal 3×3 filters (std sqrt(2 / (9c)), fan-in 9c), the ones
    `he_winograd_weights` transforms for the same seed."""
    n, c = _filters_and_channels(layer)
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, c, 3, 3)) * np.sqrt(2.0 / (9 * c))


def he_winograd_weights(layer: Layer | tuple[int, int], p: int, seed: int = 0) -> np.ndarray:
    """float32 W[p², n, c]: He-normal 3×3 filters g (std sqrt(2 / (9c)), fan-in 9c) through G g Gᵀ."""
    m = tile_m(p)
    return filter_transform(he_spatial_filters(layer, seed), m).astype(np.float32)


def _to_winograd(arr: np.ndarray, p: int, where: str, expect: tuple[int, int] | None) -> np.ndarray:
    """Spatial [n, c, 3, 3] → transformed; Winograd [p², n, c] → as is; anything else → InputError."""
    m = tile_m(p)
    accepted = f"spatial [n, c, 3, 3] or Winograd-domain [{p * p}, n, c] (p={p})"
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InputError(f"{where} has dtype {arr.dtype}", f"store real numbers, {accepted}")
    if arr.ndim == 4 and arr.shape[2:] == (3, 3) and min(arr.shape) >= 1:
        W = filter_transform(arr.astype(np.float64), m).astype(np.float32)
    elif arr.ndim == 3 and arr.shape[0] == p * p and min(arr.shape) >= 1:
        W = arr.astype(np.float32)
    else:
        raise InputError(f"{where} has shape {tuple(arr.shape)}", f"store {accepted}")
    if expect is not None and W.shape[1:] != tuple(expect):
        raise InputError(f"{where} has n={W.shape[1]}, c={W.shape[2]}",
                         f"this layer needs n={expect[0]}, c={expect[1]}: pick the matching key")
    return W


def to_winograd(arr, p: int, where: str, expect: tuple[int, int] | None = None) -> np.ndarray:
    """float32 W[p², n, c] from one array already in memory (spatial [n, c, 3, 3] is filter-transformed,
    [p², n, c] is taken as is); `where` names it in errors. For callers that read a file once and take
    several layers from it (cutlass_wsp/layer_inputs.py)."""
    return _to_winograd(np.asarray(arr), p, where, expect)


def _pick(arrays: dict, key: str | None, path: Path, what: str) -> tuple[str, object]:
    """The array under `key`, or the only candidate when key is None."""
    if key is not None:
        if key not in arrays:
            names = ", ".join(sorted(arrays)[:8]) + (", ..." if len(arrays) > 8 else "")
            raise InputError(f"{path} has no {what} {key!r}", f"use one of: {names}")
        return key, arrays[key]
    if len(arrays) == 1:
        return next(iter(arrays.items()))
    names = ", ".join(sorted(arrays)[:8]) + (", ..." if len(arrays) > 8 else "")
    raise InputError(f"{path} holds {len(arrays)} {what}s", f"choose one with key=: {names}" if arrays
                     else "store a [n, c, 3, 3] or [L, n, c] array")


def torch_load(path: Path, numpy_fix: str, torch_fix: str):
    """(torch, what a .pt/.pth file holds), a training checkpoint's 'state_dict' unwrapped; without torch or an
    unreadable file, one line naming the fix (`numpy_fix`: how to save it without torch; `torch_fix`: how with)."""
    try:
        import torch
    except ImportError:
        raise Unsupported(f"{path} is a PyTorch file", "install torch to read .pt files "
                          f"(pip install 'cutlass-wsp[cudnn]'), or {numpy_fix}") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputError(f"{path}: torch could not read it ({type(e).__name__}: {e})", torch_fix) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]  # training checkpoints wrap it
    return torch, obj


def _load_torch(path: Path, key: str | None, p: int, expect) -> np.ndarray:
    torch, obj = torch_load(path, "save the array with numpy.save", "save a state_dict or a tensor with torch.save")
    if torch.is_tensor(obj):
        name, tensor = str(path), obj
    elif isinstance(obj, dict):
        tensors = {k: v for k, v in obj.items() if torch.is_tensor(v)}
        if key is None:  # only 3×3 convs (or Winograd arrays) are candidates
            tensors = {k: v for k, v in tensors.items()
                       if (v.ndim == 4 and tuple(v.shape[2:]) == (3, 3)) or (v.ndim == 3 and v.shape[0] == p * p)}
        k, tensor = _pick(tensors, key, path, "tensor")
        name = f"{path}[{k!r}]"
        if not torch.is_tensor(tensor):
            raise InputError(f"{name} is not a tensor", "pick a conv weight key")
    else:
        raise InputError(f"{path} holds a {type(obj).__name__}", "save a state_dict or a tensor")
    return _to_winograd(tensor.detach().to(torch.float32).cpu().numpy(), p, name, expect)


def load_weights(path: str | Path, key: str | None = None, *, p: int,
                 expect: tuple[int, int] | None = None) -> np.ndarray:
    """float32 W[p², n, c] from a .npy/.npz (spatial [n, c, 3, 3] arrays are filter-transformed;
    [p², n, c] arrays are already Winograd-domain) or a PyTorch .pt/.pth state_dict or tensor.
    `key` picks the array/tensor when the file holds several; `expect=(n, c)` checks the layer."""
    path = Path(path)
    tile_m(p)  # reject a bad p before reading anything
    if not path.is_file():
        raise InputError(f"weights file {str(path)!r} not found", "pass an existing .npy, .npz, .pt or .pth file")
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        return _load_torch(path, key, p, expect)
    if suffix not in (".npy", ".npz"):
        raise InputError(f"{path}: unknown weights-file type {suffix or '(none)'!r}", "use .npy, .npz, .pt or .pth")
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as e:
        raise InputError(f"{path}: numpy could not read it ({type(e).__name__}: {e})",
                         "save the array with numpy.save / numpy.savez") from None
    if suffix == ".npy":
        if key is not None:
            raise InputError(f"{path} is a single array; key={key!r} does not apply", "leave key unset")
        return _to_winograd(loaded, p, str(path), expect)
    with loaded:
        arrays = {k: loaded[k] for k in loaded.files}
    k, arr = _pick(arrays, key, path, "array")
    return _to_winograd(arr, p, f"{path}[{k!r}]", expect)

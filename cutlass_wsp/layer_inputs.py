"""Arrays of many layers from one user file, found by layer name: conv weights and calibration activations.

A file is read once, whatever the number of layers taken from it:
  .npz      one array per layer, under the layer's name (see `key_candidates`)
  .npy      one array: serves a single layer only
  .pt/.pth  (weights only) a torch state_dict or checkpoint, read with torch on the CPU
Names tried for layer `vgg16.conv4_2`: 'vgg16.conv4_2', 'conv4_2', torchvision's 'features.19' (VGG-16
only), each also with '.weight' (weights) or '.input' (activations); a 'module.' prefix in the file
(a DataParallel checkpoint) is ignored. ResNet layers are named as in torchvision ('layer1.0.conv1'), so
a torchvision state_dict needs no renaming.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cutlass_wsp.errors import InputError, Unsupported
from cutlass_wsp.layers import Layer

# torchvision's vgg16().features index of each 3×3 conv
VGG16_FEATURES = {"conv1_1": 0, "conv1_2": 2, "conv2_1": 5, "conv2_2": 7, "conv3_1": 10, "conv3_2": 12,
                  "conv3_3": 14, "conv4_1": 17, "conv4_2": 19, "conv4_3": 21, "conv5_1": 24, "conv5_2": 26,
                  "conv5_3": 28}
WEIGHT_SUFFIX, INPUT_SUFFIX = ".weight", ".input"


def short_name(layer: Layer) -> str:
    return layer.name.removeprefix(f"{layer.net}.")


def key_candidates(layer: Layer, suffix: str) -> list[str]:
    """Names a file may store `layer`'s array under, most specific first."""
    short = short_name(layer)
    names = [layer.name, short]
    if layer.net == "vgg16" and short in VGG16_FEATURES:
        names.append(f"features.{VGG16_FEATURES[short]}")
    return list(dict.fromkeys(names + [n + suffix for n in names]))


def _listing(keys, limit: int = 6) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else "") if keys else "none"


class ArrayFile:
    """One .npy/.npz (or, with `torch_ok`, .pt/.pth) file of arrays, read once; `what` names it in errors."""

    def __init__(self, path: str | Path, what: str, *, torch_ok: bool = False):
        self.path = Path(path)
        self.what = what
        accepted = ".npy, .npz" + (", .pt or .pth" if torch_ok else "")
        if not self.path.is_file():
            raise InputError(f"{what} file {str(self.path)!r} not found", f"pass an existing {accepted} file")
        suffix = self.path.suffix.lower()
        self._arrays: dict[str, object] = {}
        self.single = suffix == ".npy"
        if suffix in (".pt", ".pth") and torch_ok:
            self._arrays = _torch_arrays(self.path)
        elif suffix in (".npy", ".npz"):
            try:
                loaded = np.load(self.path, allow_pickle=False)
                if suffix == ".npy":
                    self._arrays = {str(self.path): loaded}
                else:
                    with loaded:
                        self._arrays = {k: loaded[k] for k in loaded.files}
            except Exception as e:
                raise InputError(f"{self.path}: numpy could not read it ({type(e).__name__}: {e})",
                                 "save the arrays with numpy.save / numpy.savez") from None
        else:
            raise InputError(f"{self.path}: unknown {what}-file type {suffix or '(none)'!r}", f"use {accepted}")
        self._by_name = {k.removeprefix("module."): k for k in self._arrays}

    @property
    def keys(self) -> list[str]:
        return list(self._arrays)

    def find(self, layer: Layer, suffix: str) -> tuple[str, np.ndarray] | None:
        """(where, array) of `layer`, or None when the file holds nothing under its names. A .npy file's one
        array serves any layer (the caller makes sure only one layer asks)."""
        if self.single:
            (name, arr), = self._arrays.items()
            return name, np.asarray(arr)
        for k in key_candidates(layer, suffix):
            if k in self._by_name:
                real = self._by_name[k]
                return f"{self.path}[{real!r}]", np.asarray(self._arrays[real])
        return None

    def require_single_layer(self, layers: list[Layer]) -> None:
        if self.single and len(layers) > 1:
            raise InputError(f"{self.path} holds one array but {len(layers)} layers need {self.what}",
                             f"save a .npz with one array per layer name, e.g. {key_candidates(layers[0], '')[1]!r}")

    def missing(self, layer: Layer, suffix: str) -> InputError:
        return InputError(f"{self.path} has no {self.what} for {layer.name} (it holds {_listing(self._arrays)})",
                          f"store them under one of {', '.join(key_candidates(layer, suffix))}")


def _torch_arrays(path: Path) -> dict[str, np.ndarray]:
    from cutlass_wsp.weights import torch_load

    torch, obj = torch_load(path, "save the arrays with numpy.savez", "save a state_dict with torch.save")
    if not isinstance(obj, dict):
        raise InputError(f"{path} holds a {type(obj).__name__}, not a state_dict", "save model.state_dict()")
    return {k: v.detach().to(torch.float32).cpu().numpy() for k, v in obj.items() if torch.is_tensor(v)}


class WeightFile:
    """Winograd-domain weights W[p², n, c] of each layer from one file (spatial [n, c, 3, 3] arrays are
    filter-transformed)."""

    def __init__(self, path: str | Path):
        self.file = ArrayFile(path, "weights", torch_ok=True)

    @property
    def path(self) -> Path:
        return self.file.path

    def weights(self, layer: Layer, p: int) -> np.ndarray:
        from cutlass_wsp.weights import to_winograd

        found = self.file.find(layer, WEIGHT_SUFFIX)
        if found is None:
            raise self.file.missing(layer, WEIGHT_SUFFIX)
        where, arr = found
        return to_winograd(arr, p, where, expect=(layer.n, layer.c))


class ActivationFile:
    """Calibration inputs d[B, c, H, W] (NCHW; a [c, H, W] array is one image) of each layer from one file.
    A layer the file does not name gets None (its caller falls back to random inputs and says so)."""

    def __init__(self, path: str | Path):
        self.file = ArrayFile(path, "activations")

    @property
    def path(self) -> Path:
        return self.file.path

    def activations(self, layer: Layer) -> np.ndarray | None:
        found = self.file.find(layer, INPUT_SUFFIX)
        if found is None:
            return None
        where, arr = found
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise InputError(f"{where} has dtype {arr.dtype}", "store real numbers")
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[1] != layer.c or min(arr.shape) < 1:
            raise InputError(f"{where} has shape {tuple(arr.shape)}",
                             f"{layer.name} takes NCHW input with c={layer.c}: store [B, {layer.c}, H, W]")
        if not np.isfinite(arr).all():
            raise InputError(f"{where} contains NaN or inf", "store finite activations")
        return arr

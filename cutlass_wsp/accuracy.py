"""Accuracy proxies of a pruned Winograd layer, computed on the CPU without datasets (docs/abwsp.md).

For one layer, its Winograd weights W[L, n, c] and a small calibration input d[B, c, h, w]:

  energy_retained  share of W's squared L2 norm the mask keeps: the group-LASSO measure the pruning
                   criterion itself ranks units by (`pruning.Pruned.energy_retained`)
  output_error     ‖out_pruned − out_dense‖ / ‖out_dense‖, out = output_transform(W_i · X_i) over the
                   calibration tiles: what the mask does to the layer's output on those inputs

Calibration inputs are random by default (a rectified standard normal, like post-ReLU activations, seeded
by the layer name) or the layer's real input from a file (layer_inputs.py); either is cut to `images`
images and a centred crop of at most `size` × `size`, so VGG-16 takes seconds. Weights are He-initialised
(seeded by the layer name) unless a file gives the real ones.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from cutlass_wsp.errors import InputError
from cutlass_wsp.layers import Layer

DEFAULT_IMAGES = 2
DEFAULT_SIZE = 28


@dataclass(frozen=True)
class Proxy:
    """The proxies of one mask: `pattern` (wsp-r, wsp-c, ...) at `ratio` with `balance`."""

    pattern: str
    ratio: float
    balance: str
    energy_retained: float
    output_error: float
    achieved_ratio: float
    kept_per_position: tuple[int, ...]

    def to_dict(self) -> dict:
        return {"pattern": self.pattern, "ratio": self.ratio, "balance": self.balance,
                "energy_retained": self.energy_retained, "output_error": self.output_error,
                "achieved_ratio": self.achieved_ratio, "kept_per_position": list(self.kept_per_position)}


def layer_seed(layer: Layer) -> int:
    """A seed of the layer's name: the same layer draws the same weights and inputs in every run."""
    return zlib.crc32(layer.name.encode())


def random_activations(layer: Layer, images: int = DEFAULT_IMAGES, size: int = DEFAULT_SIZE) -> np.ndarray:
    """float32 [images, c, h, w] with h, w = min(H, size), min(W, size): max(N(0, 1), 0), seeded by the layer."""
    _check_calibration(images, size)
    rng = np.random.default_rng(layer_seed(layer) ^ 0x5EED)
    d = rng.standard_normal((images, layer.c, min(layer.H, size), min(layer.W, size)), dtype=np.float32)
    return np.maximum(d, 0, out=d)


def crop(d: np.ndarray, images: int = DEFAULT_IMAGES, size: int = DEFAULT_SIZE) -> np.ndarray:
    """The first `images` images of d[B, c, H, W], centred crop to at most size × size, as float32."""
    _check_calibration(images, size)
    B, _, H, W = d.shape
    h, w = min(H, size), min(W, size)
    y0, x0 = (H - h) // 2, (W - w) // 2
    return np.ascontiguousarray(d[:images, :, y0:y0 + h, x0:x0 + w], dtype=np.float32)


def _check_calibration(images, size) -> None:
    for what, v in (("calibration images", images), ("calibration size", size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InputError(f"{what} {v!r}", "use a whole number >= 1")


class LayerProbe:
    """The dense layer's output on one calibration input, and the proxies of masks of its weights."""

    def __init__(self, W: np.ndarray, d: np.ndarray, p: int):
        from cutlass_wsp.winograd import input_transform, tile_m

        W = np.asarray(W)
        d = np.asarray(d)
        if W.ndim != 3 or W.shape[0] != p * p:
            raise InputError(f"Winograd weights have shape {W.shape}", f"pass W[{p * p}, n, c] for p={p}")
        if d.ndim != 4 or d.shape[1] != W.shape[2]:
            raise InputError(f"calibration input has shape {d.shape}", f"pass d[B, c={W.shape[2]}, H, W]")
        self.p, self.m = p, tile_m(p)
        self.W = W.astype(np.float32)
        self.B, _, self.H, self.Wd = d.shape
        self.X = input_transform(d.astype(np.float32), self.m)          # [L, c, T]
        self.reference = self._output(self.W)
        self.reference_norm = float(np.linalg.norm(self.reference))

    def _output(self, W: np.ndarray) -> np.ndarray:
        from cutlass_wsp.winograd import output_transform

        return output_transform(np.matmul(W, self.X), self.m, self.B, self.H, self.Wd)

    def output_error(self, mask: np.ndarray) -> float:
        """‖out(W·mask) − out(W)‖ / ‖out(W)‖ (0 when the dense output is all zero and so is the pruned one)."""
        diff = float(np.linalg.norm(self._output(np.where(mask, self.W, 0.0).astype(np.float32)) - self.reference))
        if self.reference_norm == 0.0:
            return 0.0 if diff == 0.0 else math.inf
        return diff / self.reference_norm

    def proxy(self, pattern: str, ratio: float, balance: str) -> Proxy:
        from cutlass_wsp.pruning import prune

        pr = prune(self.W, pattern, ratio, balance=balance)
        return Proxy(pattern=pattern, ratio=float(ratio), balance=balance, energy_retained=pr.energy_retained,
                     output_error=self.output_error(pr.mask), achieved_ratio=pr.achieved_ratio,
                     kept_per_position=tuple(int(k) for k in pr.kept_per_position))

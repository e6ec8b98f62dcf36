"""2:4 semi-structured sparsity in the Winograd domain: each W_i[n, c] keeps 2 of every 4 consecutive
weights along c (the GEMM's K), the pattern NVIDIA's sparse tensor cores run (cuSPARSELt, CUTLASS sparse
GEMM); exactly 50% of every W_i, so the p² GEMMs stay one uniform batch.

What cuSPARSELt documents (docs.nvidia.com/cuda/cusparselt, types.html and functions.html):
- `CUSPARSELT_SPARSITY_50_PERCENT` is "2:4 for half, bfloat16, int, int8, e4m3, e5m2" and 1:2 for float;
  the structured operand is described by `cusparseLtStructuredDescriptorInit(rows, cols, ld, alignment,
  valueType, order, sparsity)`; for a row-major, non-transposed A (M×K) the groups of 4 run along each
  row, i.e. along K = c here.
- the structured matrix is given to the library *uncompressed* (pruned in place, W with the zeros) and
  packed by `cusparseLtSpMMACompress(handle, plan, d_dense, d_compressed, d_compressed_buffer, stream)`
  into a buffer of `cusparseLtSpMMACompressedSize` bytes whose internal layout is not documented;
  `cusparseLtSpMMAPruneCheck` verifies the pattern on the device. So the GPU path uploads
  `SemiStructured.dense_weights()` and lets the library compress (cutlass_wsp/gpu/cusparselt.py).
- hipSPARSELt's storage-format page (rocm.docs.amd.com/projects/hipSPARSELt, "storage format") spells
  out the logical form both libraries share: the compressed matrix holds the M × K/2 kept values in row
  order, and the metadata holds, for each kept value, its index (0-3) inside its group of 4 along the row,
  "the contents or structure of the metadata [being] dependent on the chosen solution by the backend".

What this module implements is that logical form, as the host reference and as the input a hand-written
(e.g. CUTLASS sparse) kernel would reorder: `values[L, n, c/2]` (kept weights, in column order) and
`indices[L, n, c/2]` (uint8, 0-3, ascending within each group), packed as `metadata[L, n, ceil(c/16)]`
uint16: group q of a row contributes the 4-bit nibble idx0 | idx1 << 2 at bits 4·(q mod 4), groups in
increasing K, the lowest group in the lowest bits (0b0100 = elements 0 and 1 ... 0b1110 = elements 2
and 3; meant to match PTX's mma.sp metadata nibbles for 16-bit types, not re-read in the PTX ISA here). Pad nibbles (c not a multiple
of 16) are 0b0100. The per-thread register interleaving mma.sp wants is a kernel's business, not this
layout's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cutlass_wsp.errors import InputError
from cutlass_wsp.pruning import Pruned, check_weights

PATTERN = "2:4"
GROUP, KEEP = 4, 2
GROUPS_PER_WORD = 4           # 4-bit nibble per group in a uint16
PAD_NIBBLE = 0b0100           # elements 0 and 1


def _check_weights(W) -> np.ndarray:
    W = check_weights(W, winograd=False)
    if W.shape[2] % GROUP:
        raise InputError(f"2:4 sparsity needs c divisible by 4; this layer has c={W.shape[2]}",
                         "leave this layer dense (layer 1, c = 3, is never pruned)")
    return W


def mask_2to4(W, *, importance=None) -> np.ndarray:
    """bool [L, n, c]: in every group of 4 consecutive weights along c, the 2 with the largest |w| (or
    `importance`, same shape; ties: the lower index wins)."""
    W = _check_weights(W)
    score = np.abs(W.astype(np.float64)) if importance is None else np.asarray(importance, dtype=np.float64)
    if score.shape != W.shape or not np.isfinite(score).all():
        raise InputError(f"importance has shape {score.shape}", f"pass finite scores of shape {W.shape}")
    L, n, c = W.shape
    groups = score.reshape(L, n, c // GROUP, GROUP)
    order = np.argsort(-groups, axis=3, kind="stable")[..., :KEEP]
    mask = np.zeros(groups.shape, dtype=bool)
    np.put_along_axis(mask, order, True, axis=3)
    return mask.reshape(L, n, c)


def check_2to4(mask) -> np.ndarray:
    """The mask, if every group of 4 along its last axis keeps exactly 2; else InputError."""
    m = np.asarray(mask)
    if m.dtype != np.bool_ or m.ndim != 3 or m.shape[2] % GROUP:
        raise InputError(f"2:4 mask is {m.dtype}{m.shape}", "pass a boolean [L, n, c] mask with c divisible by 4")
    per_group = m.reshape(*m.shape[:2], -1, GROUP).sum(axis=3)
    if (per_group != KEEP).any():
        i, r, q = np.argwhere(per_group != KEEP)[0]
        raise InputError(f"2:4 mask keeps {per_group[i, r, q]} of columns {4 * q}..{4 * q + 3} in row {r} of W_{i}",
                         "keep exactly 2 of every 4 consecutive weights along c")
    return m


def compress(W, mask) -> tuple[np.ndarray, np.ndarray]:
    """(values [L, n, c/2] in W's dtype, indices [L, n, c/2] uint8 in 0..3): the kept weights of each
    group of 4 in column order and their positions inside the group."""
    W = _check_weights(W)
    mask = check_2to4(mask)
    if mask.shape != W.shape:
        raise InputError(f"mask {mask.shape} and weights {W.shape} differ", "pass the mask of these weights")
    L, n, c = W.shape
    pos = np.nonzero(mask.reshape(L, n, c // GROUP, GROUP))[3].reshape(L, n, c // 2)   # row-major: ascending
    values = W[mask].reshape(L, n, c // 2)
    return np.ascontiguousarray(values), pos.astype(np.uint8)


def pack_metadata(indices) -> np.ndarray:
    """uint16 [L, n, ceil(c/16)] from indices [L, n, c/2]: nibble idx0 | idx1 << 2 per group, group q at
    bits 4·(q mod 4) of word q // 4; missing groups of the last word are PAD_NIBBLE."""
    idx = np.asarray(indices)
    if idx.ndim != 3 or idx.shape[2] % KEEP or not np.issubdtype(idx.dtype, np.integer) \
            or (idx.size and (idx.min() < 0 or idx.max() > 3)):
        raise InputError(f"indices are {idx.dtype}{idx.shape}", "pass uint8 [L, n, c/2] in 0..3 (compress gives them)")
    pairs = idx.reshape(*idx.shape[:2], -1, KEEP).astype(np.uint16)
    if (pairs[..., 0] >= pairs[..., 1]).any():
        raise InputError("2:4 indices are not ascending within a group", "use compress() to build them")
    nib = pairs[..., 0] | (pairs[..., 1] << 2)                                    # [L, n, groups]
    groups = nib.shape[2]
    words = -(-groups // GROUPS_PER_WORD)
    full = np.full((*nib.shape[:2], words * GROUPS_PER_WORD), PAD_NIBBLE, dtype=np.uint16)
    full[..., :groups] = nib
    full = full.reshape(*nib.shape[:2], words, GROUPS_PER_WORD)
    shifts = (np.arange(GROUPS_PER_WORD, dtype=np.uint16) * 4)
    return np.bitwise_or.reduce(full << shifts, axis=3).astype(np.uint16)


def unpack_metadata(metadata, c: int) -> np.ndarray:
    """indices [L, n, c/2] uint8 from packed metadata (the inverse of pack_metadata)."""
    meta = np.asarray(metadata)
    groups = c // GROUP
    if meta.ndim != 3 or meta.dtype != np.uint16 or meta.shape[2] != -(-groups // GROUPS_PER_WORD):
        raise InputError(f"metadata is {meta.dtype}{meta.shape}", f"pass uint16 [L, n, {-(-groups // 4)}] for c={c}")
    shifts = (np.arange(GROUPS_PER_WORD, dtype=np.uint16) * 4)
    nib = ((meta[..., None] >> shifts) & 0xF).reshape(*meta.shape[:2], -1)[..., :groups]
    idx = np.stack([nib & 0b11, nib >> 2], axis=3).reshape(*meta.shape[:2], groups * KEEP)
    return idx.astype(np.uint8)


def decompress(values, metadata, c: int) -> np.ndarray:
    """W with zeros [L, n, c] (values' dtype) from values [L, n, c/2] and packed metadata."""
    values = np.asarray(values)
    idx = unpack_metadata(metadata, c)
    if values.shape != idx.shape:
        raise InputError(f"values {values.shape} and metadata (for c={c}) {idx.shape} differ",
                         "pass the values and metadata of one compress()")
    L, n, half = values.shape
    cols = (np.arange(half) // KEEP * GROUP)[None, None, :] + idx
    out = np.zeros((L, n, c), dtype=values.dtype)
    np.put_along_axis(out, cols.astype(np.intp), values, axis=2)
    return out


@dataclass(frozen=True, eq=False)
class SemiStructured(Pruned):
    """A 2:4 `Pruned` (pattern '2:4'): mask, the compressed values and packed metadata of every W_i.
    compact_weights[i] = values[i] ([n, c/2]); `reference` multiplies from the compressed form."""

    values: np.ndarray | None = None        # [L, n, c/2]
    metadata: np.ndarray | None = None      # uint16 [L, n, ceil(c/16)]

    @property
    def unit(self) -> str:
        return "weight"

    def reference(self, X, dtype=np.float64) -> np.ndarray:
        """Y[L, n, T] = W_i(2:4) · X_i, rebuilt from `values` and `metadata` only."""
        X, dt = self._reference_input(X, dtype)
        return np.matmul(decompress(self.values, self.metadata, self.c).astype(dt), X)


def prune_2to4(W, *, importance=None) -> SemiStructured:
    """2:4 along c in every W_i of W[L, n, c] (largest |w|, or `importance`): exactly 50% of each W_i."""
    W = _check_weights(W)
    mask = mask_2to4(W, importance=importance)
    values, indices = compress(W, mask)
    L, n, c = W.shape
    return SemiStructured(pattern=PATTERN, ratio=0.5, balance="balanced",
                          criterion="l2" if importance is None else "given", spread=0.0, weights=W, mask=mask,
                          kept_per_position=np.full(L, n * c // 2, dtype=np.int64), units_per_position=n * c,
                          compact_weights=[values[i] for i in range(L)], values=values,
                          metadata=pack_metadata(indices))

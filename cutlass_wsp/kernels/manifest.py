"""Which kernel description serves a problem: alignment from the shape, arch from the GPU.

The probe's alignment-8 kernel died with 'misaligned address' when T % 8 != 0: alignment is chosen
from every extent and stride a vector access touches, never assumed. With the padded EC2B layout
(N = Npad, a multiple of 16 bytes, and K = c channels) it is always the full 16 bytes.
"""

from __future__ import annotations

from dataclasses import replace

from cutlass_wsp.dtypes import get_dtype
from cutlass_wsp.errors import Unsupported
from cutlass_wsp.kernels.description import KernelDesc, default_desc
from cutlass_wsp.problem import BatchProblem


def alignment_for(dtype: str, *extents: int) -> int:
    """Largest of 16 B / itemsize, ..., 1 elements dividing every extent (N, K, leading dims, strides)."""
    dt = get_dtype(dtype)
    a = 16 // dt.itemsize
    while a > 1 and any(int(e) % a for e in extents):
        a //= 2
    return a


def arch_for_device(cc: int) -> str:
    """Kernel arch for a compute capability (e.g. 90 for H100, 80 for A100, 89 for L4)."""
    if cc == 90:
        return "sm90"
    if 80 <= cc <= 89:
        return "sm80"
    raise Unsupported(f"GPU compute capability {cc // 10}.{cc % 10} (sm_{cc}) has no kernels here",
                      "use an Ampere/Ada (sm_80..sm_89) or Hopper (sm_90) GPU")


def select(problem: BatchProblem, dtype: str, arch: str, *, lda: int | None = None, ldb: int | None = None,
           ldd: int | None = None, family: str = "dense") -> KernelDesc:
    """Default kernel for `problem` (row-major A[M,K], B[K,N], D[M,N], packed batches unless leading
    dims are given). Alignment: the widest the shape allows. sm90 with less than 16 bytes loads with
    cp.async instead of TMA; sm90 tf32 needs TMA (see docs/kernels.md), so it falls back to the sm80
    kernel, which also runs on Hopper."""
    lda = problem.K if lda is None else lda
    ldb = problem.N if ldb is None else ldb
    ldd = problem.N if ldd is None else ldd
    if lda < problem.K or ldb < problem.N or ldd < problem.N:
        raise Unsupported(f"leading dims lda={lda} ldb={ldb} ldd={ldd} are smaller than the rows of "
                          f"{problem}", "pass lda >= K, ldb >= N, ldd >= N")
    extents = (problem.N, problem.K, lda, ldb, ldd, problem.M * lda, problem.K * ldb, problem.M * ldd)
    align = alignment_for(dtype, *extents)
    itemsize = get_dtype(dtype).itemsize
    if align * itemsize < 4:
        raise Unsupported(f"{dtype} problem {problem} (lda={lda} ldb={ldb} ldd={ldd}) allows only "
                          f"{align * itemsize}-byte accesses; tensor-core kernels need at least 4",
                          "pad N and K to a multiple of 2 elements (the EC2B layout pads N to 16 bytes)")
    if arch == "sm90" and align * itemsize < 16:
        if dtype == "tf32":
            return default_desc(family, dtype, "sm80", alignment=align)
        return default_desc(family, dtype, "sm90", alignment=align, kernel_schedule="auto")
    desc = default_desc(family, dtype, arch)
    return desc if desc.alignment == align else replace(desc, alignment=align).validate()

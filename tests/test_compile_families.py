"""Real nvcc builds of one kernel per new template (gather_b sm80 fp16, wsp_r_grouped sm90 fp16,
wsp_r_grouped sm80 tf32) through the session's compile cache; each library exports the C ABI under its
description's name and refuses bad arguments in can_implement, which runs on the host without a GPU."""

from __future__ import annotations

import pytest

from cutlass_wsp.families.gather import gather_desc
from cutlass_wsp.families.wsp_r import check_grouped_desc
from cutlass_wsp.gpu.device import gpu_status
from cutlass_wsp.kernels.description import default_desc
from cutlass_wsp.kernels.library import load, make_args

pytestmark = pytest.mark.compile

DESCS = {
    "gather_b": gather_desc("fp16", N=3136, K=256),
    "grouped_sm90": check_grouped_desc(default_desc("wsp_r_grouped", "fp16", "sm90")),
    "grouped_sm80": check_grouped_desc(default_desc("wsp_r_grouped", "tf32", "sm80")),
}
INVALID_PROBLEM, MISALIGNED, NOT_SUPPORTED = 4, 1, 5


@pytest.fixture(scope="module")
def libs(kernel_cache):
    paths = kernel_cache.compile_many(DESCS.values(), jobs=2)
    return {key: load(path, desc) for (key, desc), path in zip(DESCS.items(), paths)}


def test_libraries_carry_their_names(libs, kernel_cache):
    for key, desc in DESCS.items():
        assert libs[key].name == desc.name
        assert kernel_cache.lookup(desc) is not None


def _gather_args(**kw):
    """WSP-C shaped: L=16 positions, n=256, K = 128 kept columns, X as [16*256, 3136], B stride 0.
    Pointers are fake and 16-byte aligned: can_implement never dereferences them."""
    base = dict(M=256, N=3136, K=128, L=16, A=0x10000, B=0x20000, D=0x30000, lda=128, ldb=3136, ldd=3136,
                batch_stride_A=256 * 128, batch_stride_B=0, batch_stride_D=256 * 3136,
                gather_index=0x40000, index_stride=128, sm_count=132, device_id=0)
    base.update(kw)
    return make_args(**base)


def test_gather_b_can_implement(libs):
    lib = libs["gather_b"]
    assert lib.can_implement_status(_gather_args()) == 0
    assert lib.can_implement_status(_gather_args(index_stride=0)) == 0           # one index for every batch
    assert lib.can_implement_status(_gather_args(M=32, L=256, batch_stride_A=32 * 128,
                                                 batch_stride_D=32 * 3136)) == 0  # BCBP: M = tile rows
    assert lib.can_implement_status(_gather_args(gather_index=0)) == INVALID_PROBLEM
    assert lib.can_implement_status(_gather_args(index_stride=64)) == INVALID_PROBLEM   # batches overlap
    assert lib.can_implement_status(_gather_args(K=124, lda=124)) == MISALIGNED
    assert lib.can_implement_status(_gather_args(B=0x20004)) == MISALIGNED


class _Sizes:
    """Host problem sizes [G][3] kept alive while the args point at them."""

    def __init__(self, rows):
        import numpy as np

        self.array = np.ascontiguousarray(np.array(rows, dtype=np.int32))

    @property
    def ptr(self) -> int:
        return self.array.ctypes.data


def _grouped_args(sizes: _Sizes, **kw):
    base = dict(group_count=len(sizes.array), host_problem_sizes=sizes.ptr, device_problem_sizes=0x50000,
                ptr_A=0x60000, ptr_B=0x61000, ptr_D=0x62000, lda_array=0x63000, ldb_array=0x64000,
                ldd_array=0x65000, sm_count=132, device_id=0)
    base.update(kw)
    return make_args(**base)


@pytest.mark.parametrize("key,align", [("grouped_sm90", 8), ("grouped_sm80", 4)])
def test_grouped_can_implement(libs, key, align):
    lib = libs[key]
    good = _Sizes([[19, 3136, 256], [64, 3136, 256], [7, 3136, 256]])      # unequal M: WSP-R rows
    status = lib.can_implement_status(_grouped_args(good))
    if key == "grouped_sm90" or gpu_status()[0]:
        assert status == 0
    else:                                  # sm80 sizes its persistent grid with an occupancy query
        assert status == NOT_SUPPORTED
    assert lib.can_implement_status(_grouped_args(good, group_count=0)) == INVALID_PROBLEM
    assert lib.can_implement_status(_grouped_args(good, ptr_B=0)) == INVALID_PROBLEM
    assert lib.can_implement_status(_grouped_args(_Sizes([[19, 3136, 256], [0, 3136, 256]]))) == INVALID_PROBLEM
    odd_n = _Sizes([[19, 3136 + align // 2, 256]])
    assert lib.can_implement_status(_grouped_args(odd_n)) == MISALIGNED

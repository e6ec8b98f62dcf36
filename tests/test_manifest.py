"""Kernel selection: alignment from the shape, arch from the compute capability."""

from __future__ import annotations

import pytest

from cutlass_wsp.dtypes import get_dtype
from cutlass_wsp.errors import Unsupported
from cutlass_wsp.kernels.manifest import alignment_for, arch_for_device, select
from cutlass_wsp.problem import BatchProblem, round_up
from cutlass_wsp.winograd import tile_grid


@pytest.mark.parametrize("dtype,extents,expected", [
    ("fp16", (64, 128, 3136), 8),
    ("fp16", (64, 128, 100), 4),
    ("fp16", (64, 128, 98), 2),
    ("fp16", (64, 128, 49), 1),
    ("tf32", (64, 128, 3136), 4),
    ("tf32", (64, 128, 98), 2),
    ("bf16", (512, 512, 1568), 8),
])
def test_alignment_is_the_widest_dividing_every_extent(dtype, extents, expected):
    assert alignment_for(dtype, *extents) == expected


@pytest.mark.parametrize("cc,arch", [(90, "sm90"), (80, "sm80"), (86, "sm80"), (89, "sm80")])
def test_arch_for_device(cc, arch):
    assert arch_for_device(cc) == arch


@pytest.mark.parametrize("cc", [75, 70, 100, 120])
def test_arch_for_unsupported_device_names_it(cc):
    with pytest.raises(Unsupported, match=f"sm_{cc}"):
        arch_for_device(cc)


@pytest.mark.parametrize("dtype", ["fp16", "bf16", "tf32"])
@pytest.mark.parametrize("arch", ["sm90", "sm80"])
@pytest.mark.parametrize("c,n,H,batch,p", [(64, 64, 224, 32, 4), (512, 512, 7, 1, 4), (256, 256, 14, 1, 6)])
def test_padded_layout_always_gets_16_bytes(dtype, arch, c, n, H, batch, p):
    dt = get_dtype(dtype)
    th, tw = tile_grid(H, H, p - 2)
    T = batch * th * tw
    prob = BatchProblem(L=p * p, M=n, N=round_up(T, dt.alignment), K=c)
    d = select(prob, dtype, arch)
    assert d.alignment_bytes == 16 and d.arch == arch and d.dtype == dtype


def test_unpadded_odd_n_picks_a_narrower_kernel():
    prob = BatchProblem(L=16, M=512, N=16 * 1 + 4, K=512)      # T = 20: 8 bytes of fp16
    d90 = select(prob, "fp16", "sm90")
    assert d90.alignment == 4 and d90.resolved().kernel_schedule.startswith("cpasync")
    d80 = select(prob, "fp16", "sm80")
    assert d80.alignment == 4 and d80.arch == "sm80"


def test_sm90_tf32_without_16_bytes_falls_back_to_sm80():
    prob = BatchProblem(L=16, M=64, N=98, K=64)
    d = select(prob, "tf32", "sm90")
    assert d.arch == "sm80" and d.alignment == 2


def test_leading_dims_count():
    prob = BatchProblem(L=4, M=64, N=64, K=64)
    assert select(prob, "fp16", "sm80", ldb=68).alignment == 4
    with pytest.raises(Unsupported, match="smaller than the rows"):
        select(prob, "fp16", "sm80", ldd=32)


def test_less_than_4_bytes_is_refused_with_the_fix():
    with pytest.raises(Unsupported, match="pad N and K") as info:
        select(BatchProblem(L=1, M=64, N=49, K=64), "fp16", "sm80")
    assert "4" in info.value.problem

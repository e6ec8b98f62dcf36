"""The toy family (families/scaled.py) on the CPU: the registry finds it without any other file knowing
it, it stays out of the default sweep, an --impl selects it, its plan names its own kernel family, its
templates render the dense kernels under its name, and its launch passes the scale as alpha."""

from __future__ import annotations

import numpy as np
import pytest

from cutlass_wsp.errors import InputError
from cutlass_wsp.families import registry
from cutlass_wsp.families.scaled import KERNEL, SCALE, SCALED_KERNEL, ScaledBatch
from cutlass_wsp.kernels.description import default_desc
from cutlass_wsp.kernels.emitter import render
from cutlass_wsp.sweep.measure import Workload, plan
from cutlass_wsp.commands.sweep_options import from_args
from cutlass_wsp.sweep.plan import default_spec, expand


def test_the_registry_finds_it_and_keeps_it_out_of_the_default_sweep():
    fam = registry.serving("dense", "cutlass-scaled")
    assert fam.name == "scaled" and registry.kernel_family(KERNEL) is SCALED_KERNEL
    assert "cutlass-scaled" in registry.implementations("dense")
    assert "cutlass-scaled" not in registry.default_implementations("dense")
    assert not any(p.impl == "cutlass-scaled" for p in expand(default_spec()))
    assert KERNEL not in registry.tunable()


def test_a_sweep_can_ask_for_it():
    points = expand(from_args(["--net", "vgg16:conv4_2", "--pattern", "dense", "--impl", "dense=cutlass-scaled"]))
    (pt,) = points
    assert pt.key == "vgg16/c512n512@28x28/b32/p4/fp16/dense/cutlass-scaled"
    found = plan(pt, Workload(0), "sm90")
    (desc,) = found.descs
    assert desc.family == KERNEL and desc.arch == "sm90" and found.kernel is None and found.tuned is None
    first = expand(from_args(["--net", "vgg16:conv1_2", "--pattern", "dense", "--impl", "dense=cutlass-scaled"]))[0]
    assert plan(first, Workload(0), "sm80").descs[0].arch == "sm80"


@pytest.mark.parametrize("arch", ["sm90", "sm80"])
def test_its_templates_are_the_dense_kernels_under_its_name(arch):
    dense, scaled = default_desc("dense", "fp16", arch), default_desc(KERNEL, "fp16", arch)
    src = render(scaled)
    assert src == render(dense).replace(dense.name, scaled.name)
    assert f'return "{scaled.name}";' in src and "a.alpha" in src


class _Arr:
    """Just enough of a CuPy array for DenseBatch.arguments (no GPU)."""

    def __init__(self, shape, ptr):
        self.shape, self.ndim, self.dtype = shape, 3, np.dtype(np.float16)
        self.strides = tuple(int(np.prod(shape[i + 1:])) * 2 for i in range(3))
        self.data = type("D", (), {"ptr": ptr})()
        self.device = type("Dev", (), {"id": 0})()


class _Lib:
    def __init__(self, desc):
        self.desc, self.name = desc, desc.name


def test_the_scale_goes_to_the_kernel_as_alpha(monkeypatch):
    from cutlass_wsp.families import dense

    monkeypatch.setattr(dense, "sm_count", lambda dev: 132)
    kern = ScaledBatch(_Lib(default_desc(KERNEL, "fp16", "sm90")))
    args = kern.arguments(_Arr((16, 64, 64), 1 << 20), _Arr((16, 64, 128), 2 << 20), _Arr((16, 64, 128), 3 << 20))
    assert args.alpha == SCALE and args.beta == 0.0 and (args.M, args.N, args.K, args.L) == (64, 128, 64, 16)
    with pytest.raises(InputError, match="not a 'scaled_dense' kernel"):
        ScaledBatch(_Lib(default_desc("dense", "fp16", "sm90")))
    assert SCALE == 2.0 ** round(np.log2(SCALE))              # a power of two: the scaling is exact

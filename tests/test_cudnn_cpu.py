"""cuDNN baseline, CPU side: availability is reported, never raised; bad arguments are caught before
any library is touched; without torch or the cuDNN frontend the error says how to install one."""

from __future__ import annotations

import importlib.util

import pytest

from cutlass_wsp.errors import InputError, Unsupported
from cutlass_wsp.gpu.cudnn import UNAVAILABLE, CudnnConv, available


def test_available_is_a_reason_not_an_exception():
    ok, why = available()
    assert isinstance(ok, bool) and isinstance(why, str) and why
    assert CudnnConv.available() == (ok, why)
    if not ok:
        assert why.startswith(UNAVAILABLE)


@pytest.mark.parametrize("kwargs,match", [
    (dict(layout="ncwh"), "layout 'ncwh'"),
    (dict(c=0), "c=0"),
    (dict(H=7.5), "H=7.5"),
    (dict(dt="fp8"), "dtype 'fp8'"),
    (dict(backend="miopen"), "backend 'miopen'"),
])
def test_bad_arguments(kwargs, match):
    args = dict(c=8, n=8, H=7, W=7, batch=1, dt="fp16", layout="nhwc")
    args.update(kwargs)
    backend = args.pop("backend", "auto")
    with pytest.raises(InputError, match=match):
        CudnnConv(**args, backend=backend)


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None or importlib.util.find_spec("cudnn") is not None,
                    reason="torch or the cuDNN frontend is installed here")
def test_unavailable_says_how_to_install():
    with pytest.raises(Unsupported, match=r"pip install 'cutlass-wsp\[cudnn\]'"):
        CudnnConv(8, 8, 7, 7, 1, "fp16", "nhwc")
    with pytest.raises(Unsupported, match="torch"):
        CudnnConv(8, 8, 7, 7, 1, "fp16", "nhwc", backend="torch")

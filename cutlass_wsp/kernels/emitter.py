"""KernelDesc -> CUDA C++ source, through templates/<family>_<arch>.cu.j2 (jinja2, StrictUndefined).

Every template gets the same context (below), so a new family is a new template file and a new
`KernelDesc.family` value; nothing here changes.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from cutlass_wsp.dtypes import get_dtype
from cutlass_wsp.errors import Unsupported
from cutlass_wsp.kernels.description import KernelDesc

# CUTLASS type for each sm90 schedule name in KernelDesc.
SM90_KERNEL_SCHEDULE_TYPES = {
    "tma": "cutlass::gemm::KernelTma",
    "tma_ws": "cutlass::gemm::KernelTmaWarpSpecialized",
    "tma_ws_cooperative": "cutlass::gemm::KernelTmaWarpSpecializedCooperative",
    "tma_ws_pingpong": "cutlass::gemm::KernelTmaWarpSpecializedPingpong",
    "cpasync_ws": "cutlass::gemm::KernelCpAsyncWarpSpecialized",
    "cpasync_ws_cooperative": "cutlass::gemm::KernelCpAsyncWarpSpecializedCooperative",
    "cpasync_ws_pingpong": "cutlass::gemm::KernelCpAsyncWarpSpecializedPingpong",
}


def templates_dir() -> Path:
    """`cutlass_wsp/templates` in an installed wheel (force-included), else the repo's `templates/`."""
    pkg = Path(__file__).resolve().parent.parent
    installed = pkg / "templates"
    if installed.is_dir():
        return installed
    return pkg.parent / "templates"


def cfloat(x: float) -> str:
    """A float32 C literal; repr is exact for the dyadic rationals of F(2/4/6, 3)."""
    return f"{float(x)!r}f"


def lincomb(coefs, pattern: str) -> str:
    """'c0 * term(0) + c1 * term(1) ...' with zero terms left out and +-1 written as a bare term.
    `pattern` has '@' where the index goes, e.g. 'v[@][q]'. Templates that unroll a Winograd transform
    use it so that the zero entries of B^T / A^T cost nothing."""
    parts: list[str] = []
    for a, c in enumerate(coefs):
        c = float(c)
        if c == 0.0:
            continue
        term = pattern.replace("@", str(a))
        body = term if abs(c) == 1.0 else f"{cfloat(abs(c))} * {term}"
        if not parts:
            parts.append(("-" if c < 0 else "") + body)
        else:
            parts.append(("- " if c < 0 else "+ ") + body)
    return " ".join(parts) if parts else "0.0f"


def lincomb2(coefs, pattern: str) -> str:
    """The same sum with the template's packed helpers add2/sub2/neg2 (half2 or float2): 'sub2(d[0], d[2])'.
    Only 0 and +-1 coefficients (F(2,3)'s B^T); anything else is refused at render time."""
    pos, neg = [], []
    for a, c in enumerate(coefs):
        c = float(c)
        if c == 0.0:
            continue
        if abs(c) != 1.0:
            raise ValueError(f"lincomb2 takes 0 and +-1 coefficients only, got {c}")
        (pos if c > 0 else neg).append(pattern.replace("@", str(a)))
    if not pos and not neg:
        raise ValueError("lincomb2 of no terms")
    expr = pos[0] if pos else f"neg2({neg.pop(0)})"
    for term in pos[1:]:
        expr = f"add2({expr}, {term})"
    for term in neg:
        expr = f"sub2({expr}, {term})"
    return expr


def winograd(m: int) -> dict[str, list]:
    """A^T, G and B^T of F(m x m, 3 x 3) as nested lists of floats (exact: dyadic rationals)."""
    from cutlass_wsp.winograd import matrices_float

    at, g, bt = matrices_float(int(m))
    return {"at": at.tolist(), "g": g.tolist(), "bt": bt.tolist()}


@functools.lru_cache(maxsize=None)
def environment():
    """The one jinja2 environment for every template (StrictUndefined: a missing variable fails), with
    the helpers every template may call: lincomb(coefs, pattern) and winograd(m)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.globals.update(lincomb=lincomb, lincomb2=lincomb2, winograd=winograd)
    return env


def template_name(desc: KernelDesc) -> str:
    return f"{desc.family}_{desc.arch}.cu.j2"


def _sm90_epilogue_type(kernel_schedule: str, epilogue_schedule: str) -> str:
    if epilogue_schedule == "transposed":
        return "cutlass::gemm::EpilogueTransposed"
    if epilogue_schedule == "tma":
        # the TMA epilogue comes in a cooperative flavour that must pair with the cooperative kernel
        if kernel_schedule.endswith("cooperative"):
            return "cutlass::epilogue::TmaWarpSpecializedCooperative"
        return "cutlass::epilogue::TmaWarpSpecialized"
    return "cutlass::epilogue::NoSmemWarpSpecialized"


def context(desc: KernelDesc) -> dict[str, Any]:
    """Everything a template may use. Schedules are resolved ('auto' replaced) before rendering."""
    r = desc.resolved()
    dt = get_dtype(desc.dtype)
    ctx: dict[str, Any] = {
        "name": desc.name,
        "family": desc.family,
        "dtype": desc.dtype,
        "arch": desc.arch,
        "element": dt.cutlass,
        "accumulator": dt.compute,
        "itemsize": dt.itemsize,
        "tile": list(desc.tile),
        "cutlass_tile": list(desc.cutlass_tile),
        "stages": desc.stages,
        "cluster": list(desc.cluster),
        "alignment": desc.alignment,
        "kernel_schedule": r.kernel_schedule,
        "epilogue_schedule": r.epilogue_schedule,
        "kernel_schedule_type": SM90_KERNEL_SCHEDULE_TYPES.get(r.kernel_schedule, ""),
        "epilogue_schedule_type": _sm90_epilogue_type(r.kernel_schedule, r.epilogue_schedule),
        "swizzle": desc.swizzle,
        "warp": list(desc.warp_shape()),
        "instruction": [16, 8, 8] if desc.dtype == "tf32" else [16, 8, 16],
        "sm80_stages": desc.sm80_stages() if desc.arch == "sm80" else 0,
        "extra": desc.extra_dict(),
    }
    return ctx


def render(desc: KernelDesc) -> str:
    """CUDA source for `desc` (validated first). Unsupported when no template serves family x arch."""
    import jinja2

    desc.validate()
    name = template_name(desc)
    try:
        template = environment().get_template(name)
    except jinja2.TemplateNotFound:
        raise Unsupported(
            f"no kernel template {name} for family {desc.family!r} on {desc.arch}",
            f"add {templates_dir() / name} or pick another family/arch",
        ) from None
    return template.render(**context(desc))

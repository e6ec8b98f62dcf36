"""Build here (no GPU) every kernel a sweep's points launch, all cores at once, so a device call spends no time
compiling: the same plan the sweep's compile-ahead makes (sweep/measure.Measurer.compile_ahead), on arch sm90.
    CUTLASS_WSP_CACHE=.cache/wsp python scripts/sweep_compile.py --net vgg16,resnet18 --pattern dense,wsp-rb --impl fused
Prints the distinct kernels and how many were built."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cutlass_wsp.errors import WspError  # noqa: E402
from cutlass_wsp.kernels.cache import default_cache  # noqa: E402
from cutlass_wsp.sweep.measure import Workload, plan  # noqa: E402
from cutlass_wsp.sweep.plan import expand  # noqa: E402
from cutlass_wsp.commands.sweep_options import from_args  # noqa: E402


def main(argv) -> int:
    arch = "sm90"
    spec = from_args(argv)
    work = Workload(0)
    descs = []
    for pt in expand(spec):
        try:
            found = plan(pt, work, arch)
        except WspError as e:
            print(f"  {pt.key}: {e}")
            continue
        if found is not None:
            descs.extend(found.descs)
    unique = list(dict.fromkeys(descs))
    cache = default_cache()
    missing = [d for d in unique if cache.lookup(d) is None]
    cache.compile_many(missing)
    print(f"{len(unique)} kernels, {len(missing)} built")
    for d in unique:
        print(" ", d.name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

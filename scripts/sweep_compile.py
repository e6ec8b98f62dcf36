"""Build here (no GPU) every kernel a sweep's points launch, all cores at once, so a device call spends no time
compiling: the sweep's own compile-ahead (sweep/measure.compile_points) on arch sm90.
    CUTLASS_WSP_CACHE=.cache/wsp python scripts/sweep_compile.py --net vgg16,resnet18 --pattern dense,wsp-rb --impl fused
Prints how many distinct kernels the points need and how many were built."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cutlass_wsp.commands.sweep_options import from_args  # noqa: E402
from cutlass_wsp.errors import WspError  # noqa: E402
from cutlass_wsp.sweep.measure import Workload, compile_points  # noqa: E402
from cutlass_wsp.sweep.plan import expand  # noqa: E402


def main(argv) -> int:
    try:
        needed, built = compile_points(expand(from_args(argv)), Workload(0), "sm90")
    except WspError as e:
        print(f"sweep_compile: {e}", file=sys.stderr)
        return 2
    print(f"{needed} kernels, {built} built")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

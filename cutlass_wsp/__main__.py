import sys

from cutlass_wsp.cli import main

sys.exit(main())

from cutlass_wsp.cli import entry

entry()

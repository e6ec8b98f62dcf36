"""Per-family host logic: turn CuPy arrays (and compact pruned forms) into C ABI arguments for a
compiled kernel of that family, check them, and launch. One module per KernelDesc.family."""

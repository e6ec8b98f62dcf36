"""cutlass-wsp: how much faster does a structurally pruned Winograd conv layer run on a GPU?"""

__version__ = "0.1.0"

"""sage-hf: distil a small student from a frozen teacher with SAGE (arXiv 2508.14783)."""

__version__ = "0.1.0"

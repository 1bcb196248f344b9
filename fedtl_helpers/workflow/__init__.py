"""Running experiments: the command line and its preflight checks, papermill grids, fair
comparisons (tuning on a validation split), provenance and committed results.

The modules are also importable under their old flat names (``fedtl_helpers.<module>``).
"""

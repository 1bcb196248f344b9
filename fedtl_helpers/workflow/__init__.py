"""Running experiments: the command line and its preflight checks, papermill grids, fair
comparisons (tuning on a validation split), provenance and committed results.
"""

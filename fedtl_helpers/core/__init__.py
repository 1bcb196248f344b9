"""The foundation every layer uses: the frozen, validated `ExperimentConfig`; the random streams
(one per purpose, seeded or secure); the per-round History; atomic writes and checkpoints; what
a saved figure records about its text.
"""

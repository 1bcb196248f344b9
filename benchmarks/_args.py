"""Argument checks the tuned benchmarks share (one copy, so none drifts from its message).

``bench_strategies``, ``bench_dp``, ``bench_compression`` and ``bench_robust`` each tune a
learning rate per arm for ``--tune-rounds`` rounds, then run ``--rounds`` rounds on every seed of
``--seeds`` and report the mean accuracy of the last ``--last`` rounds.
"""

from __future__ import annotations

import argparse


def check_tuned_run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with the parser's usage error unless ``--rounds >= --last >= 1``,
    ``--tune-rounds >= 1`` and at least one seed: before any data is loaded."""
    if args.rounds < args.last or args.last < 1 or args.tune_rounds < 1 or not args.seeds:
        parser.error("need --rounds >= --last >= 1, --tune-rounds >= 1 and at least one seed")

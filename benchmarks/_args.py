"""Argument checks the tuned benchmarks share (one copy, so none drifts from its message).

``bench_strategies``, ``bench_dp``, ``bench_compression`` and ``bench_robust`` each tune a
learning rate per arm for ``--tune-rounds`` rounds, then run ``--rounds`` rounds on every seed of
``--seeds`` and report the mean accuracy of the last ``--last`` rounds.
"""

from __future__ import annotations

import argparse


def check_tuned_run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with the parser's usage error unless ``--rounds >= --last >= 1``,
    ``--tune-rounds >= --last`` and at least one seed: before any data is loaded.

    ``--tune-rounds`` left out becomes ``--rounds``: a rate is chosen over the horizon it runs.
    """
    if args.tune_rounds is None:
        args.tune_rounds = args.rounds
    if args.rounds < args.last or args.last < 1 or args.tune_rounds < args.last or not args.seeds:
        parser.error("need --rounds >= --last >= 1, --tune-rounds >= --last and at least one seed")


def add_grid(parser: argparse.ArgumentParser, help: str) -> None:
    """``--grid``: the one log grid of client learning rates (``workflow.tuning.LR_GRID``)."""
    from fedtl_helpers.workflow.tuning import LR_GRID  # numpy only: no TensorFlow before the checks

    parser.add_argument("--grid", type=float, nargs="+", default=list(LR_GRID), help=help)


def check_grid(parser: argparse.ArgumentParser, flag: str, grid: list[float], starts) -> None:
    """Exit with the parser's usage error unless ``grid`` is increasing and holds every start."""
    missing = sorted({f"{v:g}" for v in starts if v not in grid})
    if list(grid) != sorted(set(grid)) or missing:
        parser.error(f"{flag} {' '.join(f'{v:g}' for v in grid)} is invalid: allowed an increasing "
                     f"grid that contains every arm's starting value ({', '.join(missing) or 'all present'})")


# The datasets a benchmark can run on without a download (``--dataset``), and their sizes.
OFFLINE = ("shapes", "digits")
DIGITS_TRAIN, DIGITS_TEST = 1_297, 500  # the digits' fixed split (fedtl_helpers.inputs.digits)


def add_dataset(parser: argparse.ArgumentParser, *, per_client: int, n_test: int) -> None:
    """``--dataset``, ``--per-client`` and ``--n-test``, with defaults that fit each dataset."""
    parser.add_argument("--dataset", choices=OFFLINE, default="shapes",
                        help="shapes: embedded synthetic (default); digits: scikit-learn's real "
                             "handwritten digits (1,297 train / 500 test images, fixed split)")
    parser.add_argument("--per-client", type=int,
                        help=f"training images per client (default: {per_client} for shapes; for "
                             f"digits all {DIGITS_TRAIN} training images split evenly)")
    parser.add_argument("--n-test", type=int,
                        help=f"test images (default: {n_test} for shapes, all {DIGITS_TEST} for digits)")
    parser.set_defaults(_sizes=(per_client, n_test))


def dataset_sizes(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[int, int]:
    """Fill ``args.per_client`` and ``args.n_test`` for ``args.dataset``; return ``(n_train, n_test)``.

    Exits with the parser's usage error, before any data is loaded, when the digits' fixed
    split cannot supply the sizes asked for.
    """
    per_client, n_test = args._sizes
    if args.dataset == "digits":
        per_client, n_test = DIGITS_TRAIN // args.clients, DIGITS_TEST
    args.per_client = args.per_client or per_client
    args.n_test = args.n_test or n_test
    if args.per_client < 1 or args.n_test < 1:
        parser.error("--per-client and --n-test must be >= 1")
    n_train = args.clients * args.per_client
    if args.dataset == "digits" and (n_train > DIGITS_TRAIN or args.n_test > DIGITS_TEST):
        parser.error(f"--dataset digits has {DIGITS_TRAIN} training and {DIGITS_TEST} test images: "
                     f"--clients x --per-client = {n_train} and --n-test = {args.n_test} must fit")
    return n_train, args.n_test

"""Checkers for chapter 13, "Case study": the strided split, total upload, the full-size settings.

Chapter: "Case study: CIFAR-10 over five clients" (exercises 13.1 to 13.3).
"""

from __future__ import annotations

import numpy as np

from ._common import Verdict, attempt, checker, fail, passed, show


@checker("13.1", "Write strided_split(n, num_clients).")
def exercise_13_1(strided_split) -> Verdict:
    """``strided_split(n, num_clients)``: the article's ``x_train[i::num_clients]`` as index arrays."""
    for n, k in ((10, 3), (12, 4), (5, 5)):
        got = attempt("13.1", strided_split, n, k, what=f"n={n}, num_clients={k}")
        expect = [list(range(i, n, k)) for i in range(k)]
        try:
            got_l = [np.asarray(p).astype(int).tolist() for p in got]
        except (TypeError, ValueError):
            fail("13.1", f"expected a list of index arrays, one per client, got {show(got)}.")
        if got_l == expect:
            continue
        if got_l == [p.tolist() for p in np.array_split(np.arange(n), k)]:
            fail("13.1", f"for n={n}, {k} clients you returned contiguous blocks {got_l}; the article "
                         f"deals the examples out like cards, x_train[i::{k}]: expected {expect}. With "
                         "sorted labels, blocks would give each client only some classes.")
        if len(got_l) != k:
            fail("13.1", f"for {k} clients you returned {len(got_l)} parts: one index array per client.")
        fail("13.1", f"for n={n}, num_clients={k} you returned {got_l}, expected {expect} (client i gets "
                     "i, i+k, i+2k, ...).")
    return passed("13.1", "Client i gets examples i, i+k, i+2k, ...: the same as fl.partition(y, k, "
                          "'strided').")


@checker("13.2", "Write total_upload_mb(history).")
def exercise_13_2(total_upload_mb) -> Verdict:
    """``total_upload_mb(history)``: megabytes (10**6 bytes) uploaded over a whole run."""
    from ..core.history import History

    h = History(rows=[{"round": r, "test_accuracy": 0.0, "bytes_up": b}
                      for r, b in ((0, 0), (1, 2_500_000), (2, 2_500_000), (3, 1_000_000))])
    got = attempt("13.2", total_upload_mb, h, what="a History with bytes_up 0, 2.5e6, 2.5e6, 1e6 per round")
    try:
        got = float(got)
    except (TypeError, ValueError):
        fail("13.2", f"expected one number (megabytes), got {show(got)}.")
    if np.isclose(got, 6.0):
        return passed("13.2", "6.0 MB: the sum of bytes_up over every round, divided by 10**6 (the unit "
                              "History.table() prints).")
    if np.isclose(got, 6_000_000 / 2**20):
        fail("13.2", f"you returned {got:.3f}, mebibytes (2**20 bytes); the book's tables use megabytes, "
                     "10**6 bytes: expected 6.0.")
    if np.isclose(got, 1.0):
        fail("13.2", "you returned 1.0, the last round only; sum bytes_up over every round (expected 6.0).")
    if np.isclose(got, 6_000_000):
        fail("13.2", "you returned 6,000,000: those are bytes. Divide by 10**6 for megabytes (expected 6.0).")
    fail("13.2", f"you returned {got:.4g}, expected 6.0 = (0 + 2.5e6 + 2.5e6 + 1e6) / 1e6.")


_ARTICLE = {"dataset": "cifar10", "n_train": None, "num_clients": 5, "partition": "strided",
            "backbone": "resnet50", "weights": "imagenet"}


@checker("13.3", "Fill in full_size, the parameters of the article's experiment.")
def exercise_13_3(full_size) -> Verdict:
    """``full_size``: parameter overrides for the article's setting, corrected (a dict)."""
    from ..core.config import ExperimentConfig

    if not isinstance(full_size, dict):
        fail("13.3", f"full_size should be a dict of parameter: value, got {type(full_size).__name__}.")
    if not full_size:
        fail("13.3", "full_size is empty: fill in the parameters of the article's experiment.")
    try:
        config = ExperimentConfig.from_dict(dict(full_size))
    except ValueError as e:
        fail("13.3", f"ExperimentConfig rejects it: {e}")
    for name, want in _ARTICLE.items():
        have = getattr(config, name)
        if have != want:
            extra = " (None means the whole training set)" if name == "n_train" else ""
            fail("13.3", f"{name}={have!r}, but the article uses {name}={want!r}{extra}.")
    if config.input_size is None or config.input_size < 96:
        fail("13.3", f"input_size={config.input_size!r}: ResNet50 at 32x32 ends with a 1x1 feature map "
                     "(chapter 3), so the ImageNet features see almost nothing. Resize: input_size=96 or "
                     "more.")
    if config.rounds < 10 or config.local_epochs < 5:
        fail("13.3", f"rounds={config.rounds}, local_epochs={config.local_epochs}: the article runs 10 "
                     "rounds of 5 local epochs (the classroom defaults are smaller).")
    return passed("13.3", f"The article's setting, corrected: {config.describe()}, "
                          f"input_size={config.input_size}, {config.rounds} rounds x {config.local_epochs} "
                          "local epochs.")

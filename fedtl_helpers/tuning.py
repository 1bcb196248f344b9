"""Fair comparisons: every arm gets its own setting, chosen on a validation split.

Chapters: "Transfer learning overview", "Pretrained initialisation of the global model" and
every chapter whose prose interprets a gap between two settings.

A comparison in which one arm runs at the learning rate that suits the other is unfair: full
fine-tuning and head-only training, or a pretrained and a random start, want different rates.
Each arm's value is chosen here on a *validation split of the training data* (never the test
set, which would make the reported accuracy optimistic), and the chosen values are printed with
the results.

In a simulation the validation split is one held-out slice of the training images, evaluated by
the server. A real federation has no such central slice: there each client would keep part of its
own data and report its validation accuracy (``ExperimentConfig.holdout_fraction``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Arrays = tuple[np.ndarray, np.ndarray]


def validation_split(x: np.ndarray, y: np.ndarray, fraction: float = 0.2,
                     seed: int = 0) -> tuple[Arrays, Arrays]:
    """Split ``(x, y)`` into ``(train, validation)``, stratified by class, reproducibly.

    Every class keeps ``round(fraction * count)`` of its examples for validation (at least one
    when it has two or more), so a small split still sees every class.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ValueError(f"fraction={fraction!r} is invalid: allowed a number in (0, 1).")
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length ({len(x)} vs {len(y)}).")
    rng = np.random.default_rng([seed, 7])
    val: list[np.ndarray] = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = min(len(idx) - 1, max(1 if len(idx) > 1 else 0, round(fraction * len(idx))))
        val.append(idx[:k])
    val_idx = np.sort(np.concatenate(val))
    keep = np.ones(len(y), bool)
    keep[val_idx] = False
    if not val_idx.size or keep.sum() == 0:
        raise ValueError(f"fraction={fraction} leaves an empty split of {len(y)} examples: allowed a "
                         "fraction that keeps examples on both sides.")
    return (x[keep], y[keep]), (x[val_idx], y[val_idx])


@dataclass(frozen=True)
class Tuned:
    """The value chosen for ``field`` and the validation score of every candidate."""

    field: str
    best: Any
    scores: dict[Any, float]

    def table(self) -> str:
        lines = [f"{self.field:>14} {'val_acc':>8}"]
        lines += [f"{c!s:>14} {s:>8.4f}{'  <- chosen' if c == self.best else ''}"
                  for c, s in self.scores.items()]
        return "\n".join(lines)


def grid_search(field: str, candidates: Sequence[Any], score: Callable[[Any], float]) -> Tuned:
    """Score every candidate (higher is better) and keep the best; ties go to the earlier one."""
    if not candidates:
        raise ValueError(f"candidates for {field!r} is empty: allowed a non-empty list of values.")
    scores = {c: float(score(c)) for c in candidates}
    best = max(scores, key=lambda c: (scores[c], -list(scores).index(c)))
    return Tuned(field, best, scores)


def tune_federated(config, candidates: Sequence[Any], *, dataset, field: str = "learning_rate",
                   rounds: int | None = None, last: int = 3, val_fraction: float = 0.2) -> Tuned:
    """Choose ``config.<field>`` among ``candidates`` by federated training on a validation split.

    Parameters
    ----------
    config
        The ``ExperimentConfig`` of the arm being tuned; only ``field`` (and ``rounds``) change.
    candidates
        Values to try, e.g. ``[3e-4, 1e-3, 3e-3]`` for the learning rate.
    dataset
        ``((x_train, y_train), (x_test, y_test))``; the test part is never used here.
    rounds
        Rounds per trial (default: ``config.rounds``).
    last
        Score = mean validation accuracy of the last ``last`` rounds (steadier than one round).
    val_fraction
        Share of the training data held out for validation (stratified, seeded by
        ``config.seed``).
    """
    from .server import run_federated  # imported here: tuning itself needs no TensorFlow

    if not hasattr(config, field):
        raise ValueError(f"field={field!r} is not an ExperimentConfig field.")
    (x, y), _ = dataset
    train, val = validation_split(x, y, val_fraction, seed=config.seed)
    rounds = config.rounds if rounds is None else rounds

    def score(value):
        trial = dataclasses.replace(config, **{field: value}, rounds=rounds, n_train=len(train[1]),
                                    n_test=len(val[1]))
        history = run_federated(trial, dataset=(train, val), progress=False).history
        return history.tail_accuracy(min(last, rounds))

    return grid_search(field, candidates, score)

"""One verdict rule for the whole book: is a difference between two arms shown, or not?

Chapter: "Running experiments" (chapter 14 teaches the rule); every chapter that interprets a
comparison calls :func:`verdict` instead of writing its own thresholds.

The rule. Two arms ran with the same seeds (seed ``s`` of arm A and seed ``s`` of arm B share the
partition, the data draw and the test set). The **minimum detectable difference** (MDD) is the
larger of

- the **spread over seeds**: the widest range (highest minus lowest seed) of either arm. A
  difference smaller than what changing the seed alone does is not a finding (chapter 14);
- the **test-set floor**: two standard errors of the difference that sampling the test images
  alone produces, :math:`2 \\sqrt{\\sum_i p_i (1 - p_i) / m}` over the arms' mean accuracies
  :math:`p_i`, with :math:`m` the test images behind each mean (``n_test`` per seed, times the
  number of seeds when every seed draws its own test set). At 2,000 images, three seeds and 90%
  accuracy it is 1.1 points: a gain of 1-4 images is below it.

A difference is **shown** when its mean over seeds is at least the MDD *and* every seed agrees
on its sign; otherwise the sentence says "no difference shown", with the numbers. One seed gives
no spread, so it never shows a difference.

Before a gap to a random start is read at all, :func:`fedtl_helpers.teaching.transfer.learned`
asks whether that start has learned, with the same test-set floor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Comparison", "final_per_seed", "minimum_detectable_difference", "sampling_floor", "verdict"]


@dataclass(frozen=True)
class Comparison:
    """A judged comparison of arm A against arm B; all differences are A minus B, in points.

    ``str(comparison)`` (and a notebook's Markdown display) is :attr:`sentence`.
    """

    names: tuple[str, str]
    difference_points: float
    per_seed_points: tuple[float, ...]
    spread_points: float
    floor_points: float
    mdd_points: float
    shown: bool
    sentence: str

    @property
    def seeds(self) -> int:
        return len(self.per_seed_points)

    @property
    def phrase(self) -> str:
        """Where arm A stands against arm B, to follow "A is": for tables and running prose."""
        b, rule = self.names[1], f"{self.mdd_points:.1f} points"
        if self.seeds < 2:
            return f"not comparable with {b} from one seed"
        if self.shown:
            side = "above" if self.difference_points > 0 else "below"
            return f"{side} {b} in every seed, by more than the minimum detectable difference of {rule}"
        return f"not distinguishable from {b} by the book's rule (minimum detectable difference {rule})"

    def __str__(self) -> str:
        return self.sentence

    def _repr_markdown_(self) -> str:
        return self.sentence


def _values(x, name: str, low: float, high: float) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of numbers (one per seed), got {x!r}") from None
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(
            f"{name} must be a non-empty 1-D sequence (one value per seed), got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)) or arr.min() < low or arr.max() > high:
        raise ValueError(
            f"{name} must hold finite values in [{low:g}, {high:g}] (accuracies as fractions), "
            f"got {arr.tolist()}"
        )
    return arr


def _n_test(n_test) -> int:
    if isinstance(n_test, bool) or not isinstance(n_test, (int, np.integer)) or n_test < 1:
        raise ValueError(f"n_test must be a positive integer (test images per seed), got {n_test!r}")
    return int(n_test)


def sampling_floor(
    accuracies: Sequence[float], n_test: int, seeds: int = 1, *, shared_test_set: bool = False
) -> float:
    """Two standard errors of test-set sampling, in points, for a difference of these accuracies.

    Parameters
    ----------
    accuracies
        The mean accuracy of every arm in the difference (two for A minus B, four for a
        difference of two gaps), as fractions in [0, 1].
    n_test
        Test images per seed.
    seeds
        Seeds behind each mean; they multiply the images unless ``shared_test_set``.
    shared_test_set
        True when every seed is scored on the same test images (CIFAR-10's fixed test set).

    Returns
    -------
    float
        :math:`200 \\sqrt{\\sum_i p_i (1 - p_i) / m}` points, ``m`` the test images behind each mean.
    """
    p = _values(accuracies, "accuracies", 0.0, 1.0)
    n = _n_test(n_test)
    if isinstance(seeds, bool) or not isinstance(seeds, (int, np.integer)) or seeds < 1:
        raise ValueError(f"seeds must be a positive integer, got {seeds!r}")
    m = n * (1 if shared_test_set else int(seeds))
    return float(200.0 * math.sqrt(float(np.sum(p * (1.0 - p))) / m))


def minimum_detectable_difference(spread_points: float, floor_points: float, seeds: int) -> float:
    """The book's MDD in points: the larger of the seeds' spread and the test-set floor.

    With one seed the spread is unknown, so nothing is detectable (``inf``).
    """
    return math.inf if seeds < 2 else max(float(spread_points), float(floor_points))


def final_per_seed(curves, last: int = 1) -> list[float]:
    """Each seed's final accuracy: the mean of the last ``last`` rounds of its curve.

    ``curves`` is what the benchmark records hold: one accuracy per round, one row per seed.
    """
    arr = np.asarray(curves, dtype=float)
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"curves must be a 2-D array (seeds x rounds), got shape {arr.shape}")
    if isinstance(last, bool) or not isinstance(last, (int, np.integer)) or not 1 <= last <= arr.shape[1]:
        raise ValueError(
            f"last must be an integer from 1 to the number of rounds ({arr.shape[1]}), got {last!r}"
        )
    return arr[:, -last:].mean(axis=1).tolist()


def verdict(
    a: Sequence[float],
    b: Sequence[float],
    *,
    n_test: int,
    names: tuple[str, str] = ("A", "B"),
    shared_test_set: bool = False,
    floor_accuracies: Sequence[float] | None = None,
) -> Comparison:
    """Judge arm A against arm B by the book's one rule and say it in one sentence.

    Parameters
    ----------
    a, b
        One value per seed, paired by seed (same order). Accuracies as fractions in [0, 1]; or,
        with ``floor_accuracies``, differences of accuracies in [-1, 1] (e.g. what each start
        loses to skew).
    n_test
        Test images per seed.
    names
        How the sentence calls the two arms.
    shared_test_set
        True when every seed is scored on the same test images.
    floor_accuracies
        The mean accuracies the test-set floor is computed from, when ``a`` and ``b`` are
        differences rather than accuracies (all four arms of a difference of gaps).

    Returns
    -------
    Comparison
        The numbers and the sentence; ``shown`` is False below the MDD or when the seeds
        disagree on the sign.

    Raises
    ------
    ValueError
        Naming the parameter: empty, non-finite or out-of-range values, ``a`` and ``b`` of
        different lengths, ``n_test`` not a positive integer, ``names`` not two strings.
    """
    low = -1.0 if floor_accuracies is not None else 0.0
    xa, xb = _values(a, "a", low, 1.0), _values(b, "b", low, 1.0)
    if xa.size != xb.size:
        raise ValueError(
            f"a and b must hold one value per seed for the same seeds, got {xa.size} and {xb.size} values"
        )
    n = _n_test(n_test)
    if not (
        isinstance(names, (tuple, list)) and len(names) == 2 and all(isinstance(s, str) and s for s in names)
    ):
        raise ValueError(f"names must be two non-empty strings (arm A, arm B), got {names!r}")
    seeds = int(xa.size)
    acc = [xa.mean(), xb.mean()] if floor_accuracies is None else floor_accuracies
    floor = sampling_floor(acc, n, seeds, shared_test_set=shared_test_set)
    per_seed = 100.0 * (xa - xb)
    spread = 100.0 * max(float(np.ptp(xa)), float(np.ptp(xb)))
    mdd = minimum_detectable_difference(spread, floor, seeds)
    d = float(per_seed.mean())
    agree = bool(np.all(per_seed > 0) or np.all(per_seed < 0))
    shown = seeds >= 2 and agree and abs(d) >= mdd
    na, nb = names
    if seeds == 1:
        sentence = (
            f"No difference shown between {na} and {nb}: {d:+.1f} points from one seed, which gives no "
            f"spread to judge it by (the test-set floor alone is {floor:.1f} points)."
        )
    else:
        span = f"{per_seed.min():+.1f} to {per_seed.max():+.1f} over {seeds} seeds, {na} minus {nb}"
        numbers = f"{d:+.1f} points ({span})"
        rule = (
            f"the minimum detectable difference of {mdd:.1f} points (the larger of the seeds' spread, "
            f"{spread:.1f}, and the test-set floor, {floor:.1f})"
        )
        if shown:
            # said the way round it goes: the higher arm first, its per-seed lead as positive numbers
            (hi, lo), lead = ((na, nb), per_seed) if d > 0 else ((nb, na), -per_seed)
            sentence = (
                f"{hi} is above {lo} in every seed, by {abs(d):.1f} points on average ({lead.min():.1f} to "
                f"{lead.max():.1f} over {seeds} seeds), more than {rule}."
            )
        elif not agree:
            sentence = (
                f"No difference shown between {na} and {nb}: {numbers}; the seeds disagree on the sign "
                f"(the minimum detectable difference is {mdd:.1f} points)."
            )
        else:
            sentence = f"No difference shown between {na} and {nb}: {numbers} is below {rule}."
    return Comparison((na, nb), d, tuple(float(x) for x in per_seed), spread, floor, mdd, shown, sentence)

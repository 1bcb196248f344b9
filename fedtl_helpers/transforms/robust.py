"""Robust aggregation against malicious clients, and the attacks the book tests them with.

Chapter: "Secure aggregation and robustness". FedAvg is a mean: one client that sends a huge
update moves the average as far as it likes. The rules here bound what ``f`` attackers among
``n`` clients can do, as pure functions over lists of deltas (``Weights = list[np.ndarray]``):

* ``coordinate_median``: the median of every coordinate (Yin et al., 2018);
* ``trimmed_mean``: drop the ``beta`` fraction of largest and of smallest values of every
  coordinate, average the rest (Yin et al., 2018);
* ``krum``: the update closest to its ``n - f - 2`` nearest neighbours (Blanchard et al., 2017);
  ``multi=m`` averages the ``m`` best-scored updates (multi-Krum).

They ignore the example counts on purpose: an attacker could lie about them. The attacks are
client-side transforms (``poison``) of a fixed, seeded set of malicious clients
(``malicious_clients``); ``stages.build_stages`` puts them in the round.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from .aggregation import Weights, check_compatible

RULES = ("median", "trimmed_mean", "krum")
ATTACKS = ("none", "sign_flip", "scale", "nan")


def coordinate_median(deltas: Sequence[Weights]) -> Weights:
    """The coordinate-wise median: ``[2, 0]``, ``[3, 1]``, ``[-50, 9]`` give ``[2, 1]``."""
    check_compatible(deltas)
    return [np.median(np.stack([np.asarray(d[i], np.float64) for d in deltas]), axis=0)
            .astype(np.asarray(deltas[0][i]).dtype) for i in range(len(deltas[0]))]


def trim_count(n: int, beta: float) -> int:
    """How many values ``trimmed_mean`` drops at *each* end: ``floor(beta * n)``."""
    if isinstance(beta, bool) or not 0 <= beta < 0.5:
        raise ValueError(f"trim fraction beta={beta!r} is invalid: allowed a number in [0, 0.5).")
    return int(np.floor(beta * n + 1e-9))


def trimmed_mean(deltas: Sequence[Weights], beta: float) -> Weights:
    """Coordinate-wise mean after dropping the ``floor(beta * n)`` largest and smallest values.

    Raises
    ------
    ValueError
        ``beta`` outside ``[0, 0.5)`` (nothing would be left to average).
    """
    check_compatible(deltas)
    n, k = len(deltas), trim_count(len(deltas), beta)
    out = []
    for i in range(len(deltas[0])):
        stacked = np.sort(np.stack([np.asarray(d[i], np.float64) for d in deltas]), axis=0)
        out.append(stacked[k:n - k].mean(axis=0).astype(np.asarray(deltas[0][i]).dtype))
    return out


def krum_scores(deltas: Sequence[Weights], f: int) -> np.ndarray:
    """Each update's Krum score: the sum of squared distances to its ``n - f - 2`` nearest others.

    Raises
    ------
    ValueError
        ``n <= 2 f + 2``: Krum's guarantee needs more honest clients than that.
    """
    check_compatible(deltas)
    n = len(deltas)
    if isinstance(f, bool) or not isinstance(f, (int, np.integer)) or f < 0 or n <= 2 * f + 2:
        raise ValueError(f"Krum with f={f!r} byzantine clients needs n > 2f + 2 = {2 * f + 2} updates "
                         f"and f >= 0, got n={n}.")
    flat = np.stack([np.concatenate([np.asarray(t, np.float64).ravel() for t in d]) for d in deltas])
    sq = (flat**2).sum(axis=1)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2 * flat @ flat.T, 0.0)
    np.fill_diagonal(dist, np.inf)
    return np.sort(dist, axis=1)[:, :n - f - 2].sum(axis=1)


def krum(deltas: Sequence[Weights], f: int, multi: int = 1) -> Weights:
    """Krum: the update with the lowest score; with ``multi=m``, the mean of the ``m`` lowest.

    Raises
    ------
    ValueError
        ``n <= 2 f + 2``, or ``multi`` not in ``[1, n]``.
    """
    scores = krum_scores(deltas, f)
    if not 1 <= multi <= len(deltas):
        raise ValueError(f"multi={multi!r} is invalid: allowed 1 <= multi <= {len(deltas)} (the updates).")
    chosen = np.argsort(scores, kind="stable")[:multi]
    return [np.mean([np.asarray(deltas[j][i], np.float64) for j in chosen], axis=0)
            .astype(np.asarray(deltas[0][i]).dtype) for i in range(len(deltas[0]))]


def aggregate(rule: str, deltas: Sequence[Weights], *, trim_fraction: float = 0.1, byzantine: int = 1,
              multi: int = 1) -> Weights:
    """Apply the robust ``rule`` (one of ``RULES``) to one round's deltas."""
    if rule == "median":
        return coordinate_median(deltas)
    if rule == "trimmed_mean":
        return trimmed_mean(deltas, trim_fraction)
    if rule == "krum":
        return krum(deltas, byzantine, multi)
    raise ValueError(f"rule={rule!r} is invalid: allowed one of {', '.join(map(repr, RULES))}.")


# ------------------------------------------------------------------ attacks
@lru_cache(maxsize=64)
def malicious_clients(num_clients: int, fraction: float, seed: int) -> frozenset[int]:
    """The fixed set of ``round(fraction * num_clients)`` malicious clients, drawn from ``seed``."""
    if not 0 <= fraction < 1:
        raise ValueError(f"malicious fraction={fraction!r} is invalid: allowed a number in [0, 1).")
    rng = np.random.default_rng([seed, 0xBAD])
    return frozenset(rng.choice(num_clients, size=round(fraction * num_clients), replace=False).tolist())


def poison(delta: Weights, attack: str, scale: float) -> Weights:
    """A malicious client's update: ``-scale * delta`` (sign flip), ``scale * delta`` (scaling) or
    every value NaN (``"nan"``: what a diverged client or a node that wants to stall the server
    sends; the round drops it, ``round.finite_updates``)."""
    if attack == "none":
        return delta
    if attack not in ATTACKS:
        raise ValueError(f"attack={attack!r} is invalid: allowed one of {', '.join(map(repr, ATTACKS))}.")
    if attack == "nan":
        return [np.full(np.shape(t), np.nan, np.asarray(t).dtype) for t in delta]
    factor = -scale if attack == "sign_flip" else scale
    return [(factor * np.asarray(t)).astype(np.asarray(t).dtype) for t in delta]

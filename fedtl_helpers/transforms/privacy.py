"""Client-level differential privacy: DP-FedAvg (clip, sum, Gaussian noise) and its accountant.

Chapter: "Differential privacy". DP-FedAvg (McMahan et al., 2018, "Learning differentially
private recurrent language models") protects a *whole client*: whatever one client's data is,
the distribution of the server's model barely changes. One round:

1. each sampled client clips its update (the delta, over all its tensors) to L2 norm ``C``;
2. the server sums the clipped updates and adds Gaussian noise of std ``z * C`` to the sum
   (``z`` is the noise multiplier);
3. it divides by the *expected* number of clients, a constant, not by how many came.

One client changes the sum by at most ``C`` (add/remove one client) or ``2C`` (replace one), so
the noise ``z * C`` hides it; a fixed denominator keeps that bound (dividing by the realised
count, or weighting by a client's example count ``n_k``, would let one client change the
average by more than ``C / expected``, and ``n_k`` is itself private). Epsilon is computed by
Google's ``dp-accounting`` from an event that matches the sampling the code really does:
Poisson sampling -> ``PoissonSampledDpEvent`` (add/remove-one neighbours), a fixed-size sample
without replacement -> ``SampledWithoutReplacementDpEvent`` (replace-one neighbours, whose
sensitivity is ``2C``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from dp_accounting import NeighboringRelation, dp_event
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant

from .aggregation import Weights

SAMPLINGS = ("fixed", "poisson")  # mirrors config.CLIENT_SAMPLINGS
ACCOUNTANTS = ("rdp", "pld")


# ------------------------------------------------------------------ client side: clipping
def global_norm(update: Sequence[np.ndarray]) -> float:
    """L2 norm of an update over all its tensors together (computed in float64)."""
    return math.sqrt(sum(float(np.sum(np.square(np.asarray(t, np.float64)))) for t in update))


def clip_update(update: Sequence[np.ndarray], clip: float) -> Weights:
    """The update scaled down to L2 norm at most ``clip`` (unchanged if already within it).

    One scale factor for all tensors, ``min(1, clip / norm)``, so the update keeps its
    direction. The bound holds exactly in float64 after the cast to float32 (a rounding that
    lands just above ``clip`` is scaled down once more).

    Raises
    ------
    ValueError
        ``clip`` not a number > 0, or an update that holds NaN or infinity (it has no norm to
        clip to; the round drops such an update before it gets here, ``round.finite_updates``).
    """
    if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip > 0:
        raise ValueError(f"clip={clip!r} is invalid: allowed a number > 0.")
    norm = global_norm(update)
    if not math.isfinite(norm):
        raise ValueError("update is invalid: it holds NaN or infinite values; allowed finite numbers "
                         "only (a diverged or malicious client)")
    if norm <= clip:
        return [np.array(t, np.float32) for t in update]
    scale = clip / norm
    while True:
        out = [(np.asarray(t, np.float64) * scale).astype(np.float32) for t in update]
        if global_norm(out) <= clip:
            return out
        scale *= 1 - 2.0**-22  # a few float32 ulps: enough to undo the rounding


# ------------------------------------------------------------------ server side: noisy mean
def expected_clients(num_clients: int, sampling_rate: float, sampling: str = "poisson") -> float:
    """The fixed denominator: ``q * N`` (Poisson) or the sample size ``round(q * N)`` (fixed)."""
    _check_sampling(sampling)
    if sampling == "poisson":
        return sampling_rate * num_clients
    return float(max(1, round(sampling_rate * num_clients)))


def noisy_mean(clipped: Sequence[Weights], like: Sequence[np.ndarray], clip: float,
               noise_multiplier: float, denominator: float, rng: np.random.Generator) -> Weights:
    """DP-FedAvg's aggregate: ``(sum of clipped updates + N(0, (z*C)^2)) / denominator``.

    Parameters
    ----------
    clipped
        The clipped updates that arrived this round (may be empty: a Poisson round can sample
        nobody, and the result is then pure noise, which is what the analysis assumes).
    like
        Tensors with the shapes of one update (used when ``clipped`` is empty).
    clip, noise_multiplier
        ``C`` and ``z``: the noise std on the sum is ``z * C``. The server clips every update
        to ``C`` again before summing: the sensitivity bound must not rest on the clients
        (a malicious one, or the ``"scale"`` attack, sends a longer update).
    denominator
        The expected number of clients per round (``expected_clients``), not the realised one.
    rng
        Source of the noise: ``randomness.generator(mode, seed, "noise", round)``. Only the
        ``"secure"`` mode gives privacy; a seeded generator lets anyone who knows the seed
        subtract the noise again.
    """
    if not denominator > 0:
        raise ValueError(f"denominator={denominator!r} is invalid: allowed a number > 0.")
    std = noise_multiplier * clip
    total = [np.zeros(np.shape(t), np.float64) for t in like]
    for update in clipped:
        if len(update) != len(total):
            raise ValueError(f"an update has {len(update)} tensors but like has {len(total)}.")
        for acc, t in zip(total, clip_update(update, clip)):  # no-op for an honest client
            acc += t
    return [((s + rng.normal(0.0, std, s.shape)) / denominator).astype(np.float32) for s in total]


def poisson_sample(rng: np.random.Generator, num_clients: int, rate: float) -> list[int]:
    """Each of ``num_clients`` clients independently with probability ``rate`` (the round's
    sampling stage under DP accounting's Poisson sampling); can be empty."""
    return np.flatnonzero(rng.random(num_clients) < rate).tolist()


# ------------------------------------------------------------------ accounting
def _check_sampling(sampling: str) -> None:
    if sampling not in SAMPLINGS:
        allowed = ", ".join(map(repr, SAMPLINGS))
        raise ValueError(f"sampling={sampling!r} is invalid: allowed one of {allowed}.")


def dp_event_for(noise_multiplier: float, sampling_rate: float, rounds: int, *,
                 sampling: str = "poisson", num_clients: int | None = None) -> dp_event.DpEvent:
    """The ``dp_accounting`` event of ``rounds`` DP-FedAvg rounds, matching the sampling.

    ``"poisson"``: ``PoissonSampledDpEvent(q, GaussianDpEvent(z))`` (add/remove one client,
    sensitivity ``C``). ``"fixed"``: ``SampledWithoutReplacementDpEvent(N, K, Gaussian(z / 2))``
    (replace one client: the sum moves by up to ``2C``, so the noise is ``z/2`` times the
    sensitivity); needs ``num_clients``.
    """
    _check_sampling(sampling)
    if isinstance(noise_multiplier, bool) or not noise_multiplier >= 0:
        raise ValueError(f"noise_multiplier={noise_multiplier!r} is invalid: allowed a number >= 0.")
    if not 0 < sampling_rate <= 1:
        raise ValueError(f"sampling_rate={sampling_rate!r} is invalid: allowed a number in (0, 1].")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise ValueError(f"rounds={rounds!r} is invalid: allowed an integer >= 0.")
    if sampling == "poisson":
        one = dp_event.PoissonSampledDpEvent(sampling_rate, dp_event.GaussianDpEvent(noise_multiplier))
    else:
        if num_clients is None or num_clients < 1:
            raise ValueError(f"num_clients={num_clients!r} is invalid: sampling='fixed' needs "
                             "the number of clients N (an integer >= 1).")
        k = max(1, round(sampling_rate * num_clients))
        one = dp_event.SampledWithoutReplacementDpEvent(
            num_clients, k, dp_event.GaussianDpEvent(noise_multiplier / 2))
    return dp_event.SelfComposedDpEvent(one, rounds)


def dp_epsilon(noise_multiplier: float, sampling_rate: float, rounds: int, delta: float, *,
               sampling: str = "poisson", accountant: str = "rdp",
               num_clients: int | None = None) -> float:
    """Epsilon spent after ``rounds`` rounds of DP-FedAvg, at ``delta``, by ``dp-accounting``.

    Parameters
    ----------
    noise_multiplier
        ``z``: noise std on the sum of clipped updates divided by the clip norm ``C``.
    sampling_rate
        ``q``: the probability a client takes part (Poisson), or ``K / N`` (fixed-size).
    rounds, delta
        Number of rounds composed, and the delta of the (epsilon, delta) guarantee.
    sampling
        ``"poisson"`` or ``"fixed"`` (without replacement; needs ``num_clients``). Must be
        what the code actually does, or the number is wrong.
    accountant
        ``"rdp"`` (Renyi DP, ``RdpAccountant``) or ``"pld"`` (privacy loss distributions,
        tighter; Poisson only in dp-accounting 0.6).

    Returns
    -------
    float
        Epsilon (0 for zero rounds, ``inf`` for ``noise_multiplier=0``).

    Raises
    ------
    ValueError
        An argument outside its range, or ``accountant="pld"`` with ``sampling="fixed"``.
    """
    event = dp_event_for(noise_multiplier, sampling_rate, rounds, sampling=sampling,
                         num_clients=num_clients)
    if not 0 < delta < 1:
        raise ValueError(f"delta={delta!r} is invalid: allowed a number in (0, 1).")
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"accountant={accountant!r} is invalid: allowed one of "
                         f"{', '.join(map(repr, ACCOUNTANTS))}.")
    if rounds == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    if accountant == "rdp":
        relation = (NeighboringRelation.ADD_OR_REMOVE_ONE if sampling == "poisson"
                    else NeighboringRelation.REPLACE_ONE)
        acc = RdpAccountant(neighboring_relation=relation)
    else:
        if sampling != "poisson":
            raise ValueError("accountant='pld' is invalid with sampling='fixed': dp-accounting's "
                             "PLD accountant has no sampling-without-replacement event; use 'rdp'.")
        acc = PLDAccountant()
    acc.compose(event)
    return float(acc.get_epsilon(delta))


def noise_multiplier_for_epsilon(target_epsilon: float, sampling_rate: float, rounds: int,
                                 delta: float, *, sampling: str = "poisson", accountant: str = "rdp",
                                 num_clients: int | None = None, tol: float = 1e-3) -> float:
    """The smallest noise multiplier (to ``tol``) whose epsilon is at most ``target_epsilon``.

    Bisection on ``z``: epsilon decreases as the noise grows. The returned ``z`` satisfies
    ``dp_epsilon(z, ...) <= target_epsilon``.

    Raises
    ------
    ValueError
        ``target_epsilon`` not > 0, or no ``z`` up to 1000 reaches it.
    """
    if isinstance(target_epsilon, bool) or not target_epsilon > 0 or math.isinf(target_epsilon):
        raise ValueError(f"target_epsilon={target_epsilon!r} is invalid: allowed a finite number > 0.")

    def eps(z: float) -> float:
        return dp_epsilon(z, sampling_rate, rounds, delta, sampling=sampling, accountant=accountant,
                          num_clients=num_clients)

    lo, hi = 0.0, 1.0
    while eps(hi) > target_epsilon:
        lo, hi = hi, hi * 2
        if hi > 1000:
            raise ValueError(f"target_epsilon={target_epsilon!r} is out of reach: even noise_multiplier"
                             f"=1000 gives epsilon {eps(1000.0):.3g} for these settings.")
    while hi - lo > tol * max(hi, 1e-3):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if eps(mid) <= target_epsilon else (mid, hi)
    return hi

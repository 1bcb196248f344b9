"""Shamir secret sharing over a prime field: any ``t`` of ``n`` shares rebuild the secret.

Chapter: "Secure aggregation and robustness". Secure aggregation shares each client's mask
secrets this way, so the server can remove the masks of a client that dropped out, with the
help of any ``t`` surviving clients, while fewer than ``t`` shares reveal nothing about the
secret (every value is equally likely).

A secret ``s`` becomes the constant term of a random polynomial ``f`` of degree ``t - 1`` over
the integers modulo the prime ``PRIME``; share ``i`` is the point ``(i, f(i))``. Lagrange
interpolation at 0 of any ``t`` points gives ``f(0) = s`` back.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence

PRIME = 2**521 - 1  # a Mersenne prime: every 32-byte key (< 2**256) is a field element
SHARE_BYTES = 66  # one field element, 521 bits rounded up to bytes

Share = tuple[int, int]  # (x, f(x)), with x = 1, 2, ... (never 0: f(0) is the secret)


def split(secret: int, n: int, t: int) -> list[Share]:
    """Split ``secret`` into ``n`` shares, any ``t`` of which reconstruct it.

    The polynomial's coefficients come from the operating system's cryptographic random
    source (``secrets``), as they must: predictable coefficients would leak the secret.

    Raises
    ------
    ValueError
        ``secret`` outside ``[0, PRIME)``, or not ``2 <= t <= n``.
    """
    if not 0 <= secret < PRIME:
        raise ValueError(f"secret must be an integer in [0, 2**521 - 1), got {secret!r}.")
    if not 2 <= t <= n:
        raise ValueError(f"threshold t={t} is invalid for n={n} shares: allowed 2 <= t <= n.")
    coeffs = [secret] + [secrets.randbelow(PRIME) for _ in range(t - 1)]
    shares = []
    for x in range(1, n + 1):
        y = 0
        for c in reversed(coeffs):  # Horner's rule
            y = (y * x + c) % PRIME
        shares.append((x, y))
    return shares


def lagrange_at(xs: Sequence[int], x: int) -> list[int]:
    """The coefficients ``l_i`` with ``f(x) = sum_i l_i f(x_i)`` (mod ``PRIME``) for distinct ``xs``.

    They depend only on which points are used, so the server computes them once per set of
    responding clients and reuses them for every secret it reconstructs (or checks).
    """
    if len(set(xs)) != len(xs) or any(xi % PRIME == 0 for xi in xs):
        raise ValueError(f"share points must be distinct and non-zero, got {list(xs)}.")
    coeffs = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if j != i:
                num = num * (x - xj) % PRIME
                den = den * (xi - xj) % PRIME
        coeffs.append(num * pow(den, -1, PRIME) % PRIME)
    return coeffs


def lagrange_at_zero(xs: Sequence[int]) -> list[int]:
    """``lagrange_at(xs, 0)``: the coefficients that give the secret ``f(0)``."""
    return lagrange_at(xs, 0)


def interpolator(xs: Sequence[int], t: int) -> Callable[[Sequence[int]], int]:
    """The secret ``f(0)`` from at least ``t`` shares, for many secrets shared at the same points
    ``xs``: the coefficients are computed once, then each call takes the share values ``ys`` (one
    per point, in the order of ``xs``), checks that they lie on one polynomial of degree
    ``t - 1`` and returns ``f(0)``.

    Every share beyond the first ``t`` is checked, so a forged or corrupted share raises instead
    of silently changing the secret. With exactly ``t`` shares nothing can be checked: an
    honest-but-curious model is assumed, and an active adversary needs verifiable secret
    sharing (Feldman, 1987), not done here. Fewer than ``t`` shares hide the secret
    information-theoretically (interpolating them would return a wrong value): refused.

    The check costs one multiplication per share: shares of such a polynomial satisfy the
    ``n - t`` parity checks ``sum_i v_i x_i^k y_i = 0`` (``k < n - t``, ``v_i = 1 / prod_{j != i}
    (x_i - x_j)``; the dual of a Reed-Solomon code), and one random combination of them, with a
    coefficient ``r`` drawn here from ``secrets``, misses an inconsistency with probability at
    most ``n / 2**521``. When it fails, each extra share is compared with the polynomial the
    first ``t`` define, to name the bad ones.

    Raises
    ------
    ValueError
        ``t < 2``, fewer than ``t`` points or repeated points (here); inconsistent shares (in
        the call).
    """
    if isinstance(t, bool) or not isinstance(t, int) or t < 2:
        raise ValueError(f"threshold t={t!r} is invalid: allowed an integer >= 2.")
    if len(xs) < t:
        raise ValueError(f"{len(xs)} shares cannot reconstruct a secret with threshold t={t}: "
                         f"need at least {t}.")
    if len(set(xs)) != len(xs):
        raise ValueError(f"share points must be distinct, got {list(xs)}.")
    xs = list(xs)
    at_zero = lagrange_at_zero(xs[:t])
    check = []  # c_i = v_i * sum_{k < n - t} (r x_i)^k: sum_i c_i y_i == 0 for consistent shares
    if len(xs) > t:
        r = secrets.randbelow(PRIME)
        for i, xi in enumerate(xs):
            den = 1
            for j, xj in enumerate(xs):
                if j != i:
                    den = den * (xi - xj) % PRIME
            p = 0
            for _ in range(len(xs) - t):  # Horner: 1 + (r x) + (r x)^2 + ...
                p = (p * r * xi + 1) % PRIME
            check.append(p * pow(den, -1, PRIME) % PRIME)

    def secret(ys: Sequence[int]) -> int:
        if check and sum(c * y for c, y in zip(check, ys)) % PRIME != 0:
            bad = [x for x, y in zip(xs[t:], ys[t:])
                   if sum(c * yi for c, yi in zip(lagrange_at(xs[:t], x), ys[:t])) % PRIME != y % PRIME]
            raise ValueError(f"inconsistent shares: the points x={bad} do not lie on the polynomial "
                             f"the first {t} shares define (a forged or corrupted share).")
        return sum(c * y for c, y in zip(at_zero, ys[:t])) % PRIME

    return secret

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
from collections.abc import Sequence

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


def lagrange_at_zero(xs: Sequence[int]) -> list[int]:
    """The coefficients ``l_i`` with ``f(0) = sum_i l_i f(x_i)`` (mod ``PRIME``) for distinct ``xs``.

    They depend only on which points are used, so the server computes them once per set of
    responding clients and reuses them for every secret it reconstructs.
    """
    if len(set(xs)) != len(xs) or any(x % PRIME == 0 for x in xs):
        raise ValueError(f"share points must be distinct and non-zero, got {list(xs)}.")
    coeffs = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if j != i:
                num = num * (-xj) % PRIME
                den = den * (xi - xj) % PRIME
        coeffs.append(num * pow(den, -1, PRIME) % PRIME)
    return coeffs


def reconstruct(shares: Sequence[Share], t: int) -> int:
    """The secret from at least ``t`` shares (uses the first ``t``).

    Raises
    ------
    ValueError
        Fewer than ``t`` shares: the secret is information-theoretically hidden.
    """
    if len(shares) < t:
        raise ValueError(f"{len(shares)} shares cannot reconstruct a secret with threshold t={t}: "
                         f"need at least {t}.")
    used = list(shares)[:t]
    lam = lagrange_at_zero([x for x, _ in used])
    return sum(c * y for c, (_, y) in zip(lam, used)) % PRIME

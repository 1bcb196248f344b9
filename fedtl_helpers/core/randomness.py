"""Where a run's random numbers come from: one independent stream per purpose, in one of two modes.

Chapters: "Differential privacy" and "Secure aggregation and robustness". Two modes, named:

- ``"simulation"``: every stream is derived from ``config.seed``, the purpose and the round (and
  client), so a run is reproducible and a resumed run repeats the uninterrupted one bit for bit.
  This is what the book uses. It gives **no privacy**: the seed is in every ``History``, and
  anyone who knows it regenerates the DP noise and subtracts it (chapter 11 shows the attack).
- ``"secure"``: the streams a privacy guarantee rests on, DP noise and client sampling
  (``SECURE_PURPOSES``), draw fresh keys from the operating system (``secrets``) every time;
  nothing can regenerate them. A client's shuffling and stochastic rounding protect nothing and
  stay seeded, so a secure run with every client in every round and no DP still repeats the
  same numbers, in simulation and deployment alike. The only mode a deployment accepts
  (``require_secure``).

Streams are separated by purpose: the key of a stream is ``(purpose code, *ids)`` with a fixed
number of ids per purpose, passed to numpy's ``SeedSequence`` as its ``spawn_key`` (which numpy
keeps apart from the seed itself). Two different (purpose, ids) therefore never share numbers;
the old scheme, ``default_rng([seed, round, 2])``, was both the round's noise and client 2's
shuffling. Secret-sharing coefficients and secure-aggregation keys never come from here: they
always use ``secrets`` / OS randomness, whatever the mode.
"""

from __future__ import annotations

import secrets

import numpy as np

MODES = ("simulation", "secure")
# purpose -> (code, the ids that name one stream of it); codes are fixed forever (they define
# the simulation's numbers), a new purpose gets a new code.
PURPOSES: dict[str, tuple[int, tuple[str, ...]]] = {
    "sampling": (1, ("round",)),  # which clients take part in a round
    "noise": (2, ("round",)),  # the DP noise the server adds to the round's sum
    "shuffle": (3, ("round", "client")),  # a client's minibatch order
    "rounding": (4, ("round", "client")),  # stochastic rounding of a client's compressed update
}
SECURE_PURPOSES = ("sampling", "noise")  # what "secure" mode draws from the operating system


def fresh_entropy() -> int:
    """128 fresh bits from the operating system (``secrets``): the key of a secure stream."""
    return secrets.randbits(128)


def check_mode(mode: str) -> None:
    """Raise ``ValueError`` unless ``mode`` is one of ``MODES``."""
    if mode not in MODES:
        raise ValueError(f"randomness={mode!r} is invalid: allowed one of {', '.join(map(repr, MODES))}.")


def _key(purpose: str, ids: tuple[int, ...]) -> tuple[int, ...]:
    if purpose not in PURPOSES:
        raise ValueError(f"purpose={purpose!r} is invalid: allowed one of {', '.join(map(repr, PURPOSES))}.")
    code, names = PURPOSES[purpose]
    if len(ids) != len(names) or any(isinstance(i, bool) or not isinstance(i, (int, np.integer)) or i < 0
                                     for i in ids):
        raise ValueError(f"purpose {purpose!r} needs {len(names)} integer ids >= 0 "
                         f"({', '.join(names)}), got {ids!r}.")
    return (code, *map(int, ids))


def seed_sequence(mode: str, seed: int, purpose: str, *ids: int) -> np.random.SeedSequence:
    """The ``SeedSequence`` of one stream: ``(seed; purpose, ids)``, or fresh OS entropy if secure.

    Raises
    ------
    ValueError
        ``mode`` not in ``MODES``, an unknown ``purpose``, or ``ids`` not the purpose's ids.
    """
    check_mode(mode)
    key = _key(purpose, ids)
    if mode == "secure" and purpose in SECURE_PURPOSES:  # nothing in the run's outputs determines it
        return np.random.SeedSequence(fresh_entropy(), spawn_key=key)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r} is invalid: allowed an integer >= 0.")
    return np.random.SeedSequence(int(seed), spawn_key=key)


def entropy(mode: str, seed: int, purpose: str, *ids: int) -> tuple[int, ...]:
    """Four 32-bit words for APIs that take a seed tuple (``client_update(seed=...)``)."""
    return tuple(int(w) for w in seed_sequence(mode, seed, purpose, *ids).generate_state(4))


def generator(mode: str, seed: int, purpose: str, *ids: int) -> np.random.Generator:
    """A numpy ``Generator`` for one purpose of one round (and client).

    In ``"simulation"`` mode a pure function of its arguments (PCG64). In ``"secure"`` mode, for
    ``SECURE_PURPOSES``, a Philox generator keyed with 128 fresh bits from ``secrets`` on every
    call; ``seed`` is ignored. Philox is a counter-based generator built like a block cipher;
    the noise it gives is still floating-point Gaussian sampling, which a production system replaces with a
    vetted discrete or floating-point-safe sampler (see chapter 11's threat model).
    """
    ss = seed_sequence(mode, seed, purpose, *ids)
    bits = np.random.Philox(ss) if mode == "secure" and purpose in SECURE_PURPOSES else np.random.PCG64(ss)
    return np.random.Generator(bits)


def require_secure(mode: str, path: str = "Flower deployment") -> None:
    """Refuse anything but ``mode="secure"`` on ``path`` (a deployment with real clients).

    Raises
    ------
    ValueError
        ``mode`` is ``"simulation"`` (seeded noise and sampling would be reproducible by anyone
        who reads the seed) or not a mode at all.
    """
    check_mode(mode)
    if mode != "secure":
        raise ValueError(f"randomness={mode!r} is invalid on the {path}: allowed only 'secure' "
                         "(seeded 'simulation' randomness lets anyone who knows the seed regenerate "
                         "the DP noise and the client sample).")

"""Update compression: smaller client uploads, with their exact size in bytes.

Chapter: "Communication efficiency". Each transform encodes one client's update (a list of
numpy arrays, the delta it sends) into an ``Encoded`` message whose ``nbytes`` counts every byte
that would cross the network (values, indices, scales and per-tensor headers), and decodes it
back into dense arrays for aggregation. All are pure functions of their inputs; randomness
(stochastic rounding) comes from an explicit ``np.random.Generator``; top-k's error feedback
keeps its residual in an explicit per-client state that the caller stores (and checkpoints).

``Uplink`` puts one transform between ``client_update`` and aggregation in the round
(``round.ClientStages.transform``): it encodes each client's delta, counts the bytes for the
``History``, keeps the error-feedback residuals per client and hands them to the checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .aggregation import Weights

METHODS = ("none", "float16", "quantize", "topk", "prune")
HEADER_BYTES = 8  # per tensor: its element count (uint32) and an encoding tag + padding


@dataclass(frozen=True)
class Encoded:
    """One client's compressed update: per-tensor payloads, their shapes, and the byte count."""

    kind: str
    payloads: tuple
    shapes: tuple
    nbytes: int
    meta: dict = field(default_factory=dict)


def _check_same_shapes(update: Sequence[np.ndarray], other: Sequence[np.ndarray], name: str) -> None:
    """Raise ``ValueError`` naming the first tensor whose shape differs between the two lists."""
    if len(update) != len(other):
        raise ValueError(f"{name} has {len(other)} tensors but the update has {len(update)}.")
    for i, (u, o) in enumerate(zip(update, other)):
        if np.shape(u) != np.shape(o):
            raise ValueError(f"{name}[{i}] has shape {np.shape(o)} but update[{i}] has shape {np.shape(u)}.")


def dense_nbytes(update: Sequence[np.ndarray]) -> int:
    """Bytes of the uncompressed float32 update, with the same per-tensor headers."""
    return int(sum(np.asarray(t, np.float32).nbytes + HEADER_BYTES for t in update))


def encode_dense(update: Sequence[np.ndarray]) -> Encoded:
    """No compression: float32 values, 4 bytes each (the baseline every ratio is measured against)."""
    payloads = tuple(np.asarray(t, np.float32) for t in update)
    return Encoded("dense", payloads, tuple(np.shape(t) for t in update), dense_nbytes(update))


# ------------------------------------------------------------------ float16
def encode_float16(update: Sequence[np.ndarray]) -> Encoded:
    """Half precision: 2 bytes per value (about 2x smaller)."""
    payloads = tuple(np.asarray(t, np.float16) for t in update)
    return Encoded("float16", payloads, tuple(np.shape(t) for t in update),
                   sum(p.nbytes + HEADER_BYTES for p in payloads))


# ------------------------------------------------------------------ uniform quantisation
def encode_quantized(update: Sequence[np.ndarray], bits: int = 8, *, stochastic: bool = False,
                     rng: np.random.Generator | None = None) -> Encoded:
    """Uniform quantisation to ``bits`` per value with a per-tensor min and scale.

    With ``stochastic=True`` each value rounds up with probability equal to its fractional
    position between two levels, so the decoded value is unbiased: E[decode(encode(x))] = x.
    The payload holds one level per ``uint8``; ``nbytes`` counts them bit-packed, as sent.

    Raises
    ------
    ValueError
        ``bits`` not in (2, 4, 8), or ``stochastic`` without an ``rng``.
    """
    if bits not in (2, 4, 8):
        raise ValueError(f"bits={bits!r} is invalid: allowed 2, 4 or 8.")
    if stochastic and rng is None:
        raise ValueError("stochastic=True needs rng=np.random.default_rng(seed) (explicit randomness).")
    levels = 2**bits - 1
    payloads = []
    nbytes = 0
    for t in update:
        x = np.asarray(t, np.float32).ravel()
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
        scale = (hi - lo) / levels if hi > lo else 1.0
        pos = (x - lo) / scale
        q = np.floor(pos + rng.random(x.size)) if stochastic else np.rint(pos)
        q = np.clip(q, 0, levels).astype(np.uint8)
        payloads.append((q, np.float32(lo), np.float32(scale)))
        nbytes += -(-x.size * bits // 8) + 8 + HEADER_BYTES  # packed values + min + scale
    return Encoded(f"q{bits}", tuple(payloads), tuple(np.shape(t) for t in update), nbytes,
                   {"bits": bits})


# ------------------------------------------------------------------ sparsification
def _sparse_nbytes(k: int, n: int, value_bytes: int) -> int:
    index_bytes = 2 if n <= 2**16 else 4  # uint16 indices when they fit
    return k * (value_bytes + index_bytes) + HEADER_BYTES


def encode_topk(update: Sequence[np.ndarray], fraction: float, *, value_bits: int = 32) -> Encoded:
    """Keep the ``fraction`` largest-magnitude values of each tensor (at least one), send
    (index, value) pairs. ``value_bits=8`` also quantises the kept values (top-k then 8-bit)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction={fraction!r} is invalid: allowed a number in (0, 1].")
    if value_bits not in (8, 16, 32):
        raise ValueError(f"value_bits={value_bits!r} is invalid: allowed 8, 16 or 32.")
    payloads, nbytes = [], 0
    for t in update:
        x = np.asarray(t, np.float32).ravel()
        k = max(1, int(round(fraction * x.size)))
        idx = np.sort(np.argpartition(np.abs(x), x.size - k)[x.size - k:])
        vals = x[idx]
        if value_bits == 8:
            enc = encode_quantized([vals], 8)
            vals = decode(enc)[0]
            nbytes += 8  # the kept values' min and scale
        elif value_bits == 16:
            vals = vals.astype(np.float16).astype(np.float32)
        payloads.append((idx.astype(np.int64), vals))
        nbytes += _sparse_nbytes(k, x.size, value_bits // 8)
    return Encoded(f"top{fraction:g}", tuple(payloads), tuple(np.shape(t) for t in update), nbytes,
                   {"fraction": fraction, "value_bits": value_bits})


def decode(encoded: Encoded) -> Weights:
    """Dense float32 arrays from any ``Encoded`` message."""
    out = []
    for payload, shape in zip(encoded.payloads, encoded.shapes):
        if encoded.kind in ("float16", "dense"):
            out.append(payload.astype(np.float32).reshape(shape))
        elif encoded.kind.startswith("q"):
            q, lo, scale = payload
            out.append((lo + q.astype(np.float32) * scale).reshape(shape))
        else:
            idx, vals = payload
            dense = np.zeros(int(np.prod(shape, dtype=np.int64)), np.float32)
            dense[idx] = vals
            out.append(dense.reshape(shape))
    return out


# ------------------------------------------------------------------ error feedback
def topk_with_error_feedback(update: Sequence[np.ndarray], residual: Weights | None,
                             fraction: float, *, value_bits: int = 32) -> tuple[Encoded, Weights]:
    """Top-k with error feedback: add last round's residual, send the top-k, keep the rest.

    Parameters
    ----------
    update
        This round's client delta.
    residual
        What this client did not send before (``None`` on its first round). Per client state:
        the caller keeps one per client and must checkpoint it with the global weights.
    fraction, value_bits
        As in ``encode_topk``.

    Returns
    -------
    (Encoded, Weights)
        The message, and the new residual ``(update + residual) - decode(message)``.
    """
    if residual is None:
        residual = [np.zeros(np.shape(u), np.float32) for u in update]
    _check_same_shapes(update, residual, "residual")
    corrected = [np.asarray(u, np.float32) + r for u, r in zip(update, residual)]
    message = encode_topk(corrected, fraction, value_bits=value_bits)
    sent = decode(message)
    return message, [c - s for c, s in zip(corrected, sent)]


# ------------------------------------------------------------------ in the server loop
class Uplink:
    """One client-to-server encoding, applied to every client's delta in the server loop.

    Parameters
    ----------
    method
        One of ``METHODS``: ``"none"``, ``"float16"``, ``"quantize"``, ``"topk"``, ``"prune"``.
    bits, stochastic
        For ``"quantize"``: bits per value (2, 4, 8) and unbiased stochastic rounding.
    fraction, error_feedback, value_bits
        For ``"topk"`` / ``"prune"``: the fraction of values kept per tensor, whether the
        unsent rest is remembered per client and added next round (``None``: on for
        ``"topk"``; ``True`` with another method is refused, it would be ignored), and the
        bits of each kept value (32, 16, or 8 for "top-k then 8-bit").

    The error-feedback residuals are the only state: ``state()`` / ``load_state()`` move them
    in and out of checkpoints, so a resumed run continues exactly.
    """

    def __init__(self, method: str = "none", *, bits: int = 8, stochastic: bool = True,
                 fraction: float = 0.01, error_feedback: bool | None = None, value_bits: int = 32):
        if method not in METHODS:
            raise ValueError(f"method={method!r} is invalid: allowed one of {', '.join(map(repr, METHODS))}.")
        if bits not in (2, 4, 8):
            raise ValueError(f"bits={bits!r} is invalid: allowed 2, 4 or 8.")
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction={fraction!r} is invalid: allowed a number in (0, 1].")
        if value_bits not in (8, 16, 32):
            raise ValueError(f"value_bits={value_bits!r} is invalid: allowed 8, 16 or 32.")
        self.method, self.bits, self.stochastic = method, bits, stochastic
        self.fraction, self.value_bits = fraction, value_bits
        if error_feedback and method != "topk":
            raise ValueError(f"error_feedback=True is invalid with method={method!r}: allowed None or "
                             "False (only 'topk' leaves an unsent rest to remember)")
        self.error_feedback = method == "topk" and error_feedback is not False
        self.residuals: dict[int, Weights] = {}

    def encode(self, client_id: int, delta: Weights, rng: np.random.Generator) -> Encoded:
        """Client ``client_id``'s message for ``delta`` (updates its residual)."""
        if self.method == "none":
            return encode_dense(delta)
        if self.method == "float16":
            return encode_float16(delta)
        if self.method == "quantize":
            return encode_quantized(delta, self.bits, stochastic=self.stochastic, rng=rng)
        if self.error_feedback:
            message, self.residuals[client_id] = topk_with_error_feedback(
                delta, self.residuals.get(client_id), self.fraction, value_bits=self.value_bits)
            return message
        return encode_topk(delta, self.fraction, value_bits=self.value_bits)

    def send(self, client_id: int, delta: Weights, rng: np.random.Generator) -> tuple[Weights, int]:
        """Encode, count, decode: what the server receives from this client, and its bytes."""
        message = self.encode(client_id, delta, rng)
        return decode(message), message.nbytes

    def state(self) -> dict[str, np.ndarray]:
        return {f"{k}/{i}": r for k, res in self.residuals.items() for i, r in enumerate(res)}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        residuals: dict[int, dict[int, np.ndarray]] = {}
        for key, value in arrays.items():
            k, i = map(int, key.split("/"))
            residuals.setdefault(k, {})[i] = np.asarray(value, np.float32)
        self.residuals = {k: [r[i] for i in sorted(r)] for k, r in residuals.items()}

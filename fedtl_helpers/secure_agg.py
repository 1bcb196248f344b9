"""Secure aggregation: the server learns the sum of the updates, and nothing else about them.

Chapter: "Secure aggregation and robustness". The protocol of Bonawitz et al. (2017, "Practical
Secure Aggregation for Privacy-Preserving Machine Learning"), for an honest-but-curious server,
run with real keys as four steps of explicit messages:

1. **advertise keys**: each client sends two X25519 public keys (one to encrypt shares to other
   clients, one for pairwise masks); the server broadcasts the list (and each client's public
   weight ``n_k / sum n``).
2. **share keys**: each client splits its mask private key ``s_u`` and its self-mask seed
   ``b_u`` into Shamir shares (threshold ``t``) and sends one share pair to every other client,
   encrypted with ChaCha20-Poly1305 under a key agreed with that client; the server only routes
   ciphertexts.
3. **masked input**: each client quantises its weighted update to integers mod 2**32 and adds
   ``PRG(b_u)`` plus, for every other client ``v``, ``+PRG(s_uv)`` if ``u < v`` else
   ``-PRG(s_uv)``; ``s_uv`` comes from X25519 key agreement expanded with HKDF-SHA256, so ``u``
   and ``v`` derive the same mask and the pairwise masks cancel in the sum.
4. **unmasking**: the server names who sent an input and who dropped; each surviving client
   returns its share of ``b_u`` for every survivor and of ``s_u`` for every dropped client (never
   both for the same client). With ``t`` answers the server removes the self-masks and the
   dropped clients' pairwise masks: the exact sum of the survivors' quantised updates remains.

The mask generator is the ChaCha20 keystream (a cryptographic PRG, as in production systems),
keyed with 32 bytes from HKDF. Simplified with respect to the paper: no signatures or consistency
round (those defend against an actively malicious server), and all clients live in one process.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from . import shamir
from .compression import HEADER_BYTES

Weights = list[np.ndarray]
STEPS = ("advertise_keys", "share_keys", "masked_input", "unmasking")
KEY_BYTES = 32  # an X25519 public key, a ChaCha20 key, a self-mask seed
ID_BYTES = 4  # a client id on the wire
AEAD_OVERHEAD = 12 + 16  # ChaCha20-Poly1305 nonce and tag
SHARE_PLAINTEXT = 2 * ID_BYTES + 2 * shamir.SHARE_BYTES  # (from, to, share of s_u, share of b_u)


@dataclass(frozen=True)
class Message:
    """One message of the protocol: who sends what to whom, and its size on the wire."""

    step: str
    sender: str
    receiver: str
    nbytes: int
    what: str


# ------------------------------------------------------------------ fixed point mod 2**32
def fixed_point_scale(num_clients: int, clip: float) -> float:
    """Integers per unit: the largest scale at which ``num_clients`` weighted updates cannot overflow.

    Each client sends ``round(w_k * clip(x_k) * scale)`` with ``sum w_k = 1``, so the sum is at
    most ``clip * scale + num_clients / 2`` in absolute value, which must stay below ``2**31``
    (the signed range of 32-bit integers). The resolution is ``1 / scale`` whatever ``n`` is.
    """
    return (2**31 - 1 - num_clients) / clip


def quantize(update: Sequence[np.ndarray], weight: float, clip: float, scale: float) -> np.ndarray:
    """A client's update as one flat vector of integers mod 2**32 (two's complement).

    Values are clipped to ``[-clip, clip]`` first (a bounded range is what makes overflow
    impossible; training deltas far outside it mean ``clip`` was set too small).

    Raises
    ------
    ValueError
        A value in ``update`` is not finite (NaN or infinity cannot be encoded).
    """
    flat = np.concatenate([np.asarray(t, np.float64).ravel() for t in update])
    if not np.all(np.isfinite(flat)):
        raise ValueError(f"update has {int(np.sum(~np.isfinite(flat)))} non-finite values (NaN or inf): "
                         "secure aggregation can only encode finite numbers.")
    q = np.rint(weight * np.clip(flat, -clip, clip) * scale).astype(np.int64)
    return (q % 2**32).astype(np.uint32)


def dequantize(total: np.ndarray, scale: float) -> np.ndarray:
    """The float sum from the integer sum mod 2**32 (read as signed 32-bit)."""
    return total.astype(np.uint32).view(np.int32).astype(np.float64) / scale


# ------------------------------------------------------------------ key agreement and masks
def agree(private: X25519PrivateKey, peer_public: bytes, info: bytes) -> bytes:
    """32 bytes both parties derive: X25519 key agreement expanded with HKDF-SHA256."""
    shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(shared)


def mask(seed: bytes, size: int) -> np.ndarray:
    """``size`` pseudo-random uint32 values: the ChaCha20 keystream under the 32-byte ``seed``.

    Every seed is used for one vector only (keys are fresh each run), so a zero nonce is safe.
    """
    stream = Cipher(algorithms.ChaCha20(seed, bytes(16)), mode=None).encryptor().update(bytes(4 * size))
    return np.frombuffer(stream, dtype="<u4").astype(np.uint32)


class Client:
    """One client's side of the protocol: its keys, secrets, the shares it holds, its input."""

    def __init__(self, client_id: int, vector: np.ndarray):
        self.id = client_id
        self._c = X25519PrivateKey.generate()  # encrypts shares sent to other clients
        self._s = X25519PrivateKey.generate()  # pairwise masks
        self._b = secrets.token_bytes(KEY_BYTES)  # self-mask seed
        self._x = vector
        self.roster: dict[int, tuple[bytes, bytes]] = {}
        self.held: dict[int, tuple[int, int]] = {}  # shares of (s_u, b_u) this client holds

    def advertise_keys(self) -> tuple[bytes, bytes]:
        return self._c.public_key().public_bytes_raw(), self._s.public_key().public_bytes_raw()

    def share_keys(self, roster: dict[int, tuple[bytes, bytes]], threshold: int) -> dict[int, bytes]:
        """Encrypted ``(s_u, b_u)`` share pairs, one per other client in ``roster``."""
        self.roster = roster
        ids = sorted(roster)
        s_shares = shamir.split(int.from_bytes(self._s.private_bytes_raw(), "big"), len(ids), threshold)
        b_shares = shamir.split(int.from_bytes(self._b, "big"), len(ids), threshold)
        out = {}
        for v, (_, s_sh), (_, b_sh) in zip(ids, s_shares, b_shares):
            if v == self.id:
                self.held[v] = (s_sh, b_sh)
                continue
            plain = (self.id.to_bytes(ID_BYTES, "big") + v.to_bytes(ID_BYTES, "big")
                     + s_sh.to_bytes(shamir.SHARE_BYTES, "big") + b_sh.to_bytes(shamir.SHARE_BYTES, "big"))
            nonce = os.urandom(12)
            key = agree(self._c, roster[v][0], b"fedtl secagg share encryption")
            out[v] = nonce + ChaCha20Poly1305(key).encrypt(nonce, plain, None)
        return out

    def receive_shares(self, ciphertexts: dict[int, bytes]) -> None:
        for u, message in ciphertexts.items():
            key = agree(self._c, self.roster[u][0], b"fedtl secagg share encryption")
            plain = ChaCha20Poly1305(key).decrypt(message[:12], message[12:], None)
            sender, to = int.from_bytes(plain[:4], "big"), int.from_bytes(plain[4:8], "big")
            if (sender, to) != (u, self.id):
                raise ValueError(f"client {self.id} got a share labelled {sender}->{to} from client {u}.")
            s, b = plain[8:8 + shamir.SHARE_BYTES], plain[8 + shamir.SHARE_BYTES:]
            self.held[u] = (int.from_bytes(s, "big"), int.from_bytes(b, "big"))

    def masked_input(self) -> np.ndarray:
        """``x_u + PRG(b_u) + sum_{v > u} PRG(s_uv) - sum_{v < u} PRG(s_uv)`` mod 2**32."""
        y = self._x + mask(self._b, self._x.size)
        for v, (_, s_pub) in self.roster.items():
            if v != self.id:
                p = mask(agree(self._s, s_pub, b"fedtl secagg pairwise mask"), self._x.size)
                y = y + p if self.id < v else y - p
        return y

    def unmask(self, survivors: Iterable[int], dropped: Iterable[int]) -> dict[str, dict[int, int]]:
        """Shares of ``b_u`` for survivors and of ``s_u`` for dropped clients, never both for one."""
        survivors, dropped = set(survivors), set(dropped)
        if survivors & dropped:
            raise ValueError(f"client {self.id} refuses to unmask: clients {sorted(survivors & dropped)} "
                             "are listed as both survived and dropped (that would reveal their input).")
        return {"b": {u: self.held[u][1] for u in survivors}, "s": {u: self.held[u][0] for u in dropped}}


@dataclass
class Result:
    """What the server ends up with, the messages exchanged, and the time each side spent."""

    mean: Weights  # the weighted mean of the survivors' (clipped, quantised) updates
    total: np.ndarray  # sum_k w_k x_k over survivors, flat (what the server learns)
    weight_sum: float  # sum of the survivors' weights
    survivors: list[int]
    dropped: list[int]
    transcript: list[Message] = field(default_factory=list)
    received: dict[int, np.ndarray] = field(default_factory=dict)  # the masked inputs, as the server saw them
    client_seconds: dict[int, float] = field(default_factory=dict)
    server_seconds: float = 0.0

    def nbytes(self, step: str | None = None, direction: str | None = None) -> int:
        """Bytes of all messages, or of one ``step`` and/or direction (``"up"``/``"down"``)."""
        return sum(m.nbytes for m in self.transcript if (step is None or m.step == step) and (
            direction is None or (m.sender == "server") == (direction == "down")))


def secure_aggregate(updates: Sequence[Weights], num_examples: Sequence[float] | None = None, *,
                     threshold: int | None = None, clip: float = 1.0,
                     drop_before_upload: Iterable[int] = (),
                     drop_before_unmask: Iterable[int] = ()) -> Result:
    """Run the protocol on the clients' ``updates``: the server's weighted mean, and the transcript.

    Parameters
    ----------
    updates
        One ``Weights`` list per client (clients are numbered 0, 1, ... in this order).
    num_examples
        Weights ``n_k`` (FedAvg); ``None`` weights every client equally. They are public: the
        server learns the counts, not the updates.
    threshold
        Shares needed to reconstruct a secret, ``2 <= t <= n``; default ``n // 2 + 1`` (a
        majority, so no minority of colluding clients can unmask anyone).
    clip
        Values are clipped to ``[-clip, clip]`` before quantisation.
    drop_before_upload, drop_before_unmask
        Clients that vanish after sharing their keys (their masks are removed with the
        survivors' shares) or after sending their input (their input counts; they just don't
        help unmask).

    Raises
    ------
    ValueError
        Fewer than 2 clients, a threshold outside ``[2, n]``, ``clip`` not positive, a
        non-finite value, or fewer than ``threshold`` clients left to send inputs or shares.
    """
    n = len(updates)
    if n < 2:
        raise ValueError(f"secure aggregation needs at least 2 clients, got {n}: the sum of one "
                         "update is the update.")
    t = n // 2 + 1 if threshold is None else threshold
    if isinstance(t, bool) or not isinstance(t, int) or not 2 <= t <= n:
        raise ValueError(f"threshold={t!r} is invalid: allowed an integer with 2 <= threshold <= {n} "
                         "(the number of clients).")
    if not (np.isfinite(clip) and clip > 0):
        raise ValueError(f"clip={clip!r} is invalid: allowed a number > 0.")
    counts = np.ones(n) if num_examples is None else np.asarray(num_examples, np.float64)
    if counts.shape != (n,) or not np.all(np.isfinite(counts)) or np.any(counts <= 0):
        raise ValueError(f"num_examples must be {n} positive finite numbers, got {counts.tolist()}.")
    gone, quiet = set(drop_before_upload), set(drop_before_unmask)
    if not gone | quiet <= set(range(n)):
        bad = sorted((gone | quiet) - set(range(n)))
        raise ValueError(f"dropped client ids {bad} are not in 0..{n - 1}.")
    w = counts / counts.sum()
    scale = fixed_point_scale(n, clip)
    shapes = [np.shape(t) for t in updates[0]]
    size = sum(int(np.prod(s, dtype=np.int64)) for s in shapes)
    payload_bytes = 4 * size + HEADER_BYTES * len(shapes)
    res = Result([], np.zeros(0), 0.0, [], [])
    log, timer = res.transcript.append, res.client_seconds

    def on(k: int, fn, *args):  # run a client's step, adding its time to the client's clock
        t0 = time.perf_counter()
        out = fn(*args)
        timer[k] = timer.get(k, 0.0) + time.perf_counter() - t0
        return out

    clients = [on(k, lambda k=k, u=u: Client(k, quantize(u, w[k], clip, scale)))
               for k, u in enumerate(updates)]
    # 1. advertise keys
    roster = {c.id: on(c.id, c.advertise_keys) for c in clients}
    for c in clients:
        log(Message("advertise_keys", f"client {c.id}", "server", ID_BYTES + 2 * KEY_BYTES, "c_pk, s_pk"))
    for c in clients:
        log(Message("advertise_keys", "server", f"client {c.id}", n * (ID_BYTES + 2 * KEY_BYTES) + 8,
                    "all public keys, own weight"))
    # 2. share keys (the server routes ciphertexts it cannot read)
    share_msg = ID_BYTES + SHARE_PLAINTEXT + AEAD_OVERHEAD
    inbox: dict[int, dict[int, bytes]] = {c.id: {} for c in clients}
    for c in clients:
        for v, ct in on(c.id, c.share_keys, roster, t).items():
            inbox[v][c.id] = ct
        log(Message("share_keys", f"client {c.id}", "server", (n - 1) * share_msg, "encrypted shares"))
    for c in clients:
        on(c.id, c.receive_shares, inbox[c.id])
        log(Message("share_keys", "server", f"client {c.id}", (n - 1) * share_msg, "shares for it"))
    # 3. masked input
    inputs = {c.id: on(c.id, c.masked_input) for c in clients if c.id not in gone}
    for k in inputs:
        log(Message("masked_input", f"client {k}", "server", payload_bytes, "masked update"))
    t_server = time.perf_counter()
    survivors, dropped = sorted(inputs), sorted(gone)
    if len(survivors) < t:
        raise ValueError(f"only {len(survivors)} of {n} clients sent a masked input; the threshold is "
                         f"{t}: the server aborts the round (too many dropouts).")
    total = np.zeros(size, np.uint32)
    for y in inputs.values():
        total += y
    res.server_seconds += time.perf_counter() - t_server
    # 4. unmasking
    answers = {}
    for k in survivors:
        log(Message("unmasking", "server", f"client {k}", ID_BYTES * n, "who survived, who dropped"))
        if k not in quiet:
            answers[k] = on(k, clients[k].unmask, survivors, dropped)
            log(Message("unmasking", f"client {k}", "server", n * (ID_BYTES + shamir.SHARE_BYTES), "shares"))
    t_server = time.perf_counter()
    if len(answers) < t:
        raise ValueError(f"only {len(answers)} clients answered the unmasking request; {t} shares are "
                         f"needed to remove the masks (threshold={t}): the sum cannot be recovered.")
    helpers = sorted(answers)[:t]
    lam = shamir.lagrange_at_zero([k + 1 for k in helpers])  # share x-coordinate = id + 1

    def rebuild(kind: str, u: int) -> bytes:
        secret = sum(c * answers[v][kind][u] for c, v in zip(lam, helpers)) % shamir.PRIME
        return secret.to_bytes(KEY_BYTES, "big")

    for u in survivors:
        total -= mask(rebuild("b", u), size)
    for u in dropped:
        s_u = X25519PrivateKey.from_private_bytes(rebuild("s", u))
        for v in survivors:  # v added +PRG(s_uv) if v < u, else subtracted it
            p = mask(agree(s_u, roster[v][1], b"fedtl secagg pairwise mask"), size)
            total = total - p if v < u else total + p
    res.total = dequantize(total, scale)
    res.weight_sum = float(w[survivors].sum())
    flat = res.total / res.weight_sum
    offsets = np.cumsum([0] + [int(np.prod(s, dtype=np.int64)) for s in shapes])
    res.mean = [flat[a:b].reshape(s).astype(np.float32) for a, b, s in zip(offsets, offsets[1:], shapes)]
    res.survivors, res.dropped, res.received = survivors, dropped, inputs
    res.server_seconds += time.perf_counter() - t_server
    return res


def overhead_bytes(n: int) -> tuple[int, int]:
    """Bytes (up, down) of one round's key, share and unmasking messages with ``n`` clients and
    no dropouts: everything secure aggregation sends besides the masked updates themselves."""
    share_msg = ID_BYTES + SHARE_PLAINTEXT + AEAD_OVERHEAD
    up = n * (ID_BYTES + 2 * KEY_BYTES) + n * (n - 1) * share_msg + n * n * (ID_BYTES + shamir.SHARE_BYTES)
    down = n * (n * (ID_BYTES + 2 * KEY_BYTES) + 8) + n * (n - 1) * share_msg + n * n * ID_BYTES
    return up, down

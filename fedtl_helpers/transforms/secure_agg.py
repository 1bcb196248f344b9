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

Threat model: an honest-but-curious server (it follows the protocol but looks at everything it
receives) and fewer than ``t`` colluding clients learn nothing about one client's update beyond
the sum. The clients do not trust the server to ask only once: each answers at most one
unmasking request per round, and only one that names at least ``t`` survivors and splits the
round's roster exactly into survivors and dropped clients (asking twice, calling a client
"survived" and then "dropped", would otherwise rebuild both of its secrets and reveal its
input). ``t`` must be a majority (``t > n / 2``): an unmasking needs ``t`` answers and each
client answers once, so a round allows one unmasking, of at least a majority of the clients.
Key derivation binds the purpose, the round and both public keys (HKDF ``info``), so even a
reused key pair never repeats a mask or an encryption key.

The mask generator is the ChaCha20 keystream (a cryptographic PRG, as in production systems),
keyed with 32 bytes from HKDF (or the fresh self-mask seed ``b_u``); its zero nonce is safe
because each such key encrypts one vector only. Simplified with respect to the paper: no
signatures or consistency round and no client authentication (those defend against an actively
malicious server that forges clients; a deployment relies on its node authentication), and all
clients live in one process.
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
from .aggregation import Weights
from .compression import HEADER_BYTES

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
PURPOSES = {"share": b"fedtl secagg share encryption", "mask": b"fedtl secagg pairwise mask"}


def kdf_info(purpose: str, round_id: int, public_a: bytes, public_b: bytes) -> bytes:
    """HKDF ``info`` binding the purpose, the round and both public keys (in sorted order, so
    both parties build the same bytes): a key derived for one round, pair or use never serves
    another, even if a client reused its key pair."""
    if purpose not in PURPOSES:
        raise ValueError(f"purpose={purpose!r} is invalid: allowed one of {', '.join(map(repr, PURPOSES))}.")
    if isinstance(round_id, bool) or not isinstance(round_id, int) or not 0 <= round_id < 2**64:
        raise ValueError(f"round_id={round_id!r} is invalid: allowed an integer in [0, 2**64).")
    low, high = sorted((public_a, public_b))
    return PURPOSES[purpose] + round_id.to_bytes(8, "big") + low + high


def agree(private: X25519PrivateKey, peer_public: bytes, info: bytes) -> bytes:
    """32 bytes both parties derive: X25519 key agreement expanded with HKDF-SHA256 (``info``
    from ``kdf_info``; the salt is not needed once ``info`` makes every derivation unique)."""
    shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(shared)


def pairwise_key(private: X25519PrivateKey, peer_public: bytes, purpose: str, round_id: int) -> bytes:
    """``agree`` with ``kdf_info(purpose, round_id, own public key, peer_public)``."""
    own = private.public_key().public_bytes_raw()
    return agree(private, peer_public, kdf_info(purpose, round_id, own, peer_public))


def mask(seed: bytes, size: int) -> np.ndarray:
    """``size`` pseudo-random uint32 values: the ChaCha20 keystream under the 32-byte ``seed``.

    Every seed is used for one vector only (``b_u`` is fresh per client and round; pairwise
    seeds are bound to the round and both public keys by ``kdf_info``), so a zero nonce is safe.
    """
    stream = Cipher(algorithms.ChaCha20(seed, bytes(16)), mode=None).encryptor().update(bytes(4 * size))
    return np.frombuffer(stream, dtype="<u4").astype(np.uint32)


class Client:
    """One client's side of the protocol in one round: its keys, secrets, the shares it holds,
    its input, and whether it has already answered an unmasking request (at most once)."""

    def __init__(self, client_id: int, vector: np.ndarray, round_id: int = 0):
        self.id = client_id
        self.round_id = round_id
        self.threshold: int | None = None  # set when the shares are made
        self.answered = False  # one unmasking answer per round, whatever the server asks
        self._c = X25519PrivateKey.generate()  # encrypts shares sent to other clients
        self._s = X25519PrivateKey.generate()  # pairwise masks
        self._b = secrets.token_bytes(KEY_BYTES)  # self-mask seed
        self._x = vector
        self.roster: dict[int, tuple[bytes, bytes]] = {}
        self.held: dict[int, tuple[int, int]] = {}  # shares of (s_u, b_u) this client holds

    def advertise_keys(self) -> tuple[bytes, bytes]:
        return self._c.public_key().public_bytes_raw(), self._s.public_key().public_bytes_raw()

    def share_keys(self, roster: dict[int, tuple[bytes, bytes]], threshold: int) -> dict[int, bytes]:
        """Encrypted ``(s_u, b_u)`` share pairs, one per other client in ``roster``.

        The client itself refuses a threshold below a majority of the roster (not only
        :func:`secure_aggregate`): with ``t <= n / 2`` a server could name two disjoint survivor
        sets of ``t`` clients, each answered once, and subtract the two unmasked sums.
        """
        n = len(roster)
        if isinstance(threshold, bool) or not isinstance(threshold, int) or not n // 2 < threshold <= n:
            raise ValueError(f"client {self.id} refuses threshold={threshold!r}: allowed an integer with "
                             f"{n // 2 + 1} <= threshold <= {n} (a majority of the {n} on the roster).")
        if self.id not in roster:
            raise ValueError(f"client {self.id} refuses a roster that leaves it out ({sorted(roster)}).")
        self.roster, self.threshold = roster, threshold
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
            key = pairwise_key(self._c, roster[v][0], "share", self.round_id)
            out[v] = nonce + ChaCha20Poly1305(key).encrypt(nonce, plain, None)
        return out

    def receive_shares(self, ciphertexts: dict[int, bytes]) -> None:
        for u, message in ciphertexts.items():
            key = pairwise_key(self._c, self.roster[u][0], "share", self.round_id)
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
                p = mask(pairwise_key(self._s, s_pub, "mask", self.round_id), self._x.size)
                y = y + p if self.id < v else y - p
        return y

    def unmask(self, survivors: Iterable[int], dropped: Iterable[int]) -> dict[str, dict[int, int]]:
        """Shares of ``b_u`` for survivors and of ``s_u`` for dropped clients, never both for one.

        Raises
        ------
        ValueError
            (the client refuses) A second request in this round; a client named both survived
            and dropped; survivors and dropped that are not exactly the round's roster; fewer
            survivors than the threshold; or this client itself not among the survivors.
        """
        survivors, dropped = set(survivors), set(dropped)
        why = None
        if self.answered:
            why = ("it already answered an unmasking request this round (a second one could name "
                   "a survivor as dropped and rebuild both of its secrets)")
        elif survivors & dropped:
            why = (f"clients {sorted(survivors & dropped)} are listed as both survived and dropped "
                   "(that would reveal their input)")
        elif survivors | dropped != set(self.roster):
            why = (f"survivors and dropped ({sorted(survivors | dropped)}) are not the round's roster "
                   f"({sorted(self.roster)})")
        elif self.threshold is None or len(survivors) < self.threshold:
            why = (f"only {len(survivors)} survivors are named, fewer than the threshold "
                   f"{self.threshold} (a small survivor set would unmask a small sum)")
        elif self.id not in survivors:
            why = "it is itself named as dropped, yet it is being asked to help"
        if why:
            raise ValueError(f"client {self.id} refuses to unmask: {why}.")
        self.answered = True
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
                     drop_before_unmask: Iterable[int] = (), round_id: int = 0) -> Result:
    """Run the protocol on the clients' ``updates``: the server's weighted mean, and the transcript.

    Parameters
    ----------
    updates
        One ``Weights`` list per client (clients are numbered 0, 1, ... in this order).
    num_examples
        Weights ``n_k`` (FedAvg); ``None`` weights every client equally. They are public: the
        server learns the counts, not the updates.
    threshold
        Shares needed to reconstruct a secret: a majority, ``n // 2 + 1 <= t <= n`` (the
        default is ``n // 2 + 1``). Below a majority the server could name ``t`` survivors,
        call everyone else dropped, and unmask their small subtotal: with ``t=2`` of 10, a
        two-client sum. With a majority, and each client answering once, a round allows one
        unmasking only.
    clip
        Values are clipped to ``[-clip, clip]`` before quantisation.
    drop_before_upload, drop_before_unmask
        Clients that vanish after sharing their keys (their masks are removed with the
        survivors' shares) or after sending their input (their input counts; they just don't
        help unmask).
    round_id
        The round, bound into every derived key (``kdf_info``).

    Raises
    ------
    ValueError
        Fewer than 2 clients, a threshold outside ``[n // 2 + 1, n]``, ``clip`` not positive, a
        non-finite value, fewer than ``threshold`` clients left to send inputs or shares, or
        (with more than ``threshold`` answers) shares that do not agree.
    """
    n = len(updates)
    if n < 2:
        raise ValueError(f"secure aggregation needs at least 2 clients, got {n}: the sum of one "
                         "update is the update.")
    t = n // 2 + 1 if threshold is None else threshold
    if isinstance(t, bool) or not isinstance(t, int) or not max(2, n // 2 + 1) <= t <= n:
        raise ValueError(f"threshold={t!r} is invalid: allowed an integer with {max(2, n // 2 + 1)} <= "
                         f"threshold <= {n} (a majority of the {n} clients, at least 2).")
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

    clients = [on(k, lambda k=k, u=u: Client(k, quantize(u, w[k], clip, scale), round_id))
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
    helpers = sorted(answers)
    # Share x-coordinate = id + 1; answers beyond the first t check the others' shares.
    interpolate = shamir.interpolator([k + 1 for k in helpers], t)

    def rebuild(kind: str, u: int) -> bytes:
        secret = interpolate([answers[v][kind][u] for v in helpers])
        return secret.to_bytes(KEY_BYTES, "big")

    for u in survivors:
        total -= mask(rebuild("b", u), size)
    for u in dropped:
        s_u = X25519PrivateKey.from_private_bytes(rebuild("s", u))
        for v in survivors:  # v added +PRG(s_uv) if v < u, else subtracted it
            p = mask(pairwise_key(s_u, roster[v][1], "mask", round_id), size)
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

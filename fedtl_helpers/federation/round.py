"""One federated round, the same for every path: simulation, FedPer/FedBN and the Flower deployment.

Chapter: "Federated learning overview" (the picture every chapter refers back to). Read
``run_round`` top to bottom; every stage is one line there, and it is the only loop over a
round's clients::

    sample -> broadcast -> clients.train (client update -> clip | attack | encode)
           -> decode -> drop non-finite -> aggregate -> server step -> evaluate -> record

Under secure aggregation the server gets the protocol's weighted mean instead of the clients'
updates (``Summed``) and takes it as the aggregate: in process ``stages.SecureSum`` masks the
clients' messages with the course's protocol (``secure_agg``); over the network the
deployment's runner returns it from Flower's SecAgg+ itself. Either way each client refuses
its own non-finite update before masking and is listed in ``dropped``.

``run_rounds`` repeats it (progress, the non-finite stop, a checkpoint after every round). What
differs between paths is only *how the broadcast reaches the clients and their updates come
back*: a ``Clients`` runner, one per transport (``simulation.InProcessClients``,
``personalization.PersonalClients`` which keeps the personal tensors home, and the ServerApp's
``FlowerClients`` which sends Flower messages). So resume, the round-0 row, the LP-FT switch
(``Clients.start_round``) and the non-finite stop are the same on every path.

``build_stages(config)`` (``stages.py``) turns the config into the ``Stages`` below once, before
round 1. ``ServerState`` is everything the server remembers (global weights, server optimiser
state, the simulated clients' uplink residuals, the clients seen, the round number); a
checkpoint saves and restores it, with whatever the runner keeps for its clients.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..core import randomness, storage
from ..core.history import History, dp_release
from ..core.storage import check_finite, check_resume, load_checkpoint, note_resume, save_checkpoint
from ..transforms import compression
from ..transforms.aggregation import Weights
from ..transforms.compression import Encoded, Uplink
from ..transforms.server_opt import ServerOptimizer
from .client import ClientResult, LocalTrainer, client_update


# ------------------------------------------------------------------ randomness
@dataclass(frozen=True)
class RoundStreams:
    """Every random stream of one round: the one place they are made (see ``randomness``).

    One independent stream per purpose. In ``mode="simulation"`` each is a pure function of the
    seed, the round and (for client streams) the client, so a resumed run repeats the
    uninterrupted one; in ``mode="secure"`` client sampling and DP noise come from the
    operating system.
    """

    seed: int
    round: int
    mode: str = "simulation"

    def sampling(self) -> np.random.Generator:
        """Which clients take part (fixed-size or Poisson)."""
        return randomness.generator(self.mode, self.seed, "sampling", self.round)

    def shuffle(self, client: int) -> tuple[int, ...]:
        """Entropy for client ``client``'s local shuffling (``client_update``'s ``seed``)."""
        return randomness.entropy(self.mode, self.seed, "shuffle", self.round, client)

    def uplink(self, client: int) -> np.random.Generator:
        """Client ``client``'s stochastic rounding when it encodes its update."""
        return randomness.generator(self.mode, self.seed, "rounding", self.round, client)

    def noise(self) -> np.random.Generator:
        """The server's DP noise on the aggregate."""
        return randomness.generator(self.mode, self.seed, "noise", self.round)


# ------------------------------------------------------------------ the stages
@dataclass(frozen=True)
class ClientStages:
    """What a client does with the broadcast weights: train (as its ``LocalTrainer`` was set
    up from ``ClientSettings``), then the client transforms: clip, attack, encode.

    ``attack(client, delta)`` returns the delta unchanged for an honest client.
    """

    clip: Callable[[Weights], Weights] | None  # DP: the client clips its own update
    attack: Callable[[int, Weights], Weights]

    def update(self, trainer: LocalTrainer, weights: Weights, client: int, x: np.ndarray,
               y: np.ndarray, streams: RoundStreams) -> ClientResult:
        """Local training from ``weights``: the delta of the tensors the client sends."""
        return client_update(trainer, weights, client, x, y, seed=streams.shuffle(client))

    def transform(self, client: int, delta: Weights, uplink: Uplink,
                  streams: RoundStreams) -> Encoded:
        """Client-side transforms of one delta: clip (DP), a malicious client's attack, encode."""
        if self.clip is not None and is_finite(delta):
            delta = self.clip(delta)  # a diverged (NaN) delta has no norm: sent as is, dropped
        delta = self.attack(client, delta)
        return uplink.encode(client, delta, streams.uplink(client))


@dataclass(frozen=True)
class Stages:
    """The round's stages, built once from the config by ``stages.build_stages``.

    ``sample(rng)`` picks the round's clients; ``aggregate(deltas, counts, like, streams)``
    combines decoded deltas (``like``: tensors shaped as one update, for a round without
    clients; ``streams``: the round's number and DP noise); ``secure(messages, streams)``
    (secure aggregation in process, ``SecureSum``; ``None`` without it) masks the clients'
    messages and unmasks only their weighted mean, a ``Summed``, which then replaces the
    aggregate stage. Each is a small named class in ``stages.py`` (``FixedSample``,
    ``WeightedMean``, ``DPNoisyMean``, ...). ``privacy_columns(rounds)`` is the History's
    ``epsilon`` column (empty without DP).
    """

    seed: int
    sample: Callable[[np.random.Generator], list[int]]
    client: ClientStages
    aggregate: Callable[[list[Weights], list[int], Weights, RoundStreams], Weights]
    make_server_optimizer: Callable[[], ServerOptimizer]
    make_uplink: Callable[[], Uplink]
    privacy_columns: Callable[[int], dict[str, float]]
    privacy_meta: dict[str, Any] | None = None  # what the final epsilon was computed for
    randomness: str = "simulation"  # see ``randomness.MODES``
    secure: Callable[[list[ClientMessage], RoundStreams], Summed] | None = None

    def streams(self, rnd: int) -> RoundStreams:
        return RoundStreams(self.seed, rnd, self.randomness)

    def record(self, **row: Any) -> dict[str, Any]:
        """A History row as released: under DP only what the accountant covers
        (``history.dp_release``: no client-derived metrics, no sampled ids)."""
        return row if self.privacy_meta is None else dp_release(row)


# ------------------------------------------------------------------ the state
@dataclass
class ServerState:
    """Everything the round remembers between rounds; a checkpoint is this object on disk.

    ``uplink`` holds the simulated clients' error-feedback residuals (in a deployment each
    client keeps its own). ``round`` is the last finished round (0: none yet).
    """

    weights: Weights
    server_opt: ServerOptimizer
    uplink: Uplink
    history: History
    seen: set[int] = field(default_factory=set)  # clients that already hold the frozen tensors
    round: int = 0

    def arrays(self, clients: Clients | None = None) -> dict[str, np.ndarray]:
        """The stateful stages' arrays (and the runner's, ``clients.state()``), named
        ``"<part>/<key>"`` as the checkpoint stores them."""
        parts = {"uplink": self.uplink, "server_opt": self.server_opt}
        if clients is not None:
            parts["clients"] = clients
        return {f"{name}/{k}": v for name, part in parts.items() for k, v in part.state().items()}

    def save(self, directory: str | Path, config: dict[str, Any], clients: Clients | None = None) -> None:
        """Atomically write the state (and the ``config`` it belongs to) to ``directory``; a DP
        run's into ``directory/private/`` (the sampled ids and residuals are not released)."""
        save_checkpoint(directory, self.weights, {"config": config, "round": self.round,
                                                  "history": self.history.to_dict(),
                                                  "seen": sorted(self.seen)},
                        arrays=self.arrays(clients), private=config.get("dp_clip") is not None)

    @classmethod
    def load(cls, directory: str | Path, stages: Stages, config: dict[str, Any],
             clients: Clients | None = None) -> ServerState | None:
        """The state saved in ``directory`` (``None`` if there is none); ``clients`` gets back
        what its runner saved (``Clients.load_state``).

        Raises
        ------
        ValueError
            The checkpoint was written by a config that differs from ``config`` in more than
            ``rounds`` (each differing field is named), or ``rounds`` is below the rounds done
            (resuming with more rounds extends a finished run).
        """
        saved = load_checkpoint(directory)
        if saved is None:
            return None
        weights, meta = saved
        # Only ``rounds`` may differ (extending a finished run), and never below the rounds done.
        check_resume(meta["config"], config, meta["round"], config["rounds"])
        history = History.from_dict(meta["history"])
        note_resume(history.meta, config, meta["round"])
        state = cls(weights, stages.make_server_optimizer(), stages.make_uplink(),
                    history, set(meta["seen"]), meta["round"])
        arrays = meta.get("arrays", {})
        parts = [("uplink", state.uplink), ("server_opt", state.server_opt)]
        if clients is not None:
            parts.append(("clients", clients))
        for name, part in parts:
            part.load_state({k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(name + "/")})
        return state


_NO_TEST = {"accuracy": float("nan"), "loss": float("nan")}  # a path without one global model


def initial_state(stages: Stages, weights: Weights, history: History,
                  evaluate: Callable[[Weights], dict[str, float] | None]) -> ServerState:
    """Round 0: the initial global model, evaluated and recorded, fresh stage states."""
    state = ServerState(weights, stages.make_server_optimizer(), stages.make_uplink(), history)
    ev = evaluate(weights) or _NO_TEST
    history.append(**stages.record(round=0, test_accuracy=ev["accuracy"], test_loss=ev["loss"],
                                   train_loss=None, clients=[], dropped=[], bytes_up=0, bytes_down=0,
                                   seconds=0.0,
                                   **stages.privacy_columns(0)))
    return state


# ------------------------------------------------------------------ broadcast
@dataclass(frozen=True)
class Payload:
    """What one sampled client receives: the whole model the first time it takes part (it then
    keeps the tensors training never changes), afterwards only the tensors training changes."""

    client: int
    arrays: Weights
    trained_only: bool

    @property
    def nbytes(self) -> int:
        """Bytes on the wire: the only definition of ``bytes_down`` (plus secure aggregation's messages)."""
        return compression.dense_nbytes(self.arrays)


def broadcast(weights: Weights, mask: list[bool], chosen: list[int], seen: set[int]) -> list[Payload]:
    """Each chosen client's ``Payload`` of the global ``weights`` (``mask``: the tensors sent
    back and changed by training; ``seen``: the clients that hold the others already)."""
    trained = [w for w, m in zip(weights, mask) if m]
    return [Payload(k, trained, True) if k in seen else Payload(k, weights, False) for k in chosen]


def unpack(arrays: Weights, mask: list[bool], frozen: Weights) -> Weights:
    """The full weights from a trained-only payload's ``arrays`` and the ``frozen`` tensors the
    client kept (both in model order); the inverse of ``broadcast``'s split."""
    frozen_it, trained_it = iter(frozen), iter(arrays)
    return [next(trained_it) if m else next(frozen_it) for m in mask]


# ------------------------------------------------------------------ the clients
@dataclass
class ClientMessage:
    """What one client sends the server: its encoded update, its size and its training loss."""

    client: int
    encoded: Encoded
    num_examples: int
    train_loss: float


@dataclass
class Summed:
    """What secure aggregation gives the server instead of the clients' updates: the protocol's
    weighted mean, never one update. Made by ``stages.SecureSum`` (the course's protocol, every
    client in this process) or by the deployment's SecAgg+ (``fedtl_deploy/server_app.py``).

    ``clients``/``num_examples``/``train_losses``: the clients whose masked input is in the sum
    and what each reported in the clear; ``dropped``: sampled clients that are not in it (they
    vanished mid-round, or refused their own non-finite update before masking); ``received``:
    the clients that got the broadcast payload (they hold the frozen tensors now);
    ``bytes_up``/``bytes_down``: every protocol message's bytes (``bytes_down`` beyond the
    broadcast payloads).
    """

    mean: Weights
    clients: list[int]
    dropped: list[int]
    num_examples: list[int]
    train_losses: list[float]
    bytes_up: int
    bytes_down: int
    received: list[int]


def client_side(client: ClientStages, trainer: LocalTrainer, weights: Weights, k: int,
                x: np.ndarray, y: np.ndarray, uplink: Uplink, streams: RoundStreams) -> ClientMessage:
    """Client update and client-side transforms of client ``k``: what runs on a client (the
    ClientApp, or in process)."""
    result = client.update(trainer, weights, k, x, y, streams)
    encoded = client.transform(k, result.delta, uplink, streams)
    return ClientMessage(k, encoded, result.num_examples, result.metrics["train_loss"])


class Clients(Protocol):
    """How a round reaches its clients: the one part that differs between paths.

    ``mask``: for each tensor of the global weights, do the clients train and send it (the
    tensors a trained-only ``Payload`` carries). ``variances``: for each tensor, is it a BatchNorm
    moving variance (kept at or above 0, :func:`nonnegative_variances`). ``evaluate`` tests new
    global weights on the server's test set (``None``: the path has no one global model, e.g.
    FedPer).
    """

    mask: list[bool]
    variances: list[bool]

    def start_round(self, rnd: int) -> None:
        """Apply round ``rnd``'s strategy (LP-FT switches the trained tensors once)."""

    def train(self, payloads: list[Payload], streams: RoundStreams,
              uplink: Uplink) -> list[ClientMessage] | Summed:
        """Each payload's client trains and returns its message, in the order of ``payloads``.
        ``uplink`` holds the simulated clients' residuals (a deployed client keeps its own).
        A runner whose clients aggregate securely over the network returns only their ``Summed``."""

    def evaluate(self, weights: Weights) -> dict[str, float] | None: ...

    def state(self) -> dict[str, np.ndarray]:
        """What the runner keeps for its clients between rounds, for the checkpoint."""

    def load_state(self, arrays: dict[str, np.ndarray]) -> None: ...


def nonnegative_variances(weights: Weights, variances: list[bool]) -> Weights:
    """``weights`` with every BatchNorm moving variance clamped at 0 (``models.variance_mask``).

    An aggregate can make a variance negative (DP noise on the mean of the updates, a server
    learning rate above 1, momentum); a network evaluated with one outputs NaN, or on some CPUs
    whatever oneDNN's fused kernel makes of it. Clamping is post-processing of the released
    aggregate, so it costs no privacy.
    """
    return [np.maximum(w, 0) if v else w for w, v in zip(weights, variances, strict=True)]


def is_finite(update: Weights) -> bool:
    """Every value of every tensor of ``update`` is a finite number (no NaN, no infinity)."""
    return all(np.all(np.isfinite(t)) for t in update)


def finite_updates(deltas: list[Weights], messages: list[ClientMessage],
                   rnd: int) -> tuple[list[Weights], list[ClientMessage], list[int]]:
    """The decoded updates that are finite, their messages, and the clients whose update held
    NaN or infinity (dropped from this round: one such update would make the aggregate NaN, and
    DP's clipping has no norm to clip it to).

    Raises
    ------
    storage.NonFiniteError
        Every client of the round sent a non-finite update (local training diverged everywhere:
        the learning rate is too high); the run stops as any diverged run does.
    """
    finite = [is_finite(d) for d in deltas]
    dropped = [m.client for m, ok in zip(messages, finite) if not ok]
    if dropped and not any(finite):
        raise storage.NonFiniteError(
            f"training diverged in round {rnd}: every client's update ({len(dropped)}) was NaN or "
            f"infinite; the run stopped without saving round {rnd}. Lower learning_rate.", rnd)
    return ([d for d, ok in zip(deltas, finite) if ok], [m for m, ok in zip(messages, finite) if ok],
            dropped)


# ------------------------------------------------------------------ one round
def run_round(state: ServerState, stages: Stages, clients: Clients) -> dict[str, Any]:
    """One round, on any path; the only loop over a round's clients is ``clients.train``.

    Updates ``state`` in place and returns the History row it appended. An update holding NaN or
    infinity is dropped and its client listed in the row's ``dropped`` (``finite_updates``).
    Raises ``storage.NonFiniteError`` (before anything is recorded) if every update, the new
    weights or the test loss are NaN or infinite.
    """
    t0 = time.perf_counter()
    streams = stages.streams(state.round + 1)
    clients.start_round(streams.round)  # which tensors train this round (LP-FT switches once)
    chosen = stages.sample(streams.sampling())  # sample (a Poisson round may choose nobody)
    payloads = broadcast(state.weights, clients.mask, chosen, state.seen)  # broadcast
    sent = clients.train(payloads, streams, state.uplink) if payloads else []  # client side
    like = [w for w, m in zip(state.weights, clients.mask) if m]  # one update's shapes
    if stages.secure is not None and sent and not isinstance(sent, Summed):
        sent = stages.secure(sent, streams)  # mask and sum, every client in this process
    if isinstance(sent, Summed):  # secure aggregation: the server holds only the sum
        agg, dropped, losses = sent.mean, sent.dropped, sent.train_losses  # aggregate
        bytes_up, extra_down, received = sent.bytes_up, sent.bytes_down, sent.received
    else:
        deltas = [compression.decode(m.encoded) for m in sent]  # decode (order: ``chosen``)
        deltas, kept, dropped = finite_updates(deltas, sent, streams.round)  # NaN/inf: dropped
        agg = stages.aggregate(deltas, [m.num_examples for m in kept], like, streams)  # aggregate
        bytes_up, extra_down = sum(m.encoded.nbytes for m in sent), 0
        losses = [m.train_loss for m in kept]
        received = chosen
    new = state.server_opt.step(state.weights, list(clients.mask), agg)  # server step
    new = nonnegative_variances(new, clients.variances)  # DP noise may push them below 0
    ev = clients.evaluate(new)  # evaluate
    check_finite(new, ev["loss"] if ev else 0.0, streams.round)  # a diverged run stops here
    ev = ev or _NO_TEST
    state.weights, state.round = new, streams.round
    state.seen.update(received)  # they hold the frozen tensors now (a node lost mid-round may not)
    state.history.append(**stages.record(  # record
        round=streams.round, test_accuracy=ev["accuracy"], test_loss=ev["loss"],
        train_loss=float(np.mean(losses)) if losses else None, clients=chosen, dropped=dropped,
        bytes_up=bytes_up,
        bytes_down=sum(p.nbytes for p in payloads) + extra_down,
        seconds=time.perf_counter() - t0, **stages.privacy_columns(streams.round)))
    return state.history.rows[-1]


def run_rounds(state: ServerState, stages: Stages, clients: Clients, rounds: int, *,
               checkpoint: Callable[[ServerState], None] | None = None, progress: bool = False,
               report: Callable[[dict[str, Any]], None] | None = None) -> ServerState:
    """``run_round`` from ``state.round + 1`` to ``rounds``: a progress bar, ``checkpoint(state)``
    after every round (only a finite round reaches it), ``report(row)`` for a path's own log."""
    from tqdm import tqdm

    bar = tqdm(range(state.round + 1, rounds + 1), desc="rounds", disable=not progress,
               file=sys.stderr, initial=state.round, total=rounds)
    for _ in bar:
        row = run_round(state, stages, clients)
        bar.set_postfix(acc=f"{row['test_accuracy']:.3f}")
        if checkpoint is not None:
            checkpoint(state)
        if report is not None:
            report(row)
    return state

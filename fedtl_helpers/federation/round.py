"""One federated round, the same for every path: simulation, FedPer and the Flower deployment.

Chapter: "Federated learning overview" (the picture every chapter refers back to). Read
``run_round`` top to bottom; every stage is one line there::

    sample -> broadcast -> client update -> client transforms (clip | attack | encode)
           -> decode -> aggregate -> server step -> evaluate -> record

``build_stages(config)`` (``stages.py``) is the only place that reads the config for the round;
it turns it into the ``Stages`` below, whose parts take plain arguments. ``ServerState`` is
everything the round remembers (global weights, server optimiser state, the simulated clients'
uplink residuals, the clients seen, the round number); a checkpoint saves and restores it.

The round is split where the network is in a deployment: ``client_side`` runs on the client
(the Flower ClientApp), ``server_side`` on the server (the ServerApp); ``run_round`` calls both,
in process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core import randomness
from ..core.history import History, dp_release
from ..core.storage import check_resume, load_checkpoint, note_resume, save_checkpoint
from ..transforms import compression
from ..transforms.aggregation import Weights
from ..transforms.compression import Encoded, Uplink
from ..transforms.server_opt import ServerOptimizer
from .client import ClientResult, LocalTrainer, client_update

if TYPE_CHECKING:  # only for type hints: the round needs no Simulation, just its parts
    from .simulation import Simulation


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
    """What a client does with the broadcast weights: train, then clip, attack, encode.

    ``attack(client, delta)`` returns the delta unchanged for an honest client.
    """

    local_epochs: int
    clip: Callable[[Weights], Weights] | None  # DP: the client clips its own update
    attack: Callable[[int, Weights], Weights]

    def update(self, trainer: LocalTrainer, weights: Weights, client: int, x: np.ndarray,
               y: np.ndarray, streams: RoundStreams) -> ClientResult:
        """Local training from ``weights``: the delta of the tensors the client sends."""
        return client_update(trainer, weights, client, x, y, epochs=self.local_epochs,
                             seed=streams.shuffle(client))

    def transform(self, client: int, delta: Weights, uplink: Uplink,
                  streams: RoundStreams) -> Encoded:
        """Client-side transforms of one delta: clip (DP), a malicious client's attack, encode."""
        if self.clip is not None:
            delta = self.clip(delta)
        delta = self.attack(client, delta)
        return uplink.encode(client, delta, streams.uplink(client))


@dataclass(frozen=True)
class Stages:
    """The round's stages, built once from the config by ``stages.build_stages``.

    ``aggregate(deltas, counts, rng, like, round_)`` combines decoded deltas (``like``: tensors
    shaped as one update, for a round without clients; ``round_`` binds secure aggregation's
    keys to the round); ``overhead(n)`` is the extra (up, down) bytes
    of the aggregation protocol for ``n`` clients; ``privacy_columns(rounds)`` the History's
    ``epsilon`` column (empty without DP).
    """

    seed: int
    sample: Callable[[np.random.Generator], list[int]]
    client: ClientStages
    aggregate: Callable[[list[Weights], list[int], np.random.Generator, Weights, int], Weights]
    make_server_optimizer: Callable[[], ServerOptimizer]
    make_uplink: Callable[[], Uplink]
    overhead: Callable[[int], tuple[int, int]]
    privacy_columns: Callable[[int], dict[str, float]]
    privacy_meta: dict[str, Any] | None = None  # what the final epsilon was computed for
    randomness: str = "simulation"  # see ``randomness.MODES``

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

    def arrays(self) -> dict[str, np.ndarray]:
        """The stateful stages' arrays, named ``"<part>/<key>"`` as the checkpoint stores them."""
        parts = {"uplink": self.uplink, "server_opt": self.server_opt}
        return {f"{name}/{k}": v for name, part in parts.items() for k, v in part.state().items()}

    def save(self, directory: str | Path, config: dict[str, Any]) -> None:
        """Atomically write the state (and the ``config`` it belongs to) to ``directory``."""
        save_checkpoint(directory, self.weights, {"config": config, "round": self.round,
                                                  "history": self.history.to_dict(),
                                                  "seen": sorted(self.seen)}, arrays=self.arrays())

    @classmethod
    def load(cls, directory: str | Path, stages: Stages, config: dict[str, Any]) -> ServerState | None:
        """The state saved in ``directory`` (``None`` if there is none).

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
        for name, part in (("uplink", state.uplink), ("server_opt", state.server_opt)):
            part.load_state({k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(name + "/")})
        return state


def initial_state(stages: Stages, weights: Weights, history: History,
                  evaluate: Callable[[Weights], dict[str, float]]) -> ServerState:
    """Round 0: the initial global model, evaluated and recorded, fresh stage states."""
    state = ServerState(weights, stages.make_server_optimizer(), stages.make_uplink(), history)
    ev = evaluate(weights)
    history.append(**stages.record(round=0, test_accuracy=ev["accuracy"], test_loss=ev["loss"],
                                   train_loss=None, clients=[], bytes_up=0, bytes_down=0, seconds=0.0,
                                   **stages.privacy_columns(0)))
    return state


# ------------------------------------------------------------------ one round
@dataclass
class ClientMessage:
    """What one client sends the server: its encoded update, its size and its training loss."""

    client: int
    encoded: Encoded
    num_examples: int
    train_loss: float


def client_side(stages: Stages, trainer: LocalTrainer, weights: Weights, client: int,
                x: np.ndarray, y: np.ndarray, uplink: Uplink, streams: RoundStreams) -> ClientMessage:
    """Client update and client-side transforms: what runs on the client (the ClientApp)."""
    result = stages.client.update(trainer, weights, client, x, y, streams)
    encoded = stages.client.transform(client, result.delta, uplink, streams)
    return ClientMessage(client, encoded, result.num_examples, result.metrics["train_loss"])


def server_side(state: ServerState, stages: Stages, mask: Sequence[bool], chosen: list[int],
                messages: list[ClientMessage], evaluate: Callable[[Weights], dict[str, float]],
                streams: RoundStreams, t0: float) -> dict[str, Any]:
    """Decode, aggregate, server step, evaluate, record: what runs on the server (the ServerApp).

    ``messages`` are in the order of ``chosen`` (float sums depend on the order). Updates
    ``state`` in place and returns the History row it appended.
    """
    weights = state.weights
    deltas = [compression.decode(m.encoded) for m in messages]  # decode
    like = [w for w, m in zip(weights, mask) if m]  # shapes of one update, for an empty round
    agg = stages.aggregate(deltas, [m.num_examples for m in messages], streams.noise(), like,
                           streams.round)
    state.weights = state.server_opt.step(weights, list(mask), agg)  # server step
    ev = evaluate(state.weights)  # evaluate
    # Record. New clients download the whole model once; afterwards only what training changes.
    full, sent = compression.dense_nbytes(weights), compression.dense_nbytes(like)
    extra_up, extra_down = stages.overhead(len(chosen))  # secure aggregation's keys, shares, ...
    bytes_up = sum(m.encoded.nbytes for m in messages) + extra_up
    bytes_down = sum(sent if k in state.seen else full for k in chosen) + extra_down
    losses = [m.train_loss for m in messages]
    state.seen.update(chosen)
    state.round = streams.round
    state.history.append(**stages.record(
        round=streams.round, test_accuracy=ev["accuracy"], test_loss=ev["loss"],
        train_loss=float(np.mean(losses)) if losses else None, clients=chosen, bytes_up=bytes_up,
        bytes_down=bytes_down, seconds=time.perf_counter() - t0, **stages.privacy_columns(streams.round)))
    return state.history.rows[-1]


def run_round(state: ServerState, stages: Stages, sim: Simulation) -> dict[str, Any]:
    """One whole round in process: sample, every chosen client's side, then the server's side.

    Returns the History row the round appended to ``state.history``.
    """
    t0 = time.perf_counter()
    streams = stages.streams(state.round + 1)
    sim.start_round(streams.round)  # which tensors train this round (LP-FT switches once)
    chosen = stages.sample(streams.sampling())  # sample
    messages = []
    for k in chosen:  # broadcast: each client starts from the current global weights
        x, y = sim.client_data(k)
        messages.append(client_side(stages, sim.trainer, state.weights, k, x, y, state.uplink, streams))
    return server_side(state, stages, sim.mask, chosen, messages, sim.evaluate, streams, t0)

"""Personalised models: one global model is not the best model for every client.

Chapter: "Non-IID data and personalisation" (the article's sections 4.2 and 7.2: personalised
models that combine the global and the local model). Three ways, each evaluated on every
client's own held-out data (``ExperimentConfig.holdout_fraction``):

* **local fine-tuning** (``finetune_clients``): after federated training, each client trains
  the global model for a few epochs on its own training data;
* **interpolation** (``interpolate``, also in ``finetune_clients``): ``alpha * global +
  (1 - alpha) * local``, with ``alpha`` chosen per client on a validation slice of its
  training data (Mansour et al. 2020 / Deng et al. 2020, APFL);
* **FedPer** (``run_fedper``, Arivazhagan et al. 2019): the shared layers are federated, the
  personal layers (by default the final classifier, ``"logits"``) never leave the client;
* **FedBN** (``run_fedbn``, Li et al. 2021): the same loop with the normalisation layers'
  parameters and statistics kept on each client (for feature skew).

Memory stays flat: fine-tuning keeps one client's local model at a time, and FedPer stores
only each client's personal tensors (1,290 floats for the built-in head), not a model per client.
FedPer and FedBN run ``round.run_round``, as ``server.run_federated`` does (the same stages:
sampling, client update, DP clipping, attacks, uplink encoding, aggregation, the server
optimiser; checkpoints and resume); only their ``Clients`` runner differs: it splits the personal
tensors off each client's delta before the client-side transforms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from ..core.config import ExperimentConfig
from ..core.history import History
from ..core.storage import check_finite
from ..modeling import models
from ..transforms.aggregation import Weights
from ..transforms.compression import Uplink
from .round import ClientMessage, ClientStages, Payload, RoundStreams, run_rounds
from .simulation import Dataset, Simulation
from .stages import build_stages, check_supported

NORM_LAYERS = (keras.layers.BatchNormalization, keras.layers.LayerNormalization,
               keras.layers.GroupNormalization)  # what FedBN keeps on each client
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)  # interpolation grid: 0 = local model, 1 = global model


def interpolate(global_weights: Weights, local_weights: Weights, alpha: float) -> Weights:
    """``alpha * global + (1 - alpha) * local``, tensor by tensor (alpha=1: the global model)."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha={alpha!r} is invalid: allowed a number in [0, 1].")
    return [(alpha * g + (1 - alpha) * w).astype(g.dtype) for g, w in zip(global_weights, local_weights)]


def personal_mask(model: keras.Model, layers: Sequence[str] = ("logits",)) -> list[bool]:
    """For each tensor of ``model.get_weights()``: does it belong to the personal ``layers`` of the head?"""
    head = model.get_layer("head")
    names = [layer.name for layer in head.layers]
    unknown = [n for n in layers if n not in names]
    if unknown or not layers:
        raise ValueError(f"personal layers {list(layers)} are invalid: allowed a non-empty subset "
                         f"of the head's layers {[n for n in names if head.get_layer(n).weights]}.")
    ids = {id(v) for n in layers for v in head.get_layer(n).weights}
    return [id(v) in ids for v in model.weights]


@dataclass
class PersonalResult:
    """Per-client held-out accuracies of the global, fine-tuned and interpolated models."""

    global_acc: np.ndarray  # (clients,)
    local_acc: np.ndarray  # fine-tuned on the client's data (alpha = 0)
    mixed_acc: np.ndarray  # interpolated with the client's chosen alpha
    chosen_alpha: np.ndarray  # (clients,), chosen on each client's validation slice
    alphas: np.ndarray  # the grid
    curve: np.ndarray  # (clients, alphas): held-out accuracy for every alpha


def finetune_clients(sim: Simulation, global_weights: Weights, epochs: int, *,
                     alphas: Sequence[float] = ALPHAS, val_fraction: float = 0.2,
                     seed: int = 0) -> PersonalResult:
    """Fine-tune the global model on each client, interpolate, and evaluate per client.

    Each client splits its training data into a fine-tuning part and a validation part
    (``val_fraction``), trains ``epochs`` epochs from ``global_weights`` on the first, picks the
    ``alpha`` of ``alphas`` with the best validation accuracy (ties: the larger alpha, closer
    to the global model), and is evaluated on its held-out data.

    Raises
    ------
    ValueError
        No held-out data (``holdout_fraction=0``), ``epochs < 1``, a bad ``val_fraction`` or
        ``alphas``, or a client too small to keep a validation example (the message names it).
    """
    sim.check_holdout()
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs={epochs!r} is invalid: allowed an integer >= 1.")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction!r} is invalid: allowed a number in (0, 1).")
    grid = np.asarray(sorted(alphas), dtype=float)
    if grid.size == 0 or grid[0] < 0 or grid[-1] > 1:
        raise ValueError(f"alphas={list(alphas)} is invalid: allowed a non-empty list of numbers in [0, 1].")
    sizes = [len(p) for p in sim.parts]
    for k, n in enumerate(sizes):
        n_val = int(round(val_fraction * n))
        if n_val < 1 or n_val >= n:
            raise ValueError(f"client {k} has {n} training examples: too few to keep "
                             f"val_fraction={val_fraction} for choosing alpha and still fine-tune.")
    global_acc, curve, chosen = [], [], []
    for k in range(len(sim.parts)):
        x, y = sim.client_data(k)
        order = np.random.default_rng([seed, k]).permutation(len(y))
        n_val = int(round(val_fraction * len(y)))
        val, fit = order[:n_val], order[n_val:]
        test_x = sim.model_inputs(sim.x_train[sim.holdout[k]])
        test_y = sim.y_train[sim.holdout[k]]
        global_acc.append(sim.accuracy(global_weights, test_x, test_y))
        sim.model.set_weights(global_weights)
        sim.trainer.fit(x[fit], y[fit], epochs, np.random.default_rng([seed, k, 1]))
        local = sim.model.get_weights()
        mixes = [interpolate(global_weights, local, a) for a in grid]
        val_acc = np.array([sim.accuracy(w, x[val], y[val]) for w in mixes])
        best = len(grid) - 1 - int(np.argmax(val_acc[::-1]))  # ties: the larger alpha
        chosen.append(grid[best])
        curve.append([sim.accuracy(w, test_x, test_y) for w in mixes])
    curve_arr = np.array(curve)
    idx = [int(np.flatnonzero(grid == a)[0]) for a in chosen]
    return PersonalResult(
        global_acc=np.array(global_acc), local_acc=curve_arr[:, 0] if grid[0] == 0 else
        np.full(len(curve), np.nan), mixed_acc=curve_arr[np.arange(len(idx)), idx],
        chosen_alpha=np.array(chosen), alphas=grid, curve=curve_arr)


@dataclass
class FedPerResult:
    """Shared weights, each client's personal tensors, and the per-round training loss."""

    weights: Weights  # the shared model (its personal tensors: the initial ones, never trained)
    mask: list[bool]  # personal_mask: which tensors of ``weights`` are personal
    heads: dict[int, Weights] = field(default_factory=dict)  # client -> its personal tensors only
    train_loss: list[float | None] = field(default_factory=list)  # one per round (None: nobody sampled)
    history: History = field(default_factory=History)  # the round records: clients, bytes, epsilon

    def client_weights(self, k: int) -> Weights:
        """Client ``k``'s model: the shared tensors plus its own personal ones."""
        own = iter(self.heads.get(k, [w for w, p in zip(self.weights, self.mask) if p]))
        return [next(own) if p else w for w, p in zip(self.weights, self.mask)]


def fedbn_mask(model: keras.Model) -> list[bool]:
    """For each tensor of ``model.get_weights()``: is it a normalisation layer's (scale, offset,
    moving mean and variance)? FedBN keeps exactly these on each client."""
    ids = {id(v) for layer in models.leaf_layers(model)
           if isinstance(layer, NORM_LAYERS) for v in layer.weights}
    return [id(v) in ids for v in model.weights]


def run_fedper(config: ExperimentConfig, *, dataset: Dataset | None = None,
               simulation: Simulation | None = None,
               personal_layers: Sequence[str] = ("logits",),
               checkpoint_dir: str | Path | None = None, resume: bool = False,
               progress: bool = False) -> FedPerResult:
    """FedPer: federate every trained tensor except the personal layers, which stay on the client.

    The round's stages are ``run_federated``'s (``stages.build_stages(config)``): the configured
    sampling (fixed or Poisson), ``client_update`` from the shared weights with the client's own
    personal layers swapped in, then the shared part of the delta goes through the client-side
    transforms (DP clipping, an attack, the uplink encoding), is decoded and aggregated, and the
    server optimiser applies it. The new personal tensors stay with the client (here: in
    ``heads``, only those tensors). No test-set evaluation per round: FedPer's models are
    evaluated per client (``fedper_accuracy``). ``checkpoint_dir``, ``resume`` and ``progress``
    are ``run_federated``'s (the checkpoint holds the personal tensors too).
    """
    check_supported(config, "FedPer")
    sim = simulation or Simulation(config, dataset)
    return _run_personal(config, sim, personal_mask(sim.model, personal_layers),
                         f"personal layers {list(personal_layers)}", "FedPer",
                         checkpoint_dir, resume, progress)


def run_fedbn(config: ExperimentConfig, *, dataset: Dataset | None = None,
              simulation: Simulation | None = None, checkpoint_dir: str | Path | None = None,
              resume: bool = False, progress: bool = False) -> FedPerResult:
    """FedBN (Li et al. 2021): every normalisation layer's parameters and statistics stay on
    each client; everything else is federated, through the same round stages as ``run_fedper``.

    Chapter "Parameter-efficient federated fine-tuning". Meant for feature skew
    (``ExperimentConfig.feature_skew``): each client's BatchNorm then describes its own image
    style, which one averaged set of statistics cannot. Evaluate per client with
    ``fedper_accuracy``. Needs a strategy that trains the normalisation layers (``"full"``,
    ``"bitfit"`` or ``"partial"`` with a BatchNorm in the unfrozen blocks).
    """
    check_supported(config, "FedBN")
    sim = simulation or Simulation(config, dataset)
    personal = fedbn_mask(sim.model)
    if not any(m and p for m, p in zip(sim.mask, personal)):
        raise ValueError(f"strategy={config.strategy!r} is invalid for FedBN: no normalisation layer "
                         "trains, so there is nothing to keep on the client; allowed 'full', "
                         "'bitfit' or 'partial'.")
    return _run_personal(config, sim, personal, "the normalisation layers", "FedBN",
                         checkpoint_dir, resume, progress)


class PersonalClients:
    """FedPer/FedBN's ``round.Clients``: in process, with the ``personal`` tensors kept home.

    Each client starts from the broadcast shared tensors with its own personal ones swapped in
    (the initial ones until it first trains), trains, keeps the new personal tensors (in
    ``heads``, only those) and sends the rest of its delta through the client-side transforms.
    No test-set evaluation per round: there is no one global model (see ``fedper_accuracy``).
    """

    def __init__(self, sim: Simulation, client: ClientStages, personal: list[bool]):
        self.sim, self.client, self.personal = sim, client, personal
        self.mask = [m and not p for m, p in zip(sim.mask, personal)]  # what travels
        self.variances = sim.variances
        self.heads: dict[int, Weights] = {}  # client -> its personal tensors
        self._initial = sim.model.get_weights()  # frozen and initial personal tensors

    def start_round(self, rnd: int) -> None:
        self.sim.start_round(rnd)  # LP-FT is refused on this path: the split is made once

    def weights_of(self, k: int, shared: Weights) -> Weights:
        """Client ``k``'s model: the broadcast ``shared`` tensors with its own personal ones."""
        own = iter(self.heads.get(k, [w for w, p in zip(self._initial, self.personal) if p]))
        sent = iter(shared)
        return [next(sent) if m else next(own) if p else w
                for w, m, p in zip(self._initial, self.mask, self.personal)]

    def train(self, payloads: list[Payload], streams: RoundStreams, uplink: Uplink) -> list[ClientMessage]:
        sent = [i for i, m in enumerate(self.sim.mask) if m]  # the delta's tensors in the weights
        messages = []
        for p in payloads:
            k = p.client
            shared = p.arrays if p.trained_only else [w for w, m in zip(p.arrays, self.mask) if m]
            start = self.weights_of(k, shared)
            x, y = self.sim.client_data(k)
            res = self.client.update(self.sim.trainer, start, k, x, y, streams)
            full = dict(zip(sent, res.delta))
            head = [start[i] + full[i] if i in full else start[i]
                    for i, personal in enumerate(self.personal) if personal]
            check_finite(head, 0.0, streams.round)  # a personal tensor diverged: stop here too
            self.heads[k] = head
            update = [full[i] for i, m in enumerate(self.mask) if m]
            messages.append(ClientMessage(k, self.client.transform(k, update, uplink, streams),
                                          res.num_examples, res.metrics["train_loss"]))
        return messages

    def evaluate(self, weights: Weights) -> None:
        return None  # no one global model: its rows record NaN (see ``fedper_accuracy``)

    def state(self) -> dict[str, np.ndarray]:
        return {f"{k}/{i}": t for k, head in self.heads.items() for i, t in enumerate(head)}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        heads: dict[int, dict[int, np.ndarray]] = {}
        for key, value in arrays.items():
            k, i = key.split("/")
            heads.setdefault(int(k), {})[int(i)] = value
        self.heads = {k: [h[i] for i in sorted(h)] for k, h in heads.items()}


def _run_personal(config: ExperimentConfig, sim: Simulation, personal: list[bool], what: str,
                  path: str, checkpoint_dir: str | Path | None, resume: bool,
                  progress: bool) -> FedPerResult:
    """The personalised run: ``round.run_rounds`` with ``PersonalClients``.

    Its History says what ran exactly as ``run_federated``'s does (config, data, weights,
    randomness mode, under DP the withheld columns and the privacy spent; a round-0 row with
    NaN test columns); it resumes from a checkpoint (the personal tensors included); a round
    whose shared or personal weights become non-finite stops the run with ``NonFiniteError``.
    """
    from .server import finish_history, new_history, saver, start  # server imports nothing from here

    stages = build_stages(config)
    if not any(m and not p for m, p in zip(sim.mask, personal)):
        raise ValueError(f"strategy={config.strategy!r} with {what} kept personal "
                         "leaves nothing to share: make fewer layers personal or train more of the model.")
    clients = PersonalClients(sim, stages.client, personal)
    state = start(config, stages, clients, sim.model.get_weights(),
                  new_history(config, sim, stages, path=path, personal=what), checkpoint_dir, resume)
    run_rounds(state, stages, clients, config.rounds, progress=progress,
               checkpoint=saver(config, clients, checkpoint_dir))
    finish_history(state.history, config, stages)
    if checkpoint_dir is not None:
        state.history.save(checkpoint_dir)
    return FedPerResult(state.weights, personal, clients.heads,
                        state.history.column("train_loss")[1:], state.history)


def fedper_accuracy(sim: Simulation, result: FedPerResult) -> np.ndarray:
    """Each client's held-out accuracy with the shared tensors and its own personal ones."""
    sim.check_holdout()
    return np.array([sim.accuracy(result.client_weights(k), sim.model_inputs(sim.x_train[idx]),
                               sim.y_train[idx]) for k, idx in enumerate(sim.holdout)])

"""The server loop: broadcast -> client updates -> aggregate -> server update -> evaluate.

Chapter: "Federated learning overview". One round::

    global weights --broadcast--> client_update (local epochs, returns a delta)
       --> aggregate (FedAvg weighted by n_k) --> global += server_lr * aggregate
       --> evaluate --> History row --> checkpoint

Everything random comes from ``randomness``: one stream per purpose (sampling, noise, each
client's shuffling and rounding) derived from ``config.seed`` and the round (and client) in
``config.randomness="simulation"`` mode, so a run resumed from its last checkpoint repeats the
uninterrupted run exactly; fresh OS randomness in ``"secure"`` mode.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from tqdm import tqdm

from . import (
    aggregation,
    compression,
    data,
    evaluation,
    models,
    partitioning,
    privacy,
    randomness,
    robust,
    secure_agg,
)
from .aggregation import Weights
from .client import LocalTrainer, client_update
from .config import ExperimentConfig
from .features import FeatureExtractor
from .history import DP_WITHHELD, History, dp_release
from .server_opt import make_server_optimizer
from .storage import check_finite, check_resume, load_checkpoint, note_resume, save_checkpoint

Dataset = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class FederatedResult:
    history: History
    weights: Weights  # final global weights
    model: keras.Model  # the shared model, holding the final global weights


def sample_clients(num_clients: int, k: int, seed: int, round_: int, mode: str = "simulation") -> list[int]:
    """The ``k`` clients taking part in ``round_`` (sorted): a pure function of its inputs in
    ``mode="simulation"``, drawn from OS randomness in ``"secure"`` mode."""
    rng = randomness.generator(mode, seed, "sampling", round_)
    return sorted(rng.choice(num_clients, size=k, replace=False).tolist())


def load_config_data(config: ExperimentConfig) -> Dataset:
    """The dataset the config names (the embedded ``shapes`` or the real CIFAR-10)."""
    return data.load_dataset(config.dataset, data_dir=config.data_dir, n_train=config.n_train,
                             n_test=config.n_test, seed=config.seed)


class Simulation:
    """Clients' data, the shared model and trainer: what every round reuses.

    Parameters
    ----------
    config
        The validated experiment configuration.
    dataset
        ``((x_train, y_train), (x_test, y_test))``; loaded from ``config`` when ``None``.
    """

    def __init__(self, config: ExperimentConfig, dataset: Dataset | None = None):
        self.config = config
        self.data_source = data.describe(config.dataset, data_dir=config.data_dir)
        if dataset is not None:
            self.data_source += ", arrays passed in by the caller"
        (self.x_train, self.y_train), (self.x_test, self.y_test) = (
            dataset if dataset is not None else load_config_data(config))
        self.parts = partitioning.partition(
            self.y_train, config.num_clients, config.partition, alpha=config.alpha,
            shards_per_client=config.shards_per_client, seed=config.seed,
            quantity_alpha=config.quantity_alpha)
        self.holdout: list[np.ndarray] = []  # per-client evaluation data, never trained on
        if config.holdout_fraction > 0:
            self.parts, self.holdout = evaluation.local_holdout(
                self.parts, config.holdout_fraction, seed=config.seed)
        num_classes = int(max(self.y_train.max(), self.y_test.max())) + 1
        self.model = models.build_model(config.backbone, config.weights, num_classes,
                                        self.x_train.shape[1:], config.input_size, config.seed)
        models.set_strategy(self.model, config.backbone, config.strategy, config.unfreeze_blocks)
        self.mask = models.updatable_mask(self.model)
        self.cached = config.strategy == "head" and config.feature_cache
        train_model = self.model.get_layer("head") if self.cached else self.model
        self.trainer = LocalTrainer(self.model, config, train_model, self.mask)
        self._extract = FeatureExtractor(self.model) if self.cached else None
        self._features: dict[int, np.ndarray] = {}
        self.test_inputs = self._extract(self.x_test) if self.cached else self.x_test

    def client_data(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Client ``k``'s training inputs (images, or cached features) and labels."""
        idx = self.parts[k]
        if not self.cached:
            return self.x_train[idx], self.y_train[idx]
        if k not in self._features:  # computed once per client, reused every round
            self._features[k] = self._extract(self.x_train[idx])
        return self._features[k], self.y_train[idx]

    def model_inputs(self, x: np.ndarray) -> np.ndarray:
        """What the trainer eats for images ``x``: the images, or their cached backbone features."""
        return self._extract(x) if self.cached else x

    def evaluate(self, weights: Weights) -> dict[str, float]:
        self.model.set_weights(weights)
        return self.trainer.evaluate(self.test_inputs, self.y_test)

    def predict(self, weights: Weights, x: np.ndarray) -> np.ndarray:
        """Predicted labels of the model with ``weights`` for images ``x``."""
        self.model.set_weights(weights)
        return self.trainer.predict_logits(self.model_inputs(x)).argmax(axis=1)

    def per_client_accuracy(self, weights: Weights) -> np.ndarray:
        """Accuracy of ``weights`` on each client's held-out data (needs ``holdout_fraction``)."""
        if not self.holdout:
            raise ValueError("per-client evaluation needs held-out data: set "
                             "ExperimentConfig.holdout_fraction, e.g. 0.2.")
        return np.array([np.mean(self.predict(weights, self.x_train[idx]) == self.y_train[idx])
                         for idx in self.holdout])

    def describe(self) -> str:
        return (f"data: {self.data_source}; weights: "
                f"{self.config.weights or 'random init'}; {self.config.describe()}")


def aggregate(config: ExperimentConfig, deltas: list[Weights], num_examples: list[int],
              rng: np.random.Generator, *, like: Weights | None = None) -> Weights:
    """Combine the decoded client deltas of one round into one update (``config.aggregator``).

    ``like`` (tensors shaped as one update) is needed when no client took part (Poisson
    sampling): the DP aggregate is then pure noise, the plain one all zeros.
    """
    if config.dp_clip is not None:  # DP-FedAvg: noisy sum of clipped updates / expected clients
        return privacy.aggregate_config(config, deltas, like if like is not None else deltas[0], rng)
    if not deltas:
        return [np.zeros_like(t) for t in like]
    if config.aggregator in robust.RULES:  # robust to malicious clients; ignores the counts
        return robust.aggregate(config.aggregator, deltas, trim_fraction=config.trim_fraction,
                                byzantine=config.krum_byzantine, multi=config.krum_multi)
    counts = num_examples if config.aggregator == "fedavg" else [1] * len(deltas)
    if config.secure_aggregation:  # the same weighted mean, computed from masked 32-bit integers
        return secure_agg.secure_aggregate(deltas, counts, threshold=config.secagg_threshold,
                                           clip=config.secagg_clip).mean
    return aggregation.fedavg(deltas, counts)


def dp_columns(config: ExperimentConfig, rounds: int) -> dict[str, float]:
    """The History column ``epsilon`` (spent after ``rounds`` rounds, at ``dp_delta``), if DP is on."""
    return {} if config.dp_clip is None else {"epsilon": privacy.epsilon_for_config(config, rounds)}


def run_federated(config: ExperimentConfig, *, dataset: Dataset | None = None,
                  checkpoint_dir: str | Path | None = None, resume: bool = False,
                  progress: bool = True, simulation: Simulation | None = None) -> FederatedResult:
    """Run ``config.rounds`` rounds of federated training and return the history.

    Parameters
    ----------
    config
        The experiment; validated when it was constructed.
    dataset
        Pre-loaded data (tests and notebooks pass small arrays); else loaded from ``config``.
    checkpoint_dir
        If given, the global weights and history are saved there (atomically) after every
        round, and ``history.json`` / ``history.csv`` are written.
    resume
        Continue from the checkpoint in ``checkpoint_dir`` if there is one; the final weights
        equal those of an uninterrupted run with the same config. The checkpoint's config must
        equal ``config`` except for ``rounds`` (so a finished run can be extended).
    progress
        Show a progress bar over rounds (off in tests).
    simulation
        Reuse an existing ``Simulation`` (same config) instead of building one.

    Raises
    ------
    ValueError
        ``resume=True`` with a checkpoint written by a different config (each differing field
        is named), or with fewer ``rounds`` than the checkpoint holds.
    storage.NonFiniteError
        The loss or weights became NaN or infinite; the checkpoint keeps the round before.
    """
    sim = simulation or Simulation(config, dataset)
    weights = sim.model.get_weights()
    history = History(meta={"config": config.to_dict(), "describe": sim.describe(),
                            "dataset": sim.data_source,
                            "weights": config.weights or "random init",
                            "randomness": config.randomness,
                            "withheld": [] if config.dp_clip is None else list(DP_WITHHELD)})
    # What the round remembers besides the weights; each part saves its state in the checkpoint.
    uplink = compression.Uplink.from_config(config)  # client-side update encoding (+ residuals)
    server_opt = make_server_optimizer(config)  # FedAvg's server step, or one with momentum
    stateful = {"uplink": uplink, "server_opt": server_opt}
    seen: set[int] = set()  # clients that already hold the frozen parts of the model
    start = 1
    saved = load_checkpoint(checkpoint_dir) if (resume and checkpoint_dir) else None
    if saved is not None:
        weights, state = saved
        check_resume(state["config"], config.to_dict(), state["round"], config.rounds)  # names each field
        history, seen, start = History.from_dict(state["history"]), set(state["seen"]), state["round"] + 1
        note_resume(history.meta, config.to_dict(), state["round"])  # meta names the rounds now run
        arrays = state.get("arrays", {})
        for name, part in stateful.items():
            part.load_state({k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(name + "/")})
    else:
        ev = sim.evaluate(weights)
        row = dict(round=0, test_accuracy=ev["accuracy"], test_loss=ev["loss"], train_loss=None,
                   clients=[], bytes_up=0, bytes_down=0, seconds=0.0, **dp_columns(config, 0))
        history.append(**(row if config.dp_clip is None else dp_release(row)))

    full_bytes = compression.dense_nbytes(weights)
    sent_bytes = compression.dense_nbytes([w for w, m in zip(weights, sim.mask) if m])
    bar = tqdm(range(start, config.rounds + 1), desc="rounds", disable=not progress,
               file=sys.stderr, initial=start - 1, total=config.rounds)
    for rnd in bar:
        t0 = time.perf_counter()
        mode = config.randomness
        chosen = (privacy.poisson_sample_clients(config.num_clients, config.client_fraction, config.seed, rnd,
                                                 mode) if config.client_sampling == "poisson" else
                  sample_clients(config.num_clients, config.clients_per_round, config.seed, rnd, mode))
        deltas, counts, losses, bytes_up = [], [], [], 0
        for k in chosen:
            x, y = sim.client_data(k)
            result = client_update(sim.trainer, weights, k, x, y, epochs=config.local_epochs,
                                   seed=randomness.entropy(mode, config.seed, "shuffle", rnd, k))
            if config.dp_clip is not None:  # client-level DP: the client clips its own update
                result.delta = privacy.clip_update(result.delta, config.dp_clip)
            # Client side: encode the update for the uplink; the server decodes what arrived.
            delta = robust.attack(config, k, result.delta)  # a malicious client's poisoned delta
            rounding = randomness.generator(mode, config.seed, "rounding", rnd, k)
            received, nbytes = uplink.send(k, delta, rounding)
            deltas.append(received)
            counts.append(result.num_examples)
            losses.append(result.metrics["train_loss"])
            bytes_up += nbytes
        agg = aggregate(config, deltas, counts, randomness.generator(mode, config.seed, "noise", rnd),
                        like=[w for w, m in zip(weights, sim.mask) if m])
        weights = server_opt.step(weights, sim.mask, agg)
        ev = sim.evaluate(weights)
        check_finite(weights, ev["loss"], rnd)  # diverged: stop before the checkpoint is overwritten
        # New clients download the whole model once; afterwards only what training changes.
        down = sum(sent_bytes if k in seen else full_bytes for k in chosen)
        extra_up, extra_down = secure_agg.round_overhead(config, len(chosen))  # keys, shares, unmasking
        bytes_up, down = bytes_up + extra_up, down + extra_down
        seen.update(chosen)
        row = dict(round=rnd, test_accuracy=ev["accuracy"], test_loss=ev["loss"],
                   train_loss=float(np.mean(losses)) if losses else None, clients=chosen,
                   bytes_up=bytes_up, bytes_down=down, seconds=time.perf_counter() - t0,
                   **dp_columns(config, rnd))
        history.append(**(row if config.dp_clip is None else dp_release(row)))  # DP: only what is accounted
        bar.set_postfix(acc=f"{ev['accuracy']:.3f}")
        if checkpoint_dir is not None:
            arrays = {f"{name}/{k}": v for name, part in stateful.items() for k, v in part.state().items()}
            save_checkpoint(checkpoint_dir, weights, {"config": config.to_dict(), "round": rnd,
                                                      "history": history.to_dict(),
                                                      "seen": sorted(seen)}, arrays=arrays)
    if config.dp_clip is not None:  # the final privacy spent, with what it was computed for
        history.meta["privacy"] = {"epsilon": history.rows[-1]["epsilon"], "delta": config.dp_delta,
                                   "accountant": config.dp_accountant,
                                   "sampling": config.client_sampling,
                                   "randomness": config.randomness}
        if config.randomness == "simulation":  # say it where the epsilon is read
            history.meta["privacy"]["warning"] = ("seeded noise (randomness='simulation'): anyone who "
                                                  "knows the seed can remove it; no privacy")
    if checkpoint_dir is not None:
        history.save(checkpoint_dir)
    sim.model.set_weights(weights)
    return FederatedResult(history, weights, sim.model)

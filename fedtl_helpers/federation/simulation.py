"""The simulation's parts: the clients' data, the shared model, the trainer, the feature cache.

Chapter: "Client fine-tuning" (one shared model, weights swapped per client) and "Evaluation"
(per-client held-out data). Everything a round reuses in process; ``InProcessClients`` is the
simulation's runner of ``round.run_round``'s client side. Built from the config (data, partitioning, model and
trainer choices); the round's stages are built separately by ``stages.build_stages``.
"""

from __future__ import annotations

import numpy as np

from ..core.config import ExperimentConfig
from ..inputs import data, partitioning
from ..modeling import models
from ..modeling.features import FeatureExtractor
from ..transforms.aggregation import Weights
from ..transforms.compression import Uplink
from . import evaluation
from .client import ClientSettings, LocalTrainer
from .round import ClientMessage, ClientStages, Payload, RoundStreams, client_side, unpack

Dataset = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


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
        self.settings = ClientSettings.from_config(config)  # the client's settings, read once
        self.data_source = data.describe(config.dataset, data_dir=config.data_dir)
        if dataset is not None:
            self.data_source += ", arrays passed in by the caller"
        (self.x_train, self.y_train), (self.x_test, self.y_test) = (
            dataset if dataset is not None else load_config_data(config))
        self.parts = partitioning.partition(
            self.y_train, config.num_clients, config.partition, alpha=config.alpha,
            shards_per_client=config.shards_per_client, seed=config.seed,
            quantity_alpha=config.quantity_alpha)
        if config.feature_skew:  # each client's images (its held-out part too) in its own style
            self.x_train = partitioning.feature_skew(self.x_train, self.parts, seed=config.seed)
        self.holdout: list[np.ndarray] = []  # per-client evaluation data, never trained on
        if config.holdout_fraction > 0:
            self.parts, self.holdout = evaluation.local_holdout(
                self.parts, config.holdout_fraction, seed=config.seed)
        num_classes = int(max(self.y_train.max(), self.y_test.max())) + 1
        self.model = models.build_model(config.backbone, config.weights, num_classes,
                                        self.x_train.shape[1:], config.input_size, config.seed)
        self.variances = models.variance_mask(self.model)  # clamped at 0 after each server step
        self.strategy: str | None = None  # the strategy in effect (LP-FT: it changes once)
        self._extract: FeatureExtractor | None = None
        self._features: dict[int, np.ndarray] = {}
        self.start_round(1)

    def start_round(self, rnd: int) -> None:
        """Apply the strategy of round ``rnd`` (``models.phase_strategy``): which tensors train
        and are sent (``mask``), the trainer, the feature cache. Only LP-FT changes it, once, at
        ``lpft_switch_round``; a resumed run gets the same strategy for the same round."""
        s = self.settings
        strategy = models.phase_strategy(s.strategy, rnd, s.lpft_switch_round, s.lpft_then)
        if strategy == self.strategy:
            return
        models.set_strategy(self.model, s.backbone, strategy, s.unfreeze_blocks, s.lora_rank)
        self.mask = models.updatable_mask(self.model)
        self.variances = models.variance_mask(self.model)  # LoRA adds tensors: recount
        self.cached = strategy == "head" and s.feature_cache
        train_model = self.model.get_layer("head") if self.cached else self.model
        # LP-FT's fine-tuning phase moves the pretrained backbone slowly, as "partial" does.
        slow_body = strategy == "partial" or (s.strategy == "lpft" and strategy != "head")
        self.trainer = LocalTrainer(
            self.model, learning_rate=s.learning_rate, optimizer=s.optimizer,
            batch_size=s.batch_size, prox_mu=s.prox_mu, train_model=train_model, mask=self.mask,
            body_lr_scale=s.partial_lr_scale if slow_body else 1.0, epochs=s.local_epochs)
        if self.cached and self._extract is None:
            self._extract = FeatureExtractor(self.model)
        self._features = {}  # features of a frozen backbone only: a new strategy starts afresh
        self.test_inputs = self._extract(self.x_test) if self.cached else self.x_test
        self.strategy = strategy

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
        if self.config.bn_recalibration and not self.cached:
            # the clients recompute the statistics of these weights on their training data
            models.recalibrate_batchnorm_federated(self.model, [self.x_train[idx] for idx in self.parts])
        return self.trainer.evaluate(self.test_inputs, self.y_test)

    def predict(self, weights: Weights, x: np.ndarray) -> np.ndarray:
        """Predicted labels of the model with ``weights`` for images ``x``."""
        self.model.set_weights(weights)
        return self.trainer.predict_logits(self.model_inputs(x)).argmax(axis=1)

    def accuracy(self, weights: Weights, inputs: np.ndarray, y: np.ndarray) -> float:
        """Accuracy of ``weights`` on trainer ``inputs`` (images, or their cached features)."""
        self.model.set_weights(weights)
        return float(np.mean(self.trainer.predict_logits(inputs).argmax(axis=1) == y))

    def check_holdout(self) -> None:
        """Raise ``ValueError`` unless every client keeps held-out data (``holdout_fraction``)."""
        if not self.holdout:
            raise ValueError("per-client evaluation needs held-out data: set "
                             "ExperimentConfig.holdout_fraction, e.g. 0.2.")

    def per_client_accuracy(self, weights: Weights) -> np.ndarray:
        """Accuracy of ``weights`` on each client's held-out data (needs ``holdout_fraction``)."""
        self.check_holdout()
        return np.array([self.accuracy(weights, self.model_inputs(self.x_train[idx]), self.y_train[idx])
                         for idx in self.holdout])

    def describe(self) -> str:
        return (f"data: {self.data_source}; weights: "
                f"{self.config.weights or 'random init'}; {self.config.describe()}")


class InProcessClients:
    """The simulation's ``round.Clients``: every client trains in this process, one after the
    other, on the shared model and trainer of ``sim``; ``client`` are the round's client stages.

    A simulated client keeps the frozen tensors of the model it received first; they never
    change, so all of them hold those of the initial model (kept here once).
    """

    def __init__(self, sim: Simulation, client: ClientStages):
        self.sim, self.client = sim, client
        self._initial = sim.model.get_weights()

    @property
    def mask(self) -> list[bool]:
        return self.sim.mask

    @property
    def variances(self) -> list[bool]:
        return self.sim.variances

    def start_round(self, rnd: int) -> None:
        self.sim.start_round(rnd)

    def weights_of(self, payload: Payload) -> Weights:
        """The full weights client ``payload.client`` starts from."""
        if not payload.trained_only:
            return payload.arrays
        return unpack(payload.arrays, self.mask, [w for w, m in zip(self._initial, self.mask) if not m])

    def train(self, payloads: list[Payload], streams: RoundStreams, uplink: Uplink) -> list[ClientMessage]:
        messages = []
        for p in payloads:
            x, y = self.sim.client_data(p.client)
            messages.append(client_side(self.client, self.sim.trainer, self.weights_of(p), p.client,
                                        x, y, uplink, streams))
        return messages

    def evaluate(self, weights: Weights) -> dict[str, float]:
        return self.sim.evaluate(weights)

    def state(self) -> dict[str, np.ndarray]:
        return {}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        if arrays:
            raise ValueError("the in-process clients keep no state, but the checkpoint holds "
                             f"{sorted(arrays)}.")

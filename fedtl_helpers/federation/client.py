"""Client update: local training from the broadcast global weights, returning a delta.

Chapter: "Client fine-tuning". The article gives every client its own
``clone_model(base_model)`` and calls ``compile`` + ``fit`` each round. That copies the
architecture only (random weights, no head), keeps one model per client in memory, and resets
the optimizer by recompiling. Here one ``LocalTrainer`` serves every client:

* one Keras model, whose weights are swapped in from the broadcast global weights;
* one compiled ``tf.function`` that runs a whole local epoch in the graph, traced once for
  all clients and rounds (no retracing, no recompiling, no Python per batch);
* optimizer state handled explicitly: every client starts from a fresh optimizer state (as a
  client that had never trained would), by zeroing the slot variables and the step counter
  and keeping the learning rate (zeroing *all* optimizer variables in Keras 3 also zeroes the
  learning rate, which is a variable: training then silently stops).

Memory therefore stays flat in the number of clients.

FedProx (chapter "Non-IID data and personalisation", Li et al. 2020): with ``prox_mu > 0``
each client minimises ``loss + prox_mu/2 * ||w - w_global||^2``, which keeps a client with
skewed data from drifting far from the global model. ``w_global`` lives in non-trainable
variables that ``fit`` assigns from the weights it starts from (the broadcast global weights),
so the traced epoch is the same for every client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf

from ..transforms.aggregation import Weights

if TYPE_CHECKING:
    from ..core.config import ExperimentConfig

_LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@dataclass(frozen=True)
class ClientSettings:
    """Everything a client's local training reads from the config, read once
    (``from_config``): the strategy (which tensors train, and LP-FT's switch), the optimiser,
    the batch size, the local epochs, FedProx's weight. ``Simulation`` builds its model and
    ``LocalTrainer`` from it; nothing reads the config inside a round."""

    strategy: str
    backbone: str
    unfreeze_blocks: int
    lora_rank: int
    lpft_switch_round: int
    lpft_then: str
    feature_cache: bool
    learning_rate: float
    optimizer: str
    batch_size: int
    local_epochs: int
    prox_mu: float
    partial_lr_scale: float

    @classmethod
    def from_config(cls, c: ExperimentConfig) -> ClientSettings:
        return cls(strategy=c.strategy, backbone=c.backbone, unfreeze_blocks=c.unfreeze_blocks,
                   lora_rank=c.lora_rank, lpft_switch_round=c.lpft_switch_round,
                   lpft_then=c.lpft_then, feature_cache=c.feature_cache,
                   learning_rate=c.learning_rate, optimizer=c.client_optimizer,
                   batch_size=c.batch_size, local_epochs=c.local_epochs, prox_mu=c.prox_mu,
                   partial_lr_scale=c.partial_lr_scale)


@dataclass
class ClientResult:
    """What a client sends back: the change of the tensors it may update, and its size."""

    client_id: int
    delta: Weights  # only the tensors where the trainer's ``mask`` is True, in order
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)


CLIENT_MOMENTUM = 0.9  # ``"sgd_momentum"``: heavy-ball SGD with the usual coefficient


def _make_optimizer(name: str, lr: float) -> keras.optimizers.Optimizer:
    """The client's local optimizer (``ExperimentConfig.client_optimizer``); its state (Adam's
    moments, the momentum buffer) is reset at the start of every client's local training."""
    if name == "adam":
        return keras.optimizers.Adam(lr)
    if name == "sgd_momentum":
        return keras.optimizers.SGD(lr, momentum=CLIENT_MOMENTUM)
    if name == "sgd":
        return keras.optimizers.SGD(lr)
    raise ValueError(f"optimizer={name!r} is invalid: allowed 'adam', 'sgd', 'sgd_momentum'.")


def proximal_term(variables, anchors, mu: float):
    """FedProx's penalty ``mu/2 * sum ||v - a||^2`` (its gradient is ``mu * (v - a)``)."""
    return 0.5 * mu * tf.add_n([tf.reduce_sum(tf.square(v - a)) for v, a in zip(variables, anchors)])


def reset_optimizer_inplace(optimizer: keras.optimizers.Optimizer) -> None:
    """Zero the optimizer's slots and step counter but keep its learning rate."""
    lr = getattr(optimizer, "_learning_rate", None)
    for v in optimizer.variables:
        if v is not lr:
            v.assign(tf.zeros_like(v))


class LocalTrainer:
    """Trains one shared Keras model on one client at a time.

    Parameters
    ----------
    model
        Built by ``models.build_model`` with a strategy applied (``models.set_strategy``).
    learning_rate, optimizer
        The clients' optimizer (``"adam"``, ``"sgd"`` or ``"sgd_momentum"``) and its learning
        rate (the new head's).
    batch_size
        Local minibatch size.
    epochs
        Local epochs per round (``client_update``'s default).
    body_lr_scale
        The backbone's learning rate is ``learning_rate * body_lr_scale`` (``"partial"``: the
        unfrozen blocks learn more slowly than the new head, so the pretrained features are
        adjusted, not overwritten).
    prox_mu
        FedProx's proximal weight (0: plain local training).
    train_model
        The (sub-)model whose forward pass is trained: ``model`` itself, or its ``"head"``
        when training on cached backbone features.
    mask
        ``models.updatable_mask(model)``: which tensors clients update and send.
    """

    def __init__(self, model: keras.Model, *, learning_rate: float, optimizer: str = "adam",
                 batch_size: int = 32, body_lr_scale: float = 1.0, prox_mu: float = 0.0,
                 train_model: keras.Model | None = None, mask: list[bool] | None = None,
                 epochs: int = 1):
        self.model = model
        self.epochs = epochs
        self.train_model = train_model or model
        self.mask = mask if mask is not None else [True] * len(model.weights)
        # Two optimizers when the backbone trains: the head's and the backbone's learning rates.
        head_vars = model.get_layer("head").trainable_variables
        head_ids = {id(v) for v in head_vars}
        body_vars = [v for v in self.train_model.trainable_variables if id(v) not in head_ids]
        self.groups = [(head_vars, _make_optimizer(optimizer, learning_rate))]
        if body_vars:
            self.groups.append((body_vars, _make_optimizer(optimizer, learning_rate * body_lr_scale)))
        for variables, opt in self.groups:
            opt.build(variables)
        self.prox_mu = float(prox_mu)
        # FedProx's w_global: variables (not constants), so assigning them never retraces.
        self._anchors = ([tf.Variable(v, trainable=False, name="prox_anchor")
                          for group, _ in self.groups for v in group] if self.prox_mu > 0 else [])
        self.batch_size = batch_size
        shape = (None, *self.train_model.input_shape[1:])
        in_dtype = tf.uint8 if len(shape) == 4 else tf.float32
        x_spec = tf.TensorSpec(shape, in_dtype)
        ints = tf.TensorSpec((None,), tf.int64)
        # One call runs a whole epoch inside the graph: no Python overhead per batch, and a
        # single trace for every client, round and dataset size (the shapes are dynamic).
        self._train_epoch = tf.function(self._epoch, input_signature=[x_spec, ints, ints])
        self._predict = tf.function(
            lambda x: self.train_model(tf.cast(x, tf.float32), training=False),
            input_signature=[x_spec])

    def _step(self, x, y):
        with tf.GradientTape() as tape:
            logits = self.train_model(tf.cast(x, tf.float32), training=True)
            loss = _LOSS(y, logits)
            variables = [v for group, _ in self.groups for v in group]
            objective = loss
            if self._anchors:  # FedProx; the reported loss stays the data loss
                objective += proximal_term(variables, self._anchors, self.prox_mu)
        grads = tape.gradient(objective, variables)
        start = 0
        for group, opt in self.groups:
            opt.apply_gradients(zip(grads[start:start + len(group)], group))
            start += len(group)
        return loss

    def _epoch(self, x, y, order):
        n = tf.shape(order, out_type=tf.int64)[0]
        total = tf.constant(0.0)
        for start in tf.range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            loss = self._step(tf.gather(x, idx), tf.gather(y, idx))
            total += loss * tf.cast(tf.size(idx), tf.float32)
        return total / tf.cast(n, tf.float32)

    def fit(self, x: np.ndarray, y: np.ndarray, epochs: int, rng: np.random.Generator) -> float:
        """Fresh optimizer state, then ``epochs`` shuffled passes; returns the mean data loss.

        With ``prox_mu > 0`` the proximal term pulls towards the weights ``fit`` starts from.
        """
        for _, opt in self.groups:
            reset_optimizer_inplace(opt)
        variables = [v for group, _ in self.groups for v in group]
        for anchor, v in zip(self._anchors, variables):
            anchor.assign(v)
        x = tf.convert_to_tensor(x)  # once per client, not once per epoch
        y = tf.convert_to_tensor(y.astype(np.int64))
        losses = [float(self._train_epoch(x, y, rng.permutation(len(y)).astype(np.int64)))
                  for _ in range(epochs)]
        return float(np.mean(losses))

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> dict[str, float]:
        """Loss and accuracy of the current weights on ``(x, y)``."""
        logits = self.predict_logits(x, batch_size)
        loss = float(_LOSS(y.astype(np.int64), logits))
        return {"loss": loss, "accuracy": float(np.mean(logits.argmax(axis=1) == y))}

    def predict_logits(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        return np.concatenate([self._predict(x[s:s + batch_size]).numpy()
                               for s in range(0, len(x), batch_size)])


def client_update(trainer: LocalTrainer, global_weights: Weights, client_id: int,
                  x: np.ndarray, y: np.ndarray, *, seed: tuple[int, ...],
                  epochs: int | None = None) -> ClientResult:
    """Load the broadcast weights, train locally, return the delta of the sent tensors.

    Parameters
    ----------
    trainer
        The shared ``LocalTrainer`` (one per simulation, not one per client).
    global_weights
        The full weights broadcast by the server this round.
    client_id, x, y
        The client and its local data (images, or cached features for a head-only trainer).
    epochs
        Local epochs; the trainer's (``ClientSettings.local_epochs``) by default. The batch
        size is the trainer's, fixed when its step was traced.
    seed
        Entropy for this client's shuffling, e.g. ``(seed, round, client_id)``, so a resumed
        run repeats exactly what the uninterrupted run did.
    """
    trainer.model.set_weights(global_weights)
    train_loss = trainer.fit(x, y, trainer.epochs if epochs is None else epochs,
                             np.random.default_rng(seed))
    new = trainer.model.get_weights()
    delta = [n - g for n, g, m in zip(new, global_weights, trainer.mask) if m]
    return ClientResult(client_id, delta, len(x), {"train_loss": train_loss})

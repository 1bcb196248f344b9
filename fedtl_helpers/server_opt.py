"""Server optimisers: how the aggregated client delta moves the global model.

Chapter: "FedAvg" (``server_lr``) and "Non-IID data" (server momentum, adaptive optimisers).
The aggregate of the clients' deltas is a pseudo-gradient (its negative); a server optimiser
turns it into a step. Plain FedAvg is SGD with rate 1: ``global += server_lr * aggregate``.

Every optimiser has the same small interface, so the server loop has no special cases:

* ``step(weights, mask, aggregate) -> new weights`` (``aggregate`` holds only the tensors
  where ``mask`` is True, in order);
* ``state() -> dict[str, np.ndarray]`` and ``load_state(arrays)``: whatever the optimiser
  remembers between rounds, saved in every checkpoint so a resumed run continues exactly.
"""

from __future__ import annotations

import numpy as np

from .aggregation import Weights
from .config import ExperimentConfig


def server_update(global_weights: Weights, mask: list[bool], aggregate: Weights,
                  server_lr: float) -> Weights:
    """``global += server_lr * aggregate`` on the tensors clients update (``mask``)."""
    it = iter(aggregate)
    return [w + server_lr * next(it) if m else w for w, m in zip(global_weights, mask)]


class ServerSGD:
    """Plain FedAvg's server step (stateless): ``global += lr * aggregate``."""

    def __init__(self, lr: float = 1.0):
        self.lr = lr

    def step(self, weights: Weights, mask: list[bool], aggregate: Weights) -> Weights:
        return server_update(weights, mask, aggregate, self.lr)

    def state(self) -> dict[str, np.ndarray]:
        return {}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        if arrays:
            raise ValueError(f"ServerSGD has no state, but the checkpoint holds {sorted(arrays)}.")


def make_server_optimizer(config: ExperimentConfig) -> ServerSGD:
    """The server optimiser ``config`` names."""
    return ServerSGD(config.server_lr)

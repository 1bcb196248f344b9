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


def _load_slots(owner: str, arrays: dict[str, np.ndarray], names: tuple[str, ...]) -> dict[str, Weights]:
    """``{"m/0": a, "m/1": b}`` -> ``{"m": [a, b]}``, rejecting names this optimiser never saves."""
    slots: dict[str, dict[int, np.ndarray]] = {n: {} for n in names}
    for key, value in arrays.items():
        name, _, index = key.partition("/")
        if name not in slots or not index.isdigit():
            raise ValueError(f"{owner} cannot load state array {key!r}: expected {names} slots "
                             "('<slot>/<index>'); was the checkpoint written by another optimiser?")
        slots[name][int(index)] = np.array(value)
    return {n: [d[i] for i in sorted(d)] for n, d in slots.items()}


def _save_slots(slots: dict[str, Weights | None]) -> dict[str, np.ndarray]:
    return {f"{name}/{i}": a for name, arrays in slots.items() if arrays is not None
            for i, a in enumerate(arrays)}


class ServerMomentum:
    """FedAvgM (Hsu et al. 2019): ``v = beta * v + aggregate; global += lr * v``.

    Momentum carries the direction of earlier rounds, which damps the round-to-round swings
    that skewed clients cause. The velocity ``v`` is saved in checkpoints.
    """

    def __init__(self, lr: float = 1.0, momentum: float = 0.9):
        self.lr, self.momentum = lr, momentum
        self.velocity: Weights | None = None  # built at the first step (shapes of the aggregate)

    def step(self, weights: Weights, mask: list[bool], aggregate: Weights) -> Weights:
        if self.velocity is None:
            self.velocity = [np.zeros_like(a) for a in aggregate]
        self.velocity = [self.momentum * v + a for v, a in zip(self.velocity, aggregate)]
        return server_update(weights, mask, self.velocity, self.lr)

    def state(self) -> dict[str, np.ndarray]:
        return _save_slots({"v": self.velocity})

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.velocity = _load_slots("ServerMomentum", arrays, ("v",))["v"] or None


class ServerAdam:
    """FedAdam (Reddi et al. 2021, "Adaptive federated optimization", Algorithm 2).

    ``m = b1*m + (1-b1)*agg; v = b2*v + (1-b2)*agg**2; global += lr * m / (sqrt(v) + tau)``,
    without bias correction, as in the paper. ``tau`` bounds the step where ``v`` is tiny;
    each coordinate moves by at most about ``lr`` per round, so ``lr`` is small (0.01 to 0.1).
    """

    def __init__(self, lr: float = 0.01, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3):
        self.lr, self.beta1, self.beta2, self.tau = lr, beta1, beta2, tau
        self.m: Weights | None = None
        self.v: Weights | None = None

    def step(self, weights: Weights, mask: list[bool], aggregate: Weights) -> Weights:
        if self.m is None or self.v is None:
            self.m = [np.zeros_like(a) for a in aggregate]
            self.v = [np.zeros_like(a) for a in aggregate]
        b1, b2 = self.beta1, self.beta2
        self.m = [b1 * m + (1 - b1) * a for m, a in zip(self.m, aggregate)]
        self.v = [b2 * v + (1 - b2) * a * a for v, a in zip(self.v, aggregate)]
        direction = [(m / (np.sqrt(v) + self.tau)).astype(m.dtype) for m, v in zip(self.m, self.v)]
        return server_update(weights, mask, direction, self.lr)

    def state(self) -> dict[str, np.ndarray]:
        return _save_slots({"m": self.m, "v": self.v})

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        slots = _load_slots("ServerAdam", arrays, ("m", "v"))
        self.m, self.v = slots["m"] or None, slots["v"] or None


ServerOptimizer = ServerSGD | ServerMomentum | ServerAdam


def make_server_optimizer(name: str = "sgd", lr: float = 1.0, *, momentum: float = 0.9,
                          beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3) -> ServerOptimizer:
    """A fresh server optimiser: ``"sgd"`` (FedAvg), ``"momentum"`` (FedAvgM), ``"adam"`` (FedAdam).

    Raises
    ------
    ValueError
        An unknown ``name``.
    """
    if name == "momentum":
        return ServerMomentum(lr, momentum)
    if name == "adam":
        return ServerAdam(lr, beta1, beta2, tau)
    if name == "sgd":
        return ServerSGD(lr)
    raise ValueError(f"name={name!r} is invalid: allowed 'sgd', 'momentum' or 'adam'.")

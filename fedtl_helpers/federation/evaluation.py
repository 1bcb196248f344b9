"""Evaluation beyond one global number: per-client accuracy, confusion matrix, spread.

Chapter: "Evaluation". The global test accuracy says how good the average client's model is
on the average image; federated learning also has to ask how good it is *for each client*,
on data like that client's. Each client keeps a held-out slice of its own data
(``local_holdout``) that never leaves the client and is never trained on;
``server.Simulation.per_client_accuracy`` evaluates a model on each of them.
"""

from __future__ import annotations

import numpy as np


def local_holdout(parts: list[np.ndarray], fraction: float = 0.2, *,
                  seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Split every client's indices into (train, held-out), each client on its own.

    Parameters
    ----------
    parts
        Index arrays, one per client (from ``partitioning.partition``).
    fraction
        Share of each client's examples held out, in (0, 1).
    seed
        Seeds the choice of held-out examples.

    Raises
    ------
    ValueError
        ``fraction`` outside (0, 1), or a client too small to keep at least one example for
        training and one for evaluation (the message names the client).
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction={fraction!r} is invalid: allowed a number in (0, 1).")
    rng = np.random.default_rng(seed)
    train, held = [], []
    for k, idx in enumerate(parts):
        n_held = int(round(fraction * len(idx)))
        if n_held < 1 or n_held >= len(idx):
            raise ValueError(f"client {k} has {len(idx)} examples: too few to hold out "
                             f"fraction={fraction} and still train; use fewer clients or more data.")
        shuffled = rng.permutation(idx)
        held.append(np.sort(shuffled[:n_held]))
        train.append(np.sort(shuffled[n_held:]))
    return train, held


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``cm[true, predicted]``."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return cm


def spread(acc: np.ndarray) -> dict[str, float]:
    """Summary of per-client accuracies: mean, worst, best, standard deviation."""
    acc = np.asarray(acc, dtype=float)
    return {"mean": float(acc.mean()), "worst": float(acc.min()), "best": float(acc.max()),
            "std": float(acc.std())}

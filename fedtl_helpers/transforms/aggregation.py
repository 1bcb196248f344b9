"""Aggregation rules: pure functions over lists of numpy arrays.

Chapter: "FedAvg: weighted aggregation". A model's weights are ``Weights = list[np.ndarray]``
(what ``model.get_weights()`` returns); no Keras is needed here, so every rule can be checked
by hand: the FedAvg of ``[1, 2]`` (n=1) and ``[3, 4]`` (n=3) is ``[2.5, 3.5]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Weights = list[np.ndarray]


def check_compatible(client_weights: Sequence[Weights]) -> None:
    """Raise ``ValueError`` unless every client sent the same list of tensor shapes."""
    if len(client_weights) == 0:
        raise ValueError("client_weights is empty: aggregation needs at least one client update.")
    ref = [np.shape(w) for w in client_weights[0]]
    for k, weights in enumerate(client_weights[1:], start=1):
        shapes = [np.shape(w) for w in weights]
        if len(shapes) != len(ref):
            raise ValueError(
                f"client_weights[{k}] has {len(shapes)} tensors but client_weights[0] has {len(ref)}."
            )
        for i, (a, b) in enumerate(zip(ref, shapes)):
            if a != b:
                raise ValueError(
                    f"client_weights[{k}][{i}] has shape {b} but client_weights[0][{i}] has shape {a}."
                )


def fedavg(client_weights: Sequence[Weights], num_examples: Sequence[float]) -> Weights:
    """Weighted mean of client weights (or deltas), weighted by their example counts.

    This is the article's rule (section IV.3): ``w = sum_k n_k / n * w_k``.

    Parameters
    ----------
    client_weights
        One ``Weights`` list per client, all with the same shapes.
    num_examples
        Positive example count ``n_k`` per client.

    Returns
    -------
    Weights
        New float arrays (inputs are not modified), in the dtype of the first client's tensors.

    Raises
    ------
    ValueError
        Empty input, mismatched shapes, a count that is not positive and finite, or a
        number of counts different from the number of clients.
    """
    check_compatible(client_weights)
    counts = np.asarray(num_examples, dtype=np.float64)
    if counts.shape != (len(client_weights),):
        raise ValueError(
            f"num_examples has {counts.size} entries but there are {len(client_weights)} clients."
        )
    if not np.all(np.isfinite(counts)) or np.any(counts <= 0):
        raise ValueError(f"num_examples must all be positive and finite, got {counts.tolist()}.")
    coeffs = counts / counts.sum()
    out = []
    for i, first in enumerate(client_weights[0]):
        # Accumulate in float64 so the result does not depend on client order beyond rounding.
        acc = np.zeros(np.shape(first), dtype=np.float64)
        for c, weights in zip(coeffs, client_weights):
            acc += c * np.asarray(weights[i], dtype=np.float64)
        out.append(acc.astype(np.asarray(first).dtype, copy=False))
    return out


def mean(client_weights: Sequence[Weights]) -> Weights:
    """Unweighted mean (every client counts the same, whatever its size)."""
    return fedavg(client_weights, [1.0] * len(client_weights))

"""Checkers for chapter 6, "FedAvg": the rule itself, upload per round, an alpha that skews.

Chapter: "FedAvg: weighted aggregation" (exercises 6.1 to 6.3).
"""

from __future__ import annotations

import numpy as np

from ._common import Verdict, attempt, checker, fail, passed, same_arrays, show


@checker("6.1", "Write my_fedavg(client_weights, num_examples).")
def exercise_6_1(my_fedavg) -> Verdict:
    """``my_fedavg(client_weights, num_examples)``: weighted mean of lists of arrays."""
    clients = [[np.array([1.0, 2.0]), np.array([[0.0]])], [np.array([3.0, 4.0]), np.array([[4.0]])]]
    frozen = [[w.copy() for w in c] for c in clients]
    got = attempt("6.1", my_fedavg, clients, [1, 3], what="[1, 2] | [[0]] (n=1) and [3, 4] | [[4]] (n=3)")
    expect = [np.array([2.5, 3.5]), np.array([[3.0]])]
    if not all(np.array_equal(a, b) for c, f in zip(clients, frozen) for a, b in zip(c, f)):
        fail("6.1", "your function changed the clients' arrays in place (e.g. with *= or +=): return new "
                    "arrays and leave the inputs as they were.")
    if not isinstance(got, list | tuple):
        fail("6.1", f"expected a list of arrays (one per tensor), got {type(got).__name__}.")
    if same_arrays(got, [np.array([2.0, 3.0]), np.array([[2.0]])]):
        fail("6.1", "you returned [2, 3] | [[2]], the unweighted mean; weighted by examples it should be "
                    "[2.5, 3.5] | [[3]]: did you weight each client by num_examples[k] / "
                    "sum(num_examples)?")
    if same_arrays(got, [np.array([10.0, 14.0]), np.array([[12.0]])]):
        fail("6.1", "you returned [10, 14] | [[12]], the weighted *sum*: divide by the total number of "
                    "examples (4) so that the coefficients sum to 1.")
    if len(got) == 1 and same_arrays(got, expect[:1]):
        fail("6.1", "you returned only the first tensor: average every tensor of the list (a model has "
                    "kernels and biases), giving [2.5, 3.5] | [[3]].")
    if not same_arrays(got, expect):
        fail("6.1", f"you returned {show(list(got))}, expected {show(expect)}.")
    got = attempt("6.1", my_fedavg, [[np.array([5.0])]], [7], what="a single client")
    if not same_arrays(got, [np.array([5.0])]):
        fail("6.1", "with a single client the average is that client's weights [5.0]; you returned "
                    f"{show(got)}.")
    return passed("6.1", "FedAvg of [1, 2] (n=1) and [3, 4] (n=3) is [2.5, 3.5], every tensor averaged, "
                         "inputs unchanged.")


@checker("6.2", "Write upload_per_round(num_clients, client_fraction, update_bytes).")
def exercise_6_2(upload_per_round) -> Verdict:
    """``upload_per_round(num_clients, client_fraction, update_bytes)``: bytes received per round."""
    for n, f, b in ((10, 0.5, 1000), (10, 0.2, 1000), (10, 1.0, 40), (3, 0.1, 100), (10, 0.25, 8)):
        k = max(1, round(f * n))
        got = attempt("6.2", upload_per_round, n, f, b,
                      what=f"num_clients={n}, client_fraction={f}, update_bytes={b}")
        if got == k * b:
            continue
        if n == 3 and got == 0:
            fail("6.2", "with 3 clients and client_fraction=0.1 you returned 0 bytes: a round always "
                        "samples at least one client, max(1, round(0.1 * 3)) = 1 (expected 100).")
        if np.isclose(got, f * n * b):
            fail("6.2", f"for {n} clients and fraction {f} you returned {show(got)}: the number of clients "
                        f"is a whole number, max(1, round(fraction * num_clients)) = {k}, so expected "
                        f"{k * b}.")
        if got == n * b:
            fail("6.2", f"you returned {show(got)}, the upload of all {n} clients; only the sampled ones "
                        f"({k} with fraction {f}) send an update: expected {k * b}.")
        fail("6.2", f"for num_clients={n}, client_fraction={f}, update_bytes={b} you returned {show(got)}, "
                    f"expected {k * b} ({k} clients x {b} bytes).")
    return passed("6.2", "Clients per round = max(1, round(fraction x num_clients)), as in "
                         "ExperimentConfig.clients_per_round; each sends one update.")


@checker("6.3", "Set my_alpha to a Dirichlet concentration.")
def exercise_6_3(my_alpha) -> Verdict:
    """``my_alpha``: a Dirichlet alpha whose 10-client split has label skew >= 0.6."""
    from ..inputs.partitioning import label_skew, partition, partition_stats

    labels = np.repeat(np.arange(10), 100)
    if isinstance(my_alpha, bool) or not isinstance(my_alpha, int | float) or not my_alpha > 0:
        fail("6.3", f"my_alpha={my_alpha!r}: the Dirichlet concentration must be a number > 0.")
    try:
        parts = partition(labels, 10, "dirichlet", alpha=float(my_alpha), seed=0)
    except ValueError as e:
        fail("6.3", f"partition refused my_alpha={my_alpha}: {e}. Take a slightly larger value.")
    skew = label_skew(partition_stats(labels, parts))
    if skew < 0.6:
        fail("6.3", f"with alpha={my_alpha} the label skew of 10 clients is {skew:.2f}, expected at least "
                    "0.60: the label mixes are still close to the global mix. Smaller alpha means more "
                    "skew (alpha=100 is nearly IID, alpha=0.1 gives most clients two or three classes).")
    return passed("6.3", f"alpha={my_alpha} gives label skew {skew:.2f} over 10 clients (1,000 labels, "
                         "seed 0): now run the notebook's weighting comparison with "
                         f"uneven_alpha={my_alpha}.")

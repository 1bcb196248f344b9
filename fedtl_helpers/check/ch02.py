"""Checkers for chapter 2, "Federated learning overview": the delta, the server step, local steps.

Chapter: "Federated learning overview" (exercises 2.1 to 2.3).
"""

from __future__ import annotations

import math

import numpy as np

from ._common import Verdict, attempt, checker, fail, passed, same_arrays, show


@checker("2.1", "Write client_delta(new_weights, global_weights).")
def exercise_2_1(client_delta) -> Verdict:
    """``client_delta(new_weights, global_weights)``: what a client sends back, tensor by tensor."""
    new = [np.array([[1.5, 2.0], [3.0, 4.0]]), np.array([0.5, -1.0])]
    old = [np.array([[1.0, 2.0], [2.0, 5.0]]), np.array([0.0, 0.0])]
    expect = [n - o for n, o in zip(new, old)]
    got = attempt("2.1", client_delta, [a.copy() for a in new], [a.copy() for a in old],
                  what="two tensors (a 2x2 kernel and a bias)")
    if not isinstance(got, list | tuple):
        fail("2.1", f"expected a list with one array per tensor, got {type(got).__name__}.")
    if same_arrays(got, [-e for e in expect]):
        fail("2.1", "the sign is flipped: you returned global - new. The delta is new - global, so that "
                    "the server can add it: global + delta = new.")
    if len(got) != 2:
        fail("2.1", f"you returned {len(got)} arrays for 2 tensors: the delta has one array per tensor "
                    "(loop over zip(new_weights, global_weights)).")
    if not same_arrays(got, expect):
        fail("2.1", f"you returned {show(list(got))}, expected {show(expect)} (new - global, per tensor).")
    return passed("2.1", "The delta is new - global for every tensor; global + delta gives the client's "
                         "model.")


@checker("2.2", "Write server_step(global_weights, deltas, counts, server_lr).")
def exercise_2_2(server_step) -> Verdict:
    """``server_step(global_weights, deltas, counts, server_lr)``: global + server_lr * FedAvg(deltas)."""
    g = [np.array([10.0, 10.0])]
    deltas = [[np.array([1.0, 2.0])], [np.array([3.0, 4.0])]]
    counts = [1, 3]
    got = attempt("2.2", server_step, [a.copy() for a in g], deltas, counts, 1.0,
                  what="global [10, 10], deltas [1, 2] (n=1) and [3, 4] (n=3), server_lr=1")
    expect = [np.array([12.5, 13.5])]
    if same_arrays(got, [np.array([12.0, 13.0])]):
        fail("2.2", "you returned [12, 13] but expected [12.5, 13.5]: that is the unweighted mean of the "
                    "deltas. Weight each delta by its client's share of the examples, n_k / n (here 1/4 "
                    "and 3/4), e.g. with fl.fedavg(deltas, counts).")
    if same_arrays(got, [np.array([2.5, 3.5])]):
        fail("2.2", "you returned the average delta [2.5, 3.5] itself; the server must add it to the "
                    "global weights: [10, 10] + [2.5, 3.5] = [12.5, 13.5].")
    if same_arrays(got, [np.array([20.0, 24.0])]):
        fail("2.2", "you returned [20, 24]: the weights n_k were not divided by n. The coefficients n_k / "
                    "n must sum to 1.")
    if not same_arrays(got, expect):
        fail("2.2", f"you returned {show(got)}, expected {show(expect)} = global + FedAvg of the deltas.")
    got = attempt("2.2", server_step, [a.copy() for a in g], deltas, counts, 0.5, what="the same with "
                                                                                       "server_lr=0.5")
    if same_arrays(got, expect):
        fail("2.2", "with server_lr=0.5 you still returned [12.5, 13.5]: multiply the averaged delta by "
                    "server_lr before adding it (expected [11.25, 11.75]).")
    if not same_arrays(got, [np.array([11.25, 11.75])]):
        fail("2.2", f"with server_lr=0.5 you returned {show(got)}, expected [11.25, 11.75].")
    return passed("2.2", "global + server_lr * sum_k (n_k / n) delta_k: [12.5, 13.5] with server_lr=1, "
                         "[11.25, 11.75] with 0.5.")


@checker("2.3", "Write local_steps(n_examples, batch_size, epochs).")
def exercise_2_3(local_steps) -> Verdict:
    """``local_steps(n_examples, batch_size, epochs)``: gradient steps one client takes in a round."""
    cases = [(1000, 32, 1), (1000, 32, 3), (64, 32, 2), (10, 32, 1)]
    for n, b, e in cases:
        got = attempt("2.3", local_steps, n, b, e, what=f"n_examples={n}, batch_size={b}, epochs={e}")
        expect = e * math.ceil(n / b)
        if got == expect:
            continue
        if got == e * (n // b):
            fail("2.3", f"for {n} examples, batch {b}, {e} epoch(s) you returned {show(got)}, expected "
                        f"{expect}: the last, smaller batch counts too (range(0, n, batch) in local_train "
                        f"gives ceil(n / batch) = {math.ceil(n / b)} batches per epoch).")
        if got == math.ceil(n / b):
            fail("2.3", f"for {e} epochs you returned {show(got)}, the steps of one epoch: multiply by "
                        f"epochs (expected {expect}).")
        fail("2.3", f"for n_examples={n}, batch_size={b}, epochs={e} you returned {show(got)}, expected "
                    f"{expect} = epochs * ceil(n_examples / batch_size).")
    return passed("2.3", "epochs * ceil(n / batch): 32 steps for 1,000 examples in batches of 32, and 1 "
                         "step for a client with 10 examples.")

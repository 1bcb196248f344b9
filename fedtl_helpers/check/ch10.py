"""Checkers for chapter 10, "Non-IID data and personalisation"."""

from __future__ import annotations

import numpy as np

from ._common import Verdict, fail, is_placeholder, not_attempted, passed

# The label skew at which FedAvg on the embedded data clearly breaks (chapter 10 measures it).
_BROKEN_SKEW = 0.5



def exercise_10_1(alpha) -> Verdict:
    """An ``alpha`` that makes the Dirichlet split skewed enough to break FedAvg."""
    from ..inputs.partitioning import label_skew, partition, partition_stats

    if alpha is None:
        return not_attempted("10.1", "Set my_alpha to a Dirichlet concentration, a positive number; the "
                             "accuracy-vs-alpha figure shows where FedAvg starts to fail.")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        fail("10.1", f"alpha must be a number > 0 (a Dirichlet concentration), got {alpha!r}.")
    labels = np.arange(3000) % 10
    skew = label_skew(partition_stats(labels, partition(labels, 10, "dirichlet", alpha=float(alpha), seed=0)))
    if skew < _BROKEN_SKEW:
        fail("10.1", f"alpha={alpha} gives a mean label skew of {skew:.2f} over 10 clients: clients still "
             f"see most classes and FedAvg copes. Smaller alpha means more skew; find one with a skew "
             f"of at least {_BROKEN_SKEW} (the accuracy-vs-alpha plot shows where FedAvg falls).")
    return passed("10.1", f"alpha={alpha} gives a mean label skew of {skew:.2f} (>= {_BROKEN_SKEW}): "
                  "most clients hold a few dominant classes.")


def exercise_10_2(interpolate) -> Verdict:
    """``interpolate(global_weights, local_weights, alpha)`` = ``alpha*global + (1-alpha)*local``."""
    g = [np.array([0.0, 4.0]), np.array([[2.0]])]
    w = [np.array([2.0, 0.0]), np.array([[6.0]])]
    if is_placeholder(interpolate, g, w, 0.5):
        return not_attempted("10.2", "Replace the raise line with your code; combine the two models tensor "
                             "by tensor, with alpha the weight of the global one, as the exercise "
                             "text writes it.")
    got = interpolate(g, w, 0.25)
    want = [np.array([1.5, 1.0]), np.array([[5.0]])]
    if not isinstance(got, (list, tuple)) or len(got) != 2:
        fail("10.2", f"interpolate should return a list with one array per tensor (2 here), got {got!r}.")
    if all(np.allclose(a, b) for a, b in zip(got, [np.array([0.5, 3.0]), np.array([[3.0]])])):
        fail("10.2", "with alpha=0.25 you returned 0.25*local + 0.75*global; alpha weighs the *global* "
             "model: alpha*global + (1-alpha)*local, so alpha=1 is the global model, 0 the local one.")
    if not all(np.shape(a) == np.shape(b) and np.allclose(a, b) for a, b in zip(got, want)):
        fail("10.2", f"interpolate(g=[[0, 4], [[2]]], w=[[2, 0], [[6]]], alpha=0.25) returned "
             f"{[np.asarray(a).tolist() for a in got]}; expected {[a.tolist() for a in want]} "
             "(0.25*global + 0.75*local, tensor by tensor).")
    for alpha, ref in ((1.0, g), (0.0, w)):
        if not all(np.allclose(a, b) for a, b in zip(interpolate(g, w, alpha), ref)):
            fail("10.2", f"alpha={alpha} should give the {'global' if alpha else 'local'} model exactly.")
    return passed("10.2", "alpha*global + (1-alpha)*local on two tensors; alpha=1 and 0 give the "
                  "global and the local model.")


def exercise_10_3(prox_grad) -> Verdict:
    """``prox_grad(w, w_global, mu)``: the gradient of ``mu/2 * ||w - w_global||^2`` with respect to w."""
    w, wg = np.array([1.0, -2.0, 3.0]), np.array([0.0, 1.0, 3.0])
    if is_placeholder(prox_grad, w, wg, 0.1):
        return not_attempted("10.3", "Replace the raise line with your code; differentiate the exercise's "
                             "proximal term with respect to w, on paper first.")
    got = np.asarray(prox_grad(w, wg, 0.5), dtype=float)
    want = 0.5 * (w - wg)
    if got.shape != want.shape:
        fail("10.3", f"prox_grad should return an array shaped like w {want.shape}, got shape {got.shape}.")
    if np.allclose(got, -want):
        fail("10.3", f"you returned {got.tolist()}: the sign is flipped. The gradient points away from "
             "w_global (mu * (w - w_global)); the optimiser's minus sign then pulls w back towards it.")
    if np.allclose(got, want / 2):
        fail("10.3", f"you returned {got.tolist()}, half the gradient: d/dw of mu/2 * (w - w_global)^2 is "
             "mu * (w - w_global); the 2 of the square cancels the 1/2.")
    if np.allclose(got, w - wg):
        fail("10.3", f"you returned {got.tolist()} = w - w_global: multiply by mu (here 0.5).")
    if not np.allclose(got, want):
        fail("10.3", f"prox_grad(w=[1, -2, 3], w_global=[0, 1, 3], mu=0.5) returned {got.tolist()}; "
             f"expected mu * (w - w_global) = {want.tolist()}.")
    if np.any(np.asarray(prox_grad(wg, wg, 3.0))):
        fail("10.3", "at w == w_global the proximal term is at its minimum: its gradient must be 0.")
    return passed("10.3", "mu * (w - w_global): zero at the global weights, growing with the distance.")

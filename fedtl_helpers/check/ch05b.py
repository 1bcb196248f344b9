"""Checkers for chapter 5b, "Parameter-efficient federated fine-tuning": LoRA's size and its average.

Chapter: "Parameter-efficient federated fine-tuning" (exercises 5.4 and 5.5; the chapter sits
between 05 and 06, so its exercises continue chapter 5's numbering).
"""

from __future__ import annotations

import numpy as np

from ._common import Verdict, attempt, checker, fail, passed, show


@checker("5.4", "Write lora_values(kernel_shape, rank).")
def exercise_5_4(lora_values) -> Verdict:
    """``lora_values(kernel_shape, rank)``: values of Keras' two LoRA factors for one kernel."""
    cases = [((3, 3, 32, 64), 4, 9 * 32 * 4 + 4 * 64, "a 3x3 conv, 32 -> 64 channels"),
             ((128, 10), 2, 128 * 2 + 2 * 10, "a Dense kernel 128 -> 10"),
             ((1, 1, 256, 64), 8, 256 * 8 + 8 * 64, "a 1x1 conv, 256 -> 64 channels")]
    for shape, rank, expect, what in cases:
        got = attempt("5.4", lora_values, shape, rank, what=f"kernel_shape={shape}, rank={rank} ({what})")
        if got == expect:
            continue
        *inner, n_in, n_out = shape
        k = int(np.prod(inner)) if inner else 1
        if got == n_in * rank + rank * n_out and k > 1:
            fail("5.4", f"for {what} you returned {show(got)}, expected {expect}: Keras' A factor of a conv "
                        f"keeps the kernel's spatial size, shape {(*inner, n_in, rank)}, so it has "
                        f"{k * n_in * rank} values; only B is (rank, out).")
        if got == rank * (k * n_in) * n_out or got == k * n_in * n_out:
            fail("5.4", f"for {what} you returned {show(got)}, the size of a full (or rank-times) kernel; "
                        f"LoRA sends two thin factors A {(*inner, n_in, rank)} and B {(rank, n_out)}: "
                        f"expected {expect}.")
        if got == k * n_in * rank * rank * n_out:
            fail("5.4", f"you multiplied the two factors' sizes ({show(got)}); add them: expected {expect}.")
        fail("5.4", f"for {what} you returned {show(got)}, expected {expect} "
                    f"(A: {k * n_in * rank} values, B: {rank * n_out}).")
    return passed("5.4", "A (kernel's spatial size x in x rank) plus B (rank x out), for convs and Dense "
                         "kernels (3 cases).")


@checker("5.5", "Write product_mean(a_list, b_list, counts).")
def exercise_5_5(product_mean) -> Verdict:
    """``product_mean(a_list, b_list, counts)``: the clients' weighted mean of ``A_k @ B_k``."""
    a = [np.array([[1.0], [0.0]]), np.array([[0.0], [2.0]])]
    b = [np.array([[1.0, 1.0]]), np.array([[3.0, 0.0]])]
    counts = [1, 3]
    w = np.array(counts, float) / 4
    expect = w[0] * a[0] @ b[0] + w[1] * a[1] @ b[1]
    factors = (w[0] * a[0] + w[1] * a[1]) @ (w[0] * b[0] + w[1] * b[1])
    unweighted = (a[0] @ b[0] + a[1] @ b[1]) / 2
    got = attempt("5.5", product_mean, a, b, counts,
                  what="two clients, A_k of shape (2, 1), B_k of shape (1, 2), counts [1, 3]")
    try:
        got = np.asarray(got, dtype=float)
    except (TypeError, ValueError):
        fail("5.5", f"expected an array of shape (2, 2), got {show(got)}.")
    if got.shape != expect.shape:
        fail("5.5", f"expected an array of shape {expect.shape} (A is (2, 1), B is (1, 2), so A @ B is "
                    f"(2, 2)), got shape {got.shape}.")
    if np.allclose(got, factors):
        fail("5.5", f"you returned mean(A) @ mean(B) = {np.round(factors, 4).tolist()}: that is what "
                    "averaging the factors separately computes, not the mean of the clients' updates. "
                    f"Multiply each client's A_k @ B_k first, then average: expected {expect.tolist()}.")
    if np.allclose(got, unweighted):
        fail("5.5", f"you returned the unweighted mean {unweighted.tolist()}; weight client k by "
                    f"counts[k] / sum(counts), as FedAvg does: expected {expect.tolist()}.")
    if not np.allclose(got, expect):
        fail("5.5", f"you returned {np.round(got, 4).tolist()}, expected {expect.tolist()}.")
    return passed("5.5", "The weighted mean of the clients' products A_k @ B_k (not mean(A) @ mean(B)).")

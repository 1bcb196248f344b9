"""Checkers for chapter 7, "Evaluation": per-class accuracy, averaging over clients vs images.

Chapter: "Evaluation" (exercises 7.1 and 7.2).
"""

from __future__ import annotations

import numpy as np

from ._common import Verdict, attempt, checker, fail, passed, show

CM = np.array([[8, 2, 0],
               [1, 3, 6],
               [0, 0, 20]])  # cm[true, predicted]


@checker("7.1", "Write per_class_accuracy(cm).")
def exercise_7_1(per_class_accuracy) -> Verdict:
    """``per_class_accuracy(cm)``: for each true class, the share of its images predicted correctly."""
    got = attempt("7.1", per_class_accuracy, CM.copy(), what=f"the confusion matrix {CM.tolist()} (rows: "
                                                             "true class, columns: predicted)")
    expect = np.diag(CM) / CM.sum(axis=1)
    got_arr = np.asarray(got, dtype=float) if np.ndim(got) == 1 else None
    if got_arr is None or got_arr.shape != expect.shape:
        fail("7.1", f"expected one accuracy per class (3 numbers), got {show(got)}.")
    if np.allclose(got_arr, np.diag(CM) / CM.sum(axis=0)):
        fail("7.1", f"you returned {show(got_arr)}, expected {show(expect)}: you divided by the column "
                    "sums (images *predicted* as the class: that is precision). Divide by the row sums, "
                    "the images that truly are the class.")
    if np.allclose(got_arr, np.trace(CM) / CM.sum()):
        fail("7.1", f"you returned the overall accuracy {np.trace(CM) / CM.sum():.3f} for every class; "
                    f"each class has its own: {show(expect)}.")
    if not np.allclose(got_arr, expect):
        fail("7.1", f"you returned {show(got_arr)}, expected {show(expect)} (diagonal / row sums).")
    return passed("7.1", "Per-class accuracy = diagonal / row sums: [0.8, 0.3, 1.0]; the overall 0.775 "
                         "hides that class 1 is mostly wrong.")


@checker("7.2", "Write accuracy_over_images(client_accuracy, client_sizes).")
def exercise_7_2(accuracy_over_images) -> Verdict:
    """``accuracy_over_images(client_accuracy, client_sizes)``: the accuracy an average *image* sees."""
    acc, sizes = [0.9, 0.5, 0.6], [800, 100, 100]
    got = attempt("7.2", accuracy_over_images, list(acc), list(sizes),
                  what="accuracies [0.9, 0.5, 0.6] on clients with [800, 100, 100] held-out examples")
    try:
        got = float(got)
    except (TypeError, ValueError):
        fail("7.2", f"expected one number, got {show(got)}.")
    expect = float(np.average(acc, weights=sizes))
    if np.isclose(got, np.mean(acc)):
        fail("7.2", f"you returned {got:.3f}, the mean over clients (every client counts once). Over "
                    f"images the big client counts 8 times as much: expected {expect:.3f} = sum(acc_k * "
                    "n_k) / sum(n_k).")
    if np.isclose(got, np.dot(acc, sizes)):
        fail("7.2", f"you returned {got:.1f}, the number of correct images; divide by the {sum(sizes)} "
                    f"images (expected {expect:.3f}).")
    if not np.isclose(got, expect):
        fail("7.2", f"you returned {got:.4g}, expected {expect:.3f}.")
    return passed("7.2", f"Over images {expect:.2f}, over clients {np.mean(acc):.2f}: the big, well-served "
                         "client hides the two small ones; report both, and the worst client.")

"""Checkers for chapter 1, "Introduction": a baseline and image scaling.

Chapter: "Introduction: the course, the data, the weights" (exercises 1.1 and 1.2).
"""

from __future__ import annotations

import numpy as np

from ._common import Verdict, attempt, checker, fail, passed, show


@checker("1.1", "Write majority_baseline(y_train, y_test).")
def exercise_1_1(majority_baseline) -> Verdict:
    """``majority_baseline(y_train, y_test)``: accuracy of always predicting the majority label."""
    y_train, y_test = np.array([0, 2, 2, 1, 2]), np.array([2, 0, 1, 1])
    got = attempt("1.1", majority_baseline, y_train, y_test, what="y_train=[0, 2, 2, 1, 2], y_test=[2, 0, "
                                                                  "1, 1]")
    try:
        got = float(got)
    except (TypeError, ValueError):
        fail("1.1", f"expected one number (an accuracy between 0 and 1), got {show(got)}.")
    if np.isclose(got, 25.0):
        fail("1.1", "you returned 25.0, a percentage; return the fraction 0.25 (the notebooks print "
                    "fractions and format them with :.1%).")
    if np.isclose(got, 0.5):
        fail("1.1", "you returned 0.5 but the expected accuracy is 0.25: the most common class must be "
                    "taken from y_train (class 2), not from y_test (class 1). A baseline may not look at "
                    "the test labels.")
    if np.isclose(got, 1.0):
        fail("1.1", "you returned 1.0 but the expected accuracy is 0.25: did you return the count of "
                    "correct predictions (1) instead of the fraction (1 of 4)?")
    if not np.isclose(got, 0.25):
        fail("1.1", f"for y_train=[0, 2, 2, 1, 2] and y_test=[2, 0, 1, 1] you returned {show(got)}, "
                    "expected 0.25: the majority class of y_train is 2 and one test label in four is 2.")
    y_big = np.random.default_rng(0).integers(0, 10, 1000)
    expect = float(np.mean(y_big == np.bincount(y_big).argmax()))
    got = float(attempt("1.1", majority_baseline, y_big, y_big, what="1,000 random labels"))
    if not np.isclose(got, expect):
        fail("1.1", f"on 1,000 random labels in 0..9 you returned {show(got)}, expected {expect:.4f}.")
    return passed("1.1", "Predicting the majority training class gives 0.25 on the small case and "
                         f"{expect:.3f} on 1,000 labels: close to chance, as with the shapes set.")


@checker("1.2", "Write to_unit_float(x).")
def exercise_1_2(to_unit_float) -> Verdict:
    """``to_unit_float(x)``: uint8 images to float32 in [0, 1]."""
    x = np.array([[[[0, 51, 255]]], [[[128, 1, 254]]]], dtype=np.uint8)  # 2 images of 1x1x3
    got = attempt("1.2", to_unit_float, x.copy(), what="a uint8 array of shape (2, 1, 1, 3)")
    got = np.asarray(got)
    if got.shape != x.shape:
        fail("1.2", f"the result has shape {got.shape}, expected {x.shape}: scale every pixel, keep the "
                    "shape.")
    if got.dtype != np.float32:
        hint = ("integer division (//) or no division at all keeps integers; divide by 255 and convert "
                "with .astype(np.float32)" if np.issubdtype(got.dtype, np.integer) else
                "float64 takes twice the memory and Keras computes in float32: convert with "
                ".astype(np.float32)")
        fail("1.2", f"the result has dtype {got.dtype}, expected float32: {hint}.")
    expect = x.astype(np.float32) / 255
    if np.allclose(got, x / 256):
        fail("1.2", "you divided by 256, so white (255) becomes 0.996, not 1.0: divide by 255.")
    if not np.allclose(got, expect):
        fail("1.2", f"for pixels {x.ravel().tolist()} you returned {show(got.ravel())}, expected "
                    f"{show(expect.ravel())} (each value / 255).")
    return passed("1.2", "uint8 pixels 0..255 become float32 values 0.0..1.0, shape unchanged.")

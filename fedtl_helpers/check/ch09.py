"""Exercises of "Compute and storage" (chapter 9)."""

from __future__ import annotations

import numpy as np

from ._common import Verdict, call_or_none, fail, not_attempted, passed


def exercise_9_1(prune_mask) -> Verdict:
    """Magnitude pruning mask: exactly round(s * n) smallest |w| are False."""
    w = np.array([[0.5, -0.05, 2.0], [-1.5, 0.2, -0.01]], np.float32)
    mask = call_or_none(prune_mask, w, 0.5)
    if mask is None:
        return not_attempted("9.1", "Replace the raise line with your code; rank the weights by magnitude "
                             "and prune the smallest ones, as many as the sparsity asks for.")
    mask = np.asarray(mask)
    if mask.shape != w.shape:
        fail("9.1", f"the mask has shape {mask.shape} but the weights have {w.shape}: reshape it like w.")
    if mask.dtype != bool:
        fail("9.1", f"the mask has dtype {mask.dtype}; use a boolean array (True = keep).")
    expected = np.array([[True, False, True], [True, False, False]])
    if (~mask).sum() != 3:
        fail("9.1", f"{int((~mask).sum())} weights are pruned, but sparsity 0.5 of 6 weights is 3.")
    if np.array_equal(mask, ~expected):
        fail("9.1", "you pruned the *largest* weights; pruning removes the smallest magnitudes.")
    if not np.array_equal(mask, expected):
        fail("9.1", f"pruned {w[~mask].tolist()}, expected the three smallest magnitudes "
             f"{w[~expected].tolist()}: compare np.abs(w), not w (-1.5 is large).")
    return passed("9.1", "the three smallest magnitudes (-0.05, 0.2, -0.01) are pruned.")


def exercise_9_2(int8) -> Verdict:
    """Symmetric int8 quantisation: q int8 in [-127, 127], |w - q*scale| <= scale/2."""
    w = np.array([0.02, -0.635, 0.3175, 1.27, -1.0], np.float32)
    out = call_or_none(int8, w)
    if out is None:
        return not_attempted("9.2", "Replace the raise line with your code; the exercise text gives the "
                             "scale and the rounding, and each q must fit in one signed byte.")
    try:
        q, scale = out
    except (TypeError, ValueError):
        fail("9.2", f"my_int8 should return (q, scale), it returned {out!r}.")
    q = np.asarray(q)
    if q.dtype != np.int8:
        fail("9.2", f"q has dtype {q.dtype}: store it as np.int8 (one byte per weight).")
    if not np.isclose(float(scale), 0.01, rtol=1e-4):
        fail("9.2", f"scale is {float(scale):.5f}, expected max|w| / 127 = 0.01.")
    err = np.abs(q.astype(np.float64) * float(scale) - w)
    if err.max() > 0.005 + 1e-6:
        i = int(err.argmax())
        fail("9.2", f"{w[i]} came back as {q[i] * float(scale):.4f}: round to the nearest integer "
             "(np.round), do not truncate.")
    return passed("9.2", "int8 values in [-127, 127], error at most half a step (0.005).")

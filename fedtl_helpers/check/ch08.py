"""Exercises of "Communication efficiency" (chapter 8)."""

from __future__ import annotations

import numpy as np

from ._common import Verdict, call_or_none, fail, not_attempted, passed


def exercise_8_1(quantize, dequantize) -> Verdict:
    """8-bit quantisation: levels in 0..255, decoded error at most half a step."""
    x = np.array([-1.0, -0.25, 0.0, 0.1, 0.5, 2.0], np.float32)
    out = call_or_none(quantize, x)
    if out is None:
        return not_attempted("8.1", "Replace the raise lines with your code: 256 levels must cover the "
                             "range of x, from its smallest to its largest value.")
    try:
        levels, lo, scale = out
    except (TypeError, ValueError):
        fail("8.1", f"my_quantize should return three things (levels, lo, scale), it returned {out!r}.")
    levels = np.asarray(levels)
    if levels.dtype != np.uint8:
        fail("8.1", f"the levels have dtype {levels.dtype}; 8 bits per value means uint8 "
             "(convert with .astype(np.uint8) after rounding and clipping to 0..255).")
    if levels.shape != x.shape:
        fail("8.1", f"got {levels.shape} levels for {x.shape} values: one level per value.")
    expected_scale = (2.0 - (-1.0)) / 255
    if not np.isclose(float(scale), expected_scale, rtol=1e-3):
        fail("8.1", f"scale is {float(scale):.6f} but (max - min) / 255 = {expected_scale:.6f}: "
             "with 8 bits there are 256 levels, so 255 steps between the minimum and the maximum.")
    back = call_or_none(dequantize, levels, lo, scale)
    if back is None:
        return not_attempted("8.1", "my_quantize works; now write my_dequantize, its inverse.")
    err = np.abs(np.asarray(back, np.float64) - x)
    if err.max() > expected_scale / 2 + 1e-6:
        i = int(err.argmax())
        fail("8.1", f"value {x[i]} came back as {float(np.asarray(back)[i]):.5f}, an error of {err[i]:.5f}; "
             f"rounding to the nearest level keeps the error below half a step ({expected_scale / 2:.5f}). "
             "Did you use floor instead of round, or forget to add lo back?")
    return passed("8.1", f"levels 0..255, scale {expected_scale:.5f}, largest error {err.max():.5f} "
                  "(at most half a step).")


def exercise_8_2(topk_ef) -> Verdict:
    """Top-k with error feedback: sent + new residual == update + old residual; sent keeps the k largest."""
    update = np.array([0.5, -3.0, 0.1, 2.0, -0.2], np.float32)
    residual = np.array([0.0, 0.0, 1.95, 0.0, 0.0], np.float32)
    out = call_or_none(topk_ef, update, residual, 2)
    if out is None:
        return not_attempted("8.2", "Replace the raise line with your code; the error-feedback recursion "
                             "above says what a client sends and what it carries to the next round.")
    sent, new_residual = (np.asarray(a, np.float64) for a in out)
    corrected = update.astype(np.float64) + residual
    if np.count_nonzero(sent) != 2:
        fail("8.2", f"sent has {np.count_nonzero(sent)} non-zero values, but k=2 values should be sent: "
             f"{sent.tolist()}.")
    if not np.allclose(sent + new_residual, corrected, atol=1e-6):
        fail("8.2", f"sent + new_residual = {(sent + new_residual).tolist()} but update + residual = "
             f"{corrected.tolist()}: error feedback must keep exactly what was not sent.")
    shown = np.round(sent, 4).tolist()
    if not np.allclose(sent, [0, -3.0, 2.05, 0, 0], atol=1e-6):
        if abs(sent[1]) > 0 and abs(sent[3]) > 0 and abs(sent[2]) == 0:
            fail("8.2", f"you sent {shown}: the residual 1.95 makes value 2 equal to 2.05, "
                 "the largest after value 1. Add the residual *before* choosing the top k.")
        fail("8.2", f"you sent {shown}, expected [0, -3.0, 2.05, 0, 0]: keep the k largest "
             "*magnitudes* (np.abs) of update + residual.")
    return passed("8.2", "the two largest corrected values were sent and the rest kept as residual.")


def exercise_8_3(sparsity, value_bits) -> Verdict:
    """Choose top-k settings for a 100x smaller upload of 10,000 values."""
    if sparsity is None or value_bits is None:
        return not_attempted("8.3", "Set my_sparsity and my_value_bits: count what one kept value costs, "
                             "its value and its index, against the 4 bytes of a dense float32 value.")
    if value_bits not in (8, 16, 32):
        fail("8.3", f"my_value_bits={value_bits!r}: allowed 8, 16 or 32.")
    if not 0 < sparsity <= 1:
        fail("8.3", f"my_sparsity={sparsity!r}: a fraction in (0, 1] of the values to keep.")
    from ..transforms.compression import dense_nbytes, encode_topk

    x = [np.random.default_rng(0).normal(size=10_000).astype(np.float32)]
    ratio = dense_nbytes(x) / encode_topk(x, sparsity, value_bits=value_bits).nbytes
    if ratio < 100:
        k = max(1, round(sparsity * 10_000))
        fail("8.3", f"keeping {k} values of {value_bits} bits gives only {ratio:.1f}x fewer bytes: "
             f"each costs {value_bits // 8} + 2 bytes against 4 bytes per value dense. Keep fewer values "
             "or use fewer bits.")
    return passed("8.3", f"the upload is {ratio:.0f}x smaller than float32.")

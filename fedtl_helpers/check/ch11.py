"""Checkers for chapter 11, "Differential privacy"."""

from __future__ import annotations

import numpy as np

from ..transforms import privacy
from ._common import Verdict, call_or_none, fail, not_attempted, passed

# Exercise 11.3's setting (the notebook states the same numbers).
TARGET_EPSILON, SAMPLING_RATE, ROUNDS, DELTA = 4.0, 0.1, 50, 1e-5



def exercise_11_1(clip_to_norm) -> Verdict:
    """``clip_to_norm(update, clip)`` scales a list of arrays to global L2 norm <= ``clip``."""
    hint = ("Replace the raise line with your code; measure the length of the whole update, all tensors "
            "together, and shrink the update only when it is longer than clip.")
    if clip_to_norm is None:
        return not_attempted("11.1", hint)
    small = [np.array([0.3, 0.4]), np.array([0.0])]
    out = call_or_none(clip_to_norm, [t.copy() for t in small], 1.0)
    if out is None:
        return not_attempted("11.1", hint)
    if len(out) != 2 or not all(np.allclose(a, b) for a, b in zip(out, small)):
        fail("11.1", f"an update of norm 0.5 with clip 1.0 must come back unchanged ({small}), "
             f"but your function returned {out}.")
    big = [np.array([3.0, 0.0]), np.array([0.0, 4.0])]  # each tensor's norm <= 4, together 5
    out = [np.asarray(t, float) for t in clip_to_norm([t.copy() for t in big], 1.0)]
    want = [np.array([0.6, 0.0]), np.array([0.0, 0.8])]
    if not all(np.allclose(a, b, atol=1e-5) for a, b in zip(out, want)):
        per_tensor = [np.array([1.0, 0.0]), np.array([0.0, 1.0])]
        if all(np.allclose(a, b, atol=1e-5) for a, b in zip(out, per_tensor)):
            fail("11.1", "you clipped each tensor separately (each to norm 1), so the whole update has "
                 "norm 1.41 > 1: the sensitivity bound needs the norm over all tensors together. "
                 f"Expected {[w.tolist() for w in want]}.")
        fail("11.1", f"[[3, 0], [0, 4]] (global norm 5) clipped to 1.0 should be "
             f"{[w.tolist() for w in want]} (scaled by 1/5, direction kept), "
             f"got {[o.tolist() for o in out]}.")
    norm = privacy.global_norm(clip_to_norm([np.full(10, 7.0)], 2.5))
    if norm > 2.5 + 1e-6:
        fail("11.1", f"after clipping to 2.5 the norm is {norm:.4f}: it must be at most 2.5.")
    return passed("11.1", "small updates are unchanged, large ones scaled to the clip norm over all tensors.")


def exercise_11_2(noise_std_on_mean) -> Verdict:
    """``noise_std_on_mean(z, clip, expected_clients)``: the std of the noise in the averaged update."""
    hint = ("Replace the raise line with your code; the DP-FedAvg equation above says where the server "
            "adds the noise and what it divides by.")
    if noise_std_on_mean is None:
        return not_attempted("11.2", hint)
    got = call_or_none(noise_std_on_mean, 1.5, 0.2, 30.0)
    if got is None:
        return not_attempted("11.2", hint)
    want = 1.5 * 0.2 / 30.0
    if not np.isclose(float(got), want, rtol=1e-6):
        if np.isclose(float(got), 1.5 * 0.2):
            fail("11.2", f"you returned {got:.4f} = z*C, the noise on the sum; the mean divides it by the "
                 f"30 expected clients: expected {want:.4f}.")
        if np.isclose(float(got), 1.5 / 0.2 / 30.0) or np.isclose(float(got), 1.5 / 0.2):
            fail("11.2", f"you returned {got:.4f}: the noise std is z *times* C (the clip norm is the "
                 f"sensitivity it hides), divided by the expected clients: expected {want:.4f}.")
        fail("11.2", f"for z=1.5, C=0.2 and 30 expected clients the noise std on the mean is "
             f"1.5 * 0.2 / 30 = {want:.4f}, your function returned {got}.")
    return passed("11.2", f"z=1.5, C=0.2, 30 clients: std {want:.4f} per coordinate of the average.")


def exercise_11_3(noise_multiplier) -> Verdict:
    """A noise multiplier reaching epsilon <= 4 (delta 1e-5) for q=0.1, 50 rounds, Poisson, RDP."""
    setting = (f"target epsilon {TARGET_EPSILON}, q={SAMPLING_RATE}, {ROUNDS} rounds, delta={DELTA}, "
               "Poisson sampling, RDP accountant")
    if noise_multiplier is None:
        return not_attempted("11.3", "Set noise_multiplier with the helper the exercise names, for target "
                             f"epsilon {TARGET_EPSILON}, sampling rate {SAMPLING_RATE}, {ROUNDS} rounds, "
                             f"delta {DELTA}, Poisson sampling and the RDP accountant.")
    z = float(noise_multiplier)
    eps = privacy.dp_epsilon(z, SAMPLING_RATE, ROUNDS, DELTA) if z > 0 else float("inf")
    if eps > TARGET_EPSILON * 1.001:
        fail("11.3", f"with noise_multiplier={z:.3f} the accountant gives epsilon {eps:.2f} > "
             f"{TARGET_EPSILON} ({setting}): more noise is needed.")
    if privacy.dp_epsilon(z * 0.95, SAMPLING_RATE, ROUNDS, DELTA) <= TARGET_EPSILON:
        fail("11.3", f"noise_multiplier={z:.3f} reaches epsilon {eps:.2f}, but 5% less noise would still "
             f"meet {TARGET_EPSILON}: you add more noise (and lose more accuracy) than needed. "
             "Use the smallest multiplier that meets the target.")
    return passed("11.3", f"noise_multiplier={z:.3f} gives epsilon {eps:.2f} <= {TARGET_EPSILON} "
                  f"({setting}).")

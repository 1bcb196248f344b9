"""Checkers for chapter 12, "Secure aggregation and robustness"."""

from __future__ import annotations

import numpy as np

from ._common import Verdict, fail, is_placeholder, not_attempted, passed


def _as_lists(weights) -> list:
    return [np.asarray(t, dtype=float).tolist() for t in weights]


def exercise_12_1(my_median) -> Verdict:
    """``my_median(deltas)``: the coordinate-wise median of a list of client deltas."""
    deltas = [[np.array([2.0, 0.0]), np.array([[1.0]])], [np.array([3.0, 1.0]), np.array([[5.0]])],
              [np.array([-50.0, 9.0]), np.array([[2.0]])]]
    if is_placeholder(my_median, deltas):
        return not_attempted("12.1", "Replace the raise line with your code; the text above the cell "
                             "says what the function receives and returns.")
    got = my_median(deltas)
    want = [np.array([2.0, 1.0]), np.array([[2.0]])]
    if not isinstance(got, (list, tuple)) or len(got) != 2:
        fail("12.1", f"my_median should return a list with one array per tensor (2 here), got {got!r}.")
    if any(np.shape(a) != np.shape(b) for a, b in zip(got, want)):
        fail("12.1", f"the result's shapes {[np.shape(a) for a in got]} should match the tensors' "
             f"{[b.shape for b in want]}: take the median over the clients (axis 0 of the stack) only.")
    if all(np.allclose(a, np.mean([d[i] for d in deltas], axis=0)) for i, a in enumerate(got)):
        fail("12.1", f"you returned {_as_lists(got)}, the mean over the clients; the median of "
             "(2, 3, -50) is 2, so the attacker's -50 pulls nothing.")
    if not all(np.allclose(a, b) for a, b in zip(got, want)):
        fail("12.1", f"for deltas [[2, 0], [[1]]], [[3, 1], [[5]]], [[-50, 9], [[2]]] you returned "
             f"{_as_lists(got)}; expected {_as_lists(want)} (the middle value of each coordinate).")
    even = my_median([[np.array([1.0])], [np.array([2.0])], [np.array([3.0])], [np.array([10.0])]])
    if not np.allclose(even[0], [2.5]):
        fail("12.1", f"with four clients (1, 2, 3, 10) you returned {_as_lists(even)}; the median of an even "
             "number of values is the mean of the two middle ones: [2.5] (np.median does this).")
    return passed("12.1", "coordinate-wise median over 3 clients and 2 tensors (an outlier of -50 ignored), "
                  "and over an even number of clients.")


def _instance(n: int = 4, size: int = 6, seed: int = 12):
    rng = np.random.default_rng(seed)
    xs = [rng.integers(0, 2**32, size, dtype=np.uint32) for _ in range(n)]
    masks = {(i, j): rng.integers(0, 2**32, size, dtype=np.uint32) for i in range(n) for j in range(i + 1, n)}
    return xs, masks


def _sum_mod(vectors) -> np.ndarray:
    return np.sum([np.asarray(v).astype(np.int64) % 2**32 for v in vectors], axis=0) % 2**32


def exercise_12_2(mask_inputs) -> Verdict:
    """``mask_inputs(xs, masks)``: pairwise-masked inputs whose sum mod 2**32 is the inputs' sum."""
    xs, masks = _instance()
    if is_placeholder(mask_inputs, [x.copy() for x in xs], dict(masks)):
        return not_attempted("12.2", "Replace the raise line with your code. Think about what must "
                             "happen to each pair's mask so that the sum is unchanged.")
    ys = mask_inputs([x.copy() for x in xs], dict(masks))
    if not isinstance(ys, (list, tuple)) or len(ys) != len(xs):
        fail("12.2", f"mask_inputs should return one masked vector per client ({len(xs)} here), got {ys!r}.")
    if any(np.shape(y) != x.shape for x, y in zip(xs, ys)):
        fail("12.2", "each masked vector must have the shape of its input.")
    if any(np.array_equal(np.asarray(y).astype(np.int64) % 2**32, x) for x, y in zip(xs, ys)):
        fail("12.2", "at least one client's masked vector equals its input: every client i must add its "
             "masks with every other client j.")
    if not np.array_equal(_sum_mod(ys), _sum_mod(xs)):
        plus = [(x.astype(np.int64) + sum(m.astype(np.int64) for (i, j), m in masks.items() if k in (i, j)))
                % 2**32 for k, x in enumerate(xs)]
        all_plus = all(np.array_equal(np.asarray(y).astype(np.int64) % 2**32, p) for y, p in zip(ys, plus))
        hint = (" You added every mask with a + sign: client i must add masks[(i, j)] for j > i and "
                "*subtract* masks[(j, i)] for j < i, so each mask appears once with each sign."
                if all_plus else
                " Each mask must appear once added (by the client with the smaller index) and once "
                "subtracted (by the other); compute mod 2**32, e.g. in uint32.")
        fail("12.2", "the masked vectors do not sum to the inputs' sum mod 2**32." + hint)
    return passed("12.2", "4 clients, 6 pairwise masks: every masked vector differs from its input and the "
                  "masks cancel exactly in the sum mod 2**32.")


def exercise_12_3(smallest_trim_fraction) -> Verdict:
    """``smallest_trim_fraction(n, f)``: the smallest beta in [0, 0.5) with floor(beta * n) >= f, or None."""
    if is_placeholder(smallest_trim_fraction, 10, 2):
        return not_attempted("12.3", "Replace the raise line with your code; start from the condition "
                             "the exercise states and solve it for beta.")
    cases = [(10, 2, 0.2), (7, 2, 2 / 7), (10, 0, 0.0), (9, 4, 4 / 9), (10, 5, None), (3, 2, None)]
    for n, f, want in cases:
        got = smallest_trim_fraction(n, f)
        if want is None:
            if got is not None:
                fail("12.3", f"with n={n} and f={f} you returned {got!r}; trimming {f} at each end needs "
                     f"beta >= {f}/{n} = {f / n:.3g}, which is not below 0.5 (nothing would be left to "
                     "average): expected None.")
            continue
        if got is None or isinstance(got, bool) or not isinstance(got, (int, float, np.floating)):
            fail("12.3", f"with n={n} and f={f} you returned {got!r}; expected a number ({want:.4g}).")
        if want > 0 and np.isclose(got, 2 * want):
            fail("12.3", f"with n={n} and f={f} you returned {got:.4g}: floor(beta * n) values are dropped "
                 f"at *each* end, so beta = f / n = {want:.4g} already removes {f} largest and {f} smallest.")
        if not np.isclose(got, want, rtol=0, atol=1e-9):
            fail("12.3", f"with n={n} and f={f} you returned {got:.4g}; the smallest beta with "
                 f"floor(beta * {n}) >= {f} is {f}/{n} = {want:.4g}.")
    return passed("12.3", "n=10, f=2 gives 0.2; n=7, f=2 gives 2/7; f=0 gives 0; and None when f / n >= 0.5.")

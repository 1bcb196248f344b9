"""Checkers for chapter 5, "Client fine-tuning": upload bytes, the partial mask, update cosine.

Chapter: "Client fine-tuning" (exercises 5.1 to 5.3).
"""

from __future__ import annotations

import numpy as np

from ._common import Verdict, attempt, checker, fail, passed, show


@checker("5.1", "Write upload_bytes(weights, mask).")
def exercise_5_1(upload_bytes) -> Verdict:
    """``upload_bytes(weights, mask)``: bytes a client sends, only the tensors local training changes."""
    weights = [np.zeros((3, 3, 3, 8), np.float32), np.zeros(8, np.float32), np.zeros((8, 10), np.float32),
               np.zeros(10, np.float32)]
    mask = [False, False, True, True]
    got = attempt("5.1", upload_bytes, weights, mask, what="a frozen conv (3x3x3x8 + 8) and a trainable "
                                                           "Dense (8x10 + 10), float32")
    expect, everything = (80 + 10) * 4, (216 + 8 + 80 + 10) * 4
    if got == everything:
        fail("5.1", f"you returned {show(got)} bytes, every tensor; frozen tensors never change, so they "
                    f"are not sent: count only those where mask is True (expected {expect}).")
    if got == 90:
        fail("5.1", "you returned 90, the number of values; each float32 value is 4 bytes (use w.nbytes), "
                    f"so expected {expect}.")
    if got == (216 + 8) * 4:
        fail("5.1", f"you returned {show(got)}: the bytes of the *frozen* tensors. The mask is True for "
                    f"the tensors that train and are sent (expected {expect}).")
    if got != expect:
        fail("5.1", f"you returned {show(got)} bytes, expected {expect} (the Dense kernel 8x10 and bias 10 "
                    "in float32).")
    half = attempt("5.1", upload_bytes, [w.astype(np.float16) for w in weights], mask, what="the same in "
                                                                                            "float16")
    if half != expect // 2:
        fail("5.1", f"in float16 you returned {show(half)} bytes, expected {expect // 2}: use each array's "
                    "nbytes rather than assuming 4 bytes per value.")
    return passed("5.1", f"{expect} bytes in float32 ({expect // 2} in float16): only the tensors that "
                         "train are uploaded.")


BLOCKS = ["stem", "stem", "block1", "block1", "block2", "block2", "block3", "block3", "head", "head"]


@checker("5.2", "Write partial_mask(blocks, unfreeze_blocks).")
def exercise_5_2(partial_mask) -> Verdict:
    """``partial_mask(blocks, unfreeze_blocks)``: which tensors train with strategy "partial"."""
    def expected(k):
        order = list(dict.fromkeys(b for b in BLOCKS if b != "head"))
        top = set(order[-k:])
        return [b == "head" or b in top for b in BLOCKS]

    for k in (1, 2):
        got = attempt("5.2", partial_mask, list(BLOCKS), k, what=f"unfreeze_blocks={k} and blocks {BLOCKS}")
        got = [bool(g) for g in got] if isinstance(got, list | tuple) else got
        expect = expected(k)
        if got == expect:
            continue
        if not isinstance(got, list) or len(got) != len(BLOCKS):
            fail("5.2", f"expected a list of {len(BLOCKS)} booleans (one per tensor), got {show(got)}.")
        trains = sorted({b for b, g in zip(BLOCKS, got) if g}, key=BLOCKS.index)
        want = sorted({b for b, g in zip(BLOCKS, expect) if g}, key=BLOCKS.index)
        if "head" not in trains:
            fail("5.2", f"with unfreeze_blocks={k} your mask trains {trains} but not the head: the new "
                        f"head always trains (expected {want}).")
        if "stem" in trains or (k == 1 and "block1" in trains):
            fail("5.2", f"with unfreeze_blocks={k} your mask trains {trains}, expected {want}: unfreeze "
                        "the *top* blocks, next to the head. The bottom layers hold generic features "
                        "(edges, colours) that transfer as they are; the top ones are the most "
                        "task-specific.")
        fail("5.2", f"with unfreeze_blocks={k} your mask trains {trains}, expected {want}.")
    return passed("5.2", "The head plus the top unfreeze_blocks backbone blocks train; stem and lower "
                         "blocks stay frozen.")


@checker("5.3", "Write update_cosine(delta_a, delta_b).")
def exercise_5_3(update_cosine) -> Verdict:
    """``update_cosine(delta_a, delta_b)``: cosine similarity of two updates (lists of arrays)."""
    a = [np.array([[1.0, 0.0]]), np.array([0.0])]
    b = [np.array([[0.0, 0.0]]), np.array([2.0])]
    c = [np.array([[3.0, 0.0]]), np.array([4.0])]
    cases = [(a, a, 1.0, "an update with itself"), (a, b, 0.0, "updates in different tensors"),
             (a, c, 0.6, "[1, 0 | 0] and [3, 0 | 4]"), (c, [-x for x in c], -1.0, "opposite updates")]
    for x, y, expect, why in cases:
        got = attempt("5.3", update_cosine, x, y, what=why)
        try:
            got = float(got)
        except (TypeError, ValueError):
            fail("5.3", f"expected one number, got {show(got)}: flatten every tensor and concatenate them "
                        "first.")
        if np.isclose(got, expect):
            continue
        if why.startswith("[1, 0") and np.isclose(got, 1.0):
            fail("5.3", "for [1, 0 | 0] and [3, 0 | 4] you returned 1.0, expected 0.6: did you compare "
                        "only the first tensor? Concatenate all tensors (np.concatenate([d.ravel() for d "
                        "in delta])).")
        if why.startswith("[1, 0") and np.isclose(got, 3.0):
            fail("5.3", "you returned 3.0, the dot product; divide by both norms to get a cosine in [-1, 1].")
        fail("5.3", f"for {why} you returned {got:.4g}, expected {expect}.")
    return passed("5.3", "Cosine over all tensors flattened: 1 for the same direction, 0 orthogonal, 0.6 "
                         "for [1,0,0]·[3,0,4], -1 opposite.")

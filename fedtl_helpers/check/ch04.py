"""Checkers for chapter 4, "Pretrained initialisation": copying a model, rounds to reach a target.

Chapter: "Pretrained initialisation of the global model" (exercises 4.1 and 4.2).
"""

from __future__ import annotations

import numpy as np

from ._common import Verdict, attempt, checker, fail, passed, show


@checker("4.1", "Write copy_model(model).")
def exercise_4_1(copy_model) -> Verdict:
    """``copy_model(model)``: a separate model with the same architecture *and* weights."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(2)])
    model.set_weights([np.full(w.shape, i + 1.0, np.float32) for i, w in enumerate(model.get_weights())])
    before = [w.copy() for w in model.get_weights()]
    copy = attempt("4.1", copy_model, model, what="a small Dense model (4 weight tensors)")
    if not isinstance(copy, keras.Model):
        fail("4.1", f"expected a keras.Model, got {type(copy).__name__}.")
    if copy is model:
        fail("4.1", "you returned the same model object: every client would then train the one global "
                    "model. Build a new model (keras.models.clone_model) and copy the weights into it.")
    got = copy.get_weights()
    if len(got) != len(before):
        fail("4.1", f"the copy has {len(got)} weight tensors, the original {len(before)}: clone the whole "
                    "model, not a part of it (the article cloned only the backbone, losing the head).")
    differ = sum(not np.array_equal(a, b) for a, b in zip(got, before))
    if differ:
        fail("4.1", f"{differ} of {len(before)} weight tensors differ from the original: clone_model "
                    "copies the architecture and draws fresh random weights. Follow it with "
                    "copy.set_weights(model.get_weights()).")
    copy.set_weights([w + 1 for w in got])
    if not all(np.array_equal(a, b) for a, b in zip(model.get_weights(), before)):
        fail("4.1", "changing the copy changed the original too: the two share their variables. Use "
                    "keras.models.clone_model(model), which makes new variables.")
    return passed("4.1", "A separate model with equal weights (4 of 4 tensors), and training it leaves "
                         "the original untouched.")


@checker("4.2", "Write rounds_to_reach(history, target).")
def exercise_4_2(rounds_to_reach) -> Verdict:
    """``rounds_to_reach(history, target)``: first round with test accuracy >= target, else None."""
    from ..core.history import History

    h = History(rows=[{"round": r, "test_accuracy": a}
                      for r, a in ((0, 0.10), (2, 0.45), (4, 0.60), (6, 0.58), (8, 0.72))])
    cases = [(0.6, 4, "exactly 0.60 in round 4"), (0.5, 4, "0.45 then 0.60"), (0.7, 8, "0.72 in round 8"),
             (0.05, 0, "round 0 already above"), (0.9, None, "never reached")]
    for target, expect, why in cases:
        got = attempt("4.2", rounds_to_reach, h, target, what=f"target={target} on a History evaluated "
                                                              "every second round (rounds 0, 2, 4, 6, 8; "
                                                              "accuracies 0.10, 0.45, 0.60, 0.58, 0.72)")
        if got == expect and (got is None) == (expect is None):
            continue
        if target == 0.6 and got == 8:
            fail("4.2", "for target 0.60 you returned round 8, expected 4: round 4 has exactly 0.60, "
                        "which reaches the target (use >=, not >).")
        if expect is not None and got == [r["round"] for r in h.rows].index(expect):
            fail("4.2", f"for target {target} you returned {show(got)}, the row's position, expected round "
                        f"{expect}: return row['round'], since rows need not be numbered 0, 1, 2, ...")
        if expect is None:
            fail("4.2", f"the target 0.9 is never reached and you returned {show(got)}; return None (a "
                        "number such as -1 or the last round reads like a real result).")
        fail("4.2", f"for target {target} ({why}) you returned {show(got)}, expected {expect!r}.")
    return passed("4.2", "First round with accuracy >= target, by its round number, None when never reached.")

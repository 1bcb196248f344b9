"""Checkers for chapter 3, "Transfer learning overview": freezing, feature-map size, head size.

Chapter: "Transfer learning overview" (exercises 3.1 to 3.3).
"""

from __future__ import annotations

import math

from ._common import Verdict, attempt, checker, fail, passed, show


def _tiny_model():
    """A stand-in for ``fl.build_model``: nested models named "backbone" and "head" (milliseconds)."""
    import keras

    backbone = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="block1_dense"),
                                 keras.layers.Dense(3, name="block2_dense")], name="backbone")
    head = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="logits")], name="head")
    return keras.Sequential([keras.Input((4,)), backbone, head], name="tiny")


@checker("3.1", "Write freeze_backbone(model).")
def exercise_3_1(freeze_backbone) -> Verdict:
    """``freeze_backbone(model)``: backbone frozen, head trainable (in place), like strategy "head"."""
    model = _tiny_model()
    attempt("3.1", freeze_backbone, model, what="a small model with a 'backbone' (2 Dense layers) and a "
                                                "'head'")
    body, head = model.get_layer("backbone"), model.get_layer("head")
    n_body, n_head = len(body.trainable_weights), len(head.trainable_weights)
    if n_body == 0 and n_head == 0:
        fail("3.1", "nothing is trainable any more: you froze the whole model (model.trainable = False?). "
                    "Freeze only model.get_layer('backbone'); the new head must still learn.")
    if n_body > 0 and n_head == 0:
        fail("3.1", "it is the wrong way round: the head is frozen and the backbone still trains. Freeze "
                    "model.get_layer('backbone') and leave model.get_layer('head') trainable.")
    if n_body == 4:
        fail("3.1", "nothing was frozen: all 4 backbone tensors (2 kernels, 2 biases) are still "
                    "trainable. Set model.get_layer('backbone').trainable = False.")
    if n_body > 0:
        fail("3.1", f"{n_body} of the backbone's 4 tensors are still trainable: you froze only some of its "
                    "layers. Setting trainable = False on the backbone model freezes all of them at once.")
    if n_head != 2:
        fail("3.1", f"the head has {n_head} trainable tensors, expected 2 (its kernel and bias).")
    return passed("3.1", "Backbone frozen (0 of 4 tensors trainable), head trainable (2 tensors): this is "
                         "strategy='head'.")


def _resnet_side(size: int) -> int:
    side = size
    for _ in range(5):  # stem conv, max-pool and three strided stages each halve, rounding up
        side = math.ceil(side / 2)
    return side


@checker("3.2", "Write resnet50_feature_map(input_size).")
def exercise_3_2(resnet50_feature_map) -> Verdict:
    """``resnet50_feature_map(input_size)``: side of ResNet50's last feature map."""
    for size in (32, 96, 128, 224, 100, 40):
        expect = _resnet_side(size)
        got = attempt("3.2", resnet50_feature_map, size, what=f"input_size={size}")
        if got == expect:
            continue
        if isinstance(got, float) and math.isclose(got, size / 32):
            fail("3.2", f"for {size} you returned {show(got)}, a fraction; a feature map has a whole "
                        f"number of cells: expected {expect}.")
        if got == size // 32:
            fail("3.2", f"for input_size={size} you returned {show(got)}, expected {expect}: each of the "
                        "five stride-2 steps rounds *up* (padding keeps the border), so the side is "
                        "ceil(input_size / 32), not input_size // 32.")
        fail("3.2", f"for input_size={size} you returned {show(got)}, expected {expect}: ResNet50 halves "
                    "the side five times (32 -> 1, 96 -> 3, 224 -> 7).")
    return passed("3.2", "32 -> 1x1, 96 -> 3x3, 128 -> 4x4, 224 -> 7x7: at 32x32 the ImageNet features "
                         "collapse to one cell.")


@checker("3.3", "Write head_params(feature_dim, hidden, classes).")
def exercise_3_3(head_params) -> Verdict:
    """``head_params(feature_dim, hidden, classes)``: weights in Dense(hidden, relu) -> Dense(classes)."""
    for d, h, c in ((128, 128, 10), (2048, 128, 10), (3, 2, 4)):
        expect = d * h + h + h * c + c
        got = attempt("3.3", head_params, d, h, c, what=f"feature_dim={d}, hidden={h}, classes={c}")
        if got == expect:
            continue
        if got == d * h + h * c:
            fail("3.3", f"for feature_dim={d}, hidden={h}, classes={c} you returned {show(got)}, expected "
                        f"{expect}: the biases are missing (one per unit: {h} + {c}).")
        if got == 4 * expect:
            fail("3.3", f"you returned {show(got)}, the bytes in float32; the exercise asks for the number "
                        f"of weights, {expect}.")
        fail("3.3", f"for feature_dim={d}, hidden={h}, classes={c} you returned {show(got)}, expected "
                    f"{expect} = (d*h + h) + (h*c + c).")
    return passed("3.3", "A Dense layer has inputs x units weights plus one bias per unit; the article's "
                         "head on ResNet50's 2048 features has 263,562 of them.")

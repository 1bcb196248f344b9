"""Pruning and int8 TFLite export of the trained model: sparsity, size, agreement, errors."""

import numpy as np
import pytest

from fedtl_helpers.modeling import model_compression as mc
from fedtl_helpers.modeling.models import build_model


@pytest.fixture(scope="module")
def model():
    return build_model("builtin_cnn", "builtin", 10, (32, 32, 3), None, 0)


def test_global_magnitude_masks_hit_the_target_and_keep_the_largest(model):
    masks = mc.magnitude_masks(model, 0.5)
    kernels = [(np.abs(w.numpy()), m) for w, m in zip(model.weights, masks) if m is not None]
    kept = sum(m.sum() for _, m in kernels)
    total = sum(m.size for _, m in kernels)
    assert abs(1 - kept / total - 0.5) < 1e-3
    smallest_kept = min(v[m].min() for v, m in kernels)
    largest_dropped = max(v[~m].max() for v, m in kernels)
    assert smallest_kept >= largest_dropped
    assert all(m is None for w, m in zip(model.weights, masks) if not w.path.endswith("kernel"))
    layer = mc.magnitude_masks(model, 0.5, scope="layer")
    for m in layer:
        if m is not None:
            assert abs(1 - m.mean() - 0.5) < 0.01  # every kernel pruned to the same sparsity


def test_fine_tuning_keeps_pruned_weights_at_zero(model, small_shapes):
    pruned = mc.copy_model(model)
    masks = mc.magnitude_masks(pruned, 0.7)
    mc.apply_masks(pruned, masks)
    (x, y), _ = small_shapes
    before = [w.numpy().copy() for w in pruned.weights]
    mc.fine_tune_pruned(pruned, masks, x[:256], y[:256], epochs=1)
    assert abs(mc.sparsity_of(pruned) - 0.7) < 1e-3
    assert any(not np.array_equal(a, w.numpy()) for a, w in zip(before, pruned.weights))  # it trained
    assert mc.sparsity_of(model) == 0.0  # the original is untouched


def test_int8_tflite_is_3_5x_smaller_and_agrees_with_keras(model, small_shapes):
    (x, _), (xt, _) = small_shapes
    f32 = mc.to_tflite(model)
    i8 = mc.to_tflite(model, representative=x[:100])
    assert len(f32) / len(i8) >= 3.5
    keras_pred = mc.keras_predictor(model)(xt[:300]).argmax(1)
    f32_pred = mc.TFLiteModel(f32).predict(xt[:300]).argmax(1)
    i8_pred = mc.TFLiteModel(i8).predict(xt[:300]).argmax(1)
    assert np.mean(f32_pred == keras_pred) > 0.99
    assert np.mean(i8_pred == keras_pred) > 0.9


@pytest.mark.parametrize("sparsity", [1.0, -0.1, True])
def test_bad_sparsity_is_rejected(model, sparsity):
    with pytest.raises(ValueError, match=r"sparsity=.* is invalid: allowed a fraction in \[0, 1\)"):
        mc.magnitude_masks(model, sparsity)


def test_bad_scope_is_rejected(model):
    with pytest.raises(ValueError, match="scope='net' is invalid: allowed 'global' or 'layer'"):
        mc.magnitude_masks(model, 0.5, scope="net")

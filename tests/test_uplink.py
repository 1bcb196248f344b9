"""Compression inside the federated round: real bytes in the History, residuals through resume."""

import re

import numpy as np
import pytest

from fedtl_helpers.core.config import ExperimentConfig
from fedtl_helpers.core.storage import load_checkpoint, save_checkpoint
from fedtl_helpers.federation.server import Simulation, run_federated
from fedtl_helpers.transforms import compression


def _cfg(**kw):
    base = dict(num_clients=3, rounds=2, n_train=1_500, n_test=600, strategy="head")
    return ExperimentConfig(**{**base, **kw})


def _expected_q8_bytes(shapes):
    # bit-packed 8-bit levels + min + scale + header, per tensor
    return sum(int(np.prod(s)) + 8 + compression.HEADER_BYTES for s in shapes)


def test_history_counts_the_encoded_bytes(small_shapes):
    sim = Simulation(_cfg(), small_shapes)
    shapes = [w.shape for w, m in zip(sim.model.get_weights(), sim.mask) if m]
    dense = run_federated(_cfg(), dataset=small_shapes, progress=False, simulation=sim).history
    q8 = run_federated(_cfg(compression="quantize"), dataset=small_shapes, progress=False).history
    per_client_dense = sum(4 * int(np.prod(s)) + compression.HEADER_BYTES for s in shapes)
    assert dense.rows[1]["bytes_up"] == 3 * per_client_dense
    assert q8.rows[1]["bytes_up"] == 3 * _expected_q8_bytes(shapes)
    assert 3.9 < dense.rows[1]["bytes_up"] / q8.rows[1]["bytes_up"] < 4.0
    # 8-bit updates train (almost) as well as float32 ones
    assert abs(q8.final_accuracy - dense.final_accuracy) < 0.03


def test_topk_with_error_feedback_uses_50x_fewer_bytes_and_still_learns(small_shapes):
    sparse = dict(sparsity=0.02, sparse_value_bits=8)
    dense = run_federated(_cfg(rounds=10), dataset=small_shapes, progress=False).history
    topk = run_federated(_cfg(rounds=10, compression="topk", **sparse), dataset=small_shapes,
                         progress=False).history
    pruned = run_federated(_cfg(rounds=10, compression="prune", **sparse), dataset=small_shapes,
                           progress=False).history
    ratio = sum(dense.column("bytes_up")) / sum(topk.column("bytes_up"))
    assert ratio > 50
    assert sum(pruned.column("bytes_up")) == sum(topk.column("bytes_up"))  # same message size
    assert topk.final_accuracy > 0.5
    # what error feedback buys: the same bytes, much better accuracy than forgetting the rest
    assert topk.final_accuracy > pruned.final_accuracy + 0.1


def test_error_feedback_residuals_survive_checkpoint_and_resume(small_shapes, tmp_path):
    cfg = _cfg(rounds=3, compression="topk", sparsity=0.02)
    full = run_federated(cfg, dataset=small_shapes, progress=False)
    run_federated(_cfg(rounds=2, compression="topk", sparsity=0.02), dataset=small_shapes,
                  progress=False, checkpoint_dir=tmp_path)
    _, state = load_checkpoint(tmp_path)
    residual_keys = [k for k in state["arrays"] if k.startswith("uplink/")]
    assert {k.split("/")[1] for k in residual_keys} == {"0", "1", "2"}  # one residual per client
    assert any(np.abs(state["arrays"][k]).sum() > 0 for k in residual_keys)
    resumed = run_federated(cfg, dataset=small_shapes, progress=False, checkpoint_dir=tmp_path, resume=True)
    for a, b in zip(full.weights, resumed.weights):
        np.testing.assert_array_equal(a, b)
    assert resumed.history.column("bytes_up") == full.history.column("bytes_up")


def test_stochastic_quantisation_resumes_identically(small_shapes, tmp_path):
    cfg = _cfg(rounds=2, compression="quantize", quantize_bits=4)
    full = run_federated(cfg, dataset=small_shapes, progress=False)
    run_federated(_cfg(rounds=1, compression="quantize", quantize_bits=4), dataset=small_shapes,
                  progress=False, checkpoint_dir=tmp_path)
    # As a checkpoint saved before error_feedback=None was the default spells it: True, ignored
    # with quantisation. It still resumes (compared as what runs: no error feedback).
    weights, state = load_checkpoint(tmp_path)
    arrays = state.pop("arrays")
    assert state["config"]["error_feedback"] is None
    state["config"]["error_feedback"] = True
    save_checkpoint(tmp_path, weights, state, arrays)
    resumed = run_federated(cfg, dataset=small_shapes, progress=False, checkpoint_dir=tmp_path, resume=True)
    for a, b in zip(full.weights, resumed.weights):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("field, value, allowed", [
    ("compression", "zip", "one of 'none', 'float16', 'quantize', 'topk', 'prune'"),
    ("quantize_bits", 3, "one of 2, 4, 8"),
    ("sparsity", 0.0, "(0, 1]"),
    ("sparsity", 1.5, "(0, 1]"),
    ("sparse_value_bits", 12, "one of 8, 16, 32"),
    ("error_feedback", "yes", "True, False or None (on for 'topk')"),
    ("error_feedback", True, "None or False with compression='none'"),
])
def test_bad_compression_config_is_rejected_before_training(field, value, allowed):
    pattern = rf"ExperimentConfig\.{field}=.* is invalid: allowed .*{re.escape(allowed)}"
    with pytest.raises(ValueError, match=pattern):
        ExperimentConfig(**{field: value})


def test_uplink_rejects_mismatched_residual_and_bad_method():
    up = compression.Uplink("topk", fraction=0.5)
    rng = np.random.default_rng(0)
    up.send(0, [np.ones((2, 3), np.float32)], rng)
    msg = r"residual\[0\] has shape \(2, 3\) but update\[0\] has shape \(3, 2\)"
    with pytest.raises(ValueError, match=msg):
        up.send(0, [np.ones((3, 2), np.float32)], rng)
    with pytest.raises(ValueError, match="method='gzip' is invalid: allowed one of 'none'"):
        compression.Uplink("gzip")
    with pytest.raises(ValueError, match="fraction=0 is invalid"):
        compression.Uplink("topk", fraction=0)


def test_uplink_state_roundtrip():
    up = compression.Uplink("topk", fraction=0.25)
    rng = np.random.default_rng(0)
    for k in (0, 3):
        up.send(k, [np.arange(8, dtype=np.float32), np.ones(4, np.float32)], rng)
    twin = compression.Uplink("topk", fraction=0.25)
    twin.load_state(up.state())
    assert sorted(twin.residuals) == [0, 3]
    for k in (0, 3):
        for a, b in zip(up.residuals[k], twin.residuals[k]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("method", ["none", "float16", "quantize", "prune"])
def test_error_feedback_is_on_for_topk_only_and_never_silently_ignored(method):
    assert compression.Uplink("topk").error_feedback  # None: on for top-k
    assert not compression.Uplink("topk", error_feedback=False).error_feedback
    assert not compression.Uplink(method).error_feedback
    assert not compression.Uplink(method, error_feedback=False).error_feedback
    with pytest.raises(ValueError, match=rf"error_feedback=True is invalid with method='{method}': "
                                         r"allowed None or False"):
        compression.Uplink(method, error_feedback=True)
    with pytest.raises(ValueError, match=rf"ExperimentConfig\.error_feedback=True is invalid: allowed "
                                         rf"None or False with compression='{method}'"):
        ExperimentConfig(compression=method, error_feedback=True)
    cfg = ExperimentConfig(compression=method)
    assert cfg.error_feedback is None and not cfg.uses_error_feedback
    assert ExperimentConfig(compression="topk").uses_error_feedback
    assert ExperimentConfig(compression="topk", error_feedback=True).uses_error_feedback
    assert not ExperimentConfig(compression="topk", error_feedback=False).uses_error_feedback

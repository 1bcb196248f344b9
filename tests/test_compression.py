import numpy as np
import pytest

from fedtl_helpers.transforms import compression as c


def _update(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(64, 32)).astype(np.float32), rng.normal(size=10).astype(np.float32)]


def test_float16_roundtrip_and_size():
    u = _update()
    enc = c.encode_float16(u)
    for a, b in zip(u, c.decode(enc)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)
    assert enc.nbytes == (64 * 32 + 10) * 2 + 2 * c.HEADER_BYTES
    assert c.dense_nbytes(u) == (64 * 32 + 10) * 4 + 2 * c.HEADER_BYTES


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_quantisation_error_bound_and_exact_size(bits):
    u = _update()
    enc = c.encode_quantized(u, bits)
    for a, b, (q, _lo, scale) in zip(u, c.decode(enc), enc.payloads):
        assert np.abs(a - b).max() <= scale / 2 + 1e-6  # round to nearest level
        assert q.max() <= 2**bits - 1
    packed = sum(-(-t.size * bits // 8) + 8 + c.HEADER_BYTES for t in u)
    assert enc.nbytes == packed
    big = [np.random.default_rng(2).normal(size=10_000)]
    assert c.dense_nbytes(big) / c.encode_quantized(big, bits).nbytes > 0.98 * 32 / bits


def test_stochastic_rounding_is_unbiased_and_nearest_is_not():
    rng = np.random.default_rng(0)
    y = [np.array([0.0, 0.3, 1.0], np.float32)]  # 2 bits: levels 0, 1/3, 2/3, 1; 0.3 between two
    draws = np.stack([c.decode(c.encode_quantized(y, 2, stochastic=True, rng=rng))[0] for _ in range(4000)])
    scale = 1.0 / 3
    se = scale / 2 / np.sqrt(len(draws))  # a generous bound on the standard error of the mean
    assert abs(draws[:, 1].mean() - 0.3) < 4 * se
    nearest = c.decode(c.encode_quantized(y, 2))[0][1]
    assert abs(nearest - 0.3) > 0.03  # deterministic rounding is off by a fixed amount


def test_topk_keeps_the_largest_values_exactly():
    u = [np.array([0.1, -5.0, 0.2, 3.0, -0.05, 0.0], np.float32)]
    enc = c.encode_topk(u, fraction=2 / 6)
    np.testing.assert_array_equal(c.decode(enc)[0], [0, -5.0, 0, 3.0, 0, 0])
    assert enc.nbytes == 2 * (4 + 2) + c.HEADER_BYTES  # float32 value + uint16 index each
    enc8 = c.encode_topk(u, fraction=2 / 6, value_bits=8)
    assert enc8.nbytes == 2 * (1 + 2) + 8 + c.HEADER_BYTES


def test_topk_one_percent_is_over_50x_smaller():
    u = [np.random.default_rng(1).normal(size=100_000).astype(np.float32)]
    ratio = c.dense_nbytes(u) / c.encode_topk(u, 0.01, value_bits=8).nbytes
    assert ratio > 50


def test_error_feedback_sends_everything_eventually():
    """Telescoping: everything sent plus what is still held back equals everything produced."""
    residual = None
    produced = [np.zeros((64, 32)), np.zeros(10)]
    sent = [np.zeros((64, 32)), np.zeros(10)]
    for t in range(5):
        u = _update(t)
        msg, residual = c.topk_with_error_feedback(u, residual, 0.05)
        produced = [p + x for p, x in zip(produced, u)]
        sent = [s + d for s, d in zip(sent, c.decode(msg))]
    for p, s, r in zip(produced, sent, residual):
        np.testing.assert_allclose(s + r, p, atol=1e-4)
    # Without feedback, pruning loses the same mass for good.
    assert any(np.abs(r).sum() > 0 for r in residual)


@pytest.mark.parametrize("call, match", [
    (lambda: c.encode_quantized(_update(), 3), "bits=3"),
    (lambda: c.encode_quantized(_update(), 8, stochastic=True), "rng"),
    (lambda: c.encode_topk(_update(), 0), "fraction=0"),
    (lambda: c.encode_topk(_update(), 1.5), "fraction=1.5"),
    (lambda: c.encode_topk(_update(), 0.1, value_bits=12), "value_bits=12"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()

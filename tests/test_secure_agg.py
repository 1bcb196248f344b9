import numpy as np
import pytest
from scipy import stats

from fedtl_helpers import aggregation
from fedtl_helpers import secure_agg as sa


def _updates(n, seed=0, size=(40, 10)):
    rng = np.random.default_rng(seed)
    return [[rng.normal(0, 0.1, size).astype(np.float32), rng.normal(0, 0.1, size[1]).astype(np.float32)]
            for _ in range(n)]


def _quantised_sum(updates, counts, ids, clip=1.0):
    """What the masked sum must equal: the plain sum of the clients' quantised vectors."""
    w = np.asarray(counts, np.float64) / np.sum(counts)
    scale = sa.fixed_point_scale(len(updates), clip)
    total = np.zeros(sum(t.size for t in updates[0]), np.uint32)
    for k in ids:
        total += sa.quantize(updates[k], w[k], clip, scale)
    return total, scale


def test_pairwise_masks_cancel_so_the_masked_sum_is_the_exact_quantised_sum():
    ups, counts = _updates(5), [10, 20, 30, 5, 35]
    res = sa.secure_aggregate(ups, counts, threshold=3)
    expected, scale = _quantised_sum(ups, counts, range(5))
    np.testing.assert_array_equal(res.total, sa.dequantize(expected, scale))  # bit-exact
    plain = aggregation.fedavg(ups, counts)
    for a, b in zip(res.mean, plain):  # within the quantisation error: n/2 steps of 1/scale
        assert np.abs(a - b).max() <= 5 / 2 / scale + 1e-7
    assert res.survivors == [0, 1, 2, 3, 4] and res.dropped == []


def test_a_masked_update_is_uniform_noise_mod_2_32_and_the_raw_one_is_not():
    rng = np.random.default_rng(1)
    x = sa.quantize([rng.normal(0, 0.01, 50_000)], 0.5, 1.0, sa.fixed_point_scale(3, 1.0))
    c = sa.Client(0, x)
    roster = {0: c.advertise_keys(), 1: sa.Client(1, x).advertise_keys(), 2: sa.Client(2, x).advertise_keys()}
    c.share_keys(roster, 2)
    y = c.masked_input()

    def top_byte_p(v):  # chi-square test of the top 8 bits against uniform over 256 values
        counts = np.bincount((v >> 24).astype(np.int64), minlength=256)
        return stats.chisquare(counts).pvalue

    assert top_byte_p(y) > 1e-3
    assert stats.kstest(y / 2**32, "uniform").pvalue > 1e-3
    assert top_byte_p(x) < 1e-12  # the same test does tell a quantised update from noise


@pytest.mark.parametrize("gone", [[2], [0, 4], [1, 3, 6]])
def test_dropouts_after_sharing_keys_are_recovered_exactly(gone):
    ups, counts = _updates(7, seed=2), [3, 1, 4, 1, 5, 9, 2]
    res = sa.secure_aggregate(ups, counts, threshold=4, drop_before_upload=gone)
    alive = [k for k in range(7) if k not in gone]
    expected, scale = _quantised_sum(ups, counts, alive)
    np.testing.assert_array_equal(res.total, sa.dequantize(expected, scale))
    plain = aggregation.fedavg([ups[k] for k in alive], [counts[k] for k in alive])
    for a, b in zip(res.mean, plain):
        assert np.abs(a - b).max() <= 7 / 2 / scale / res.weight_sum + 1e-7
    assert res.dropped == gone and res.survivors == alive


def test_clients_silent_during_unmasking_still_count():
    ups = _updates(6, seed=3)
    res = sa.secure_aggregate(ups, threshold=3, drop_before_upload=[5], drop_before_unmask=[0, 1])
    expected, scale = _quantised_sum(ups, [1] * 6, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(res.total, sa.dequantize(expected, scale))


def test_too_many_dropouts_fail_loudly():
    ups = _updates(6, seed=4)
    with pytest.raises(ValueError, match="only 3 of 6 clients sent a masked input; the threshold is 4"):
        sa.secure_aggregate(ups, threshold=4, drop_before_upload=[0, 1, 2])
    with pytest.raises(ValueError, match=r"only 3 clients answered .* \(threshold=4\)"):
        sa.secure_aggregate(ups, threshold=4, drop_before_upload=[0], drop_before_unmask=[1, 2])


def test_a_client_refuses_to_reveal_both_secrets_of_one_client():
    c = sa.Client(0, np.zeros(3, np.uint32))
    with pytest.raises(ValueError, match="refuses to unmask"):
        c.unmask([1, 2], [2])


def test_byte_accounting_of_every_message():
    n, ups = 4, _updates(4, size=(5, 2))
    res = sa.secure_aggregate(ups, threshold=3)
    payload = 4 * (10 + 2) + 2 * 8  # 12 uint32 values, two tensor headers
    share = 4 + (4 + 4 + 66 + 66) + 28  # recipient id + (from, to, two shares) + AEAD nonce/tag
    assert res.nbytes("masked_input") == n * payload
    assert res.nbytes("advertise_keys", "up") == n * (4 + 64)
    assert res.nbytes("advertise_keys", "down") == n * (n * 68 + 8)
    assert res.nbytes("share_keys", "up") == res.nbytes("share_keys", "down") == n * (n - 1) * share
    assert res.nbytes("unmasking", "up") == n * n * (4 + 66)
    assert res.nbytes() == sum(res.nbytes(s) for s in sa.STEPS)
    assert {m.step for m in res.transcript} == set(sa.STEPS)


def test_values_are_clipped_to_the_range_and_sums_cannot_overflow():
    ups = [[np.array([5.0, -5.0, 0.5])], [np.array([5.0, -5.0, 0.5])], [np.array([5.0, -5.0, -0.5])]]
    res = sa.secure_aggregate(ups, threshold=2, clip=1.0)
    np.testing.assert_allclose(res.mean[0], [1.0, -1.0, 1 / 6], atol=1e-8)  # clipped, no wrap-around


@pytest.mark.parametrize("kwargs,match", [
    (dict(threshold=6), "2 <= threshold <= 5"),
    (dict(threshold=1), "2 <= threshold <= 5"),
    (dict(clip=0.0), "clip=0.0 is invalid"),
    (dict(num_examples=[1, 2, 3, 4, -1]), "positive finite"),
    (dict(drop_before_upload=[7]), r"\[7\] are not in 0..4"),
])
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sa.secure_aggregate(_updates(5), **kwargs)


def test_non_finite_values_and_a_single_client_are_refused():
    ups = _updates(3)
    ups[1][0][0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        sa.secure_aggregate(ups)
    with pytest.raises(ValueError, match="at least 2 clients"):
        sa.secure_aggregate(_updates(1))


@pytest.mark.parametrize("n", [2, 5])
def test_overhead_bytes_is_the_transcript_without_the_payload(n):
    res = sa.secure_aggregate(_updates(n))
    up, down = sa.overhead_bytes(n)
    assert up == res.nbytes(direction="up") - res.nbytes("masked_input")
    assert down == res.nbytes(direction="down")

import numpy as np
import pytest
from scipy import stats

from fedtl_helpers.transforms import aggregation
from fedtl_helpers.transforms import secure_agg as sa


def _reconstruct(shares, t):
    """One secret from its ``(x, y)`` shares (``shamir.interpolator`` at the shares' points)."""
    from fedtl_helpers.transforms import shamir as _shamir

    return _shamir.interpolator([x for x, _ in shares], t)([y for _, y in shares])



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
    res = sa.secure_aggregate(ups, threshold=4, drop_before_upload=[5], drop_before_unmask=[0])
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
    with pytest.raises(ValueError, match="refuses to unmask: clients \\[2\\] are listed as both"):
        c.unmask([1, 2], [2])


def _round(n, t, round_id=0):
    """Clients 0..n-1 after advertising keys and exchanging shares (steps 1-2), with their inputs."""
    vectors = [np.arange(8, dtype=np.uint32) * (k + 1) for k in range(n)]
    clients = [sa.Client(k, v, round_id) for k, v in enumerate(vectors)]
    roster = {c.id: c.advertise_keys() for c in clients}
    inbox = {c.id: {} for c in clients}
    for c in clients:
        for v, ct in c.share_keys(roster, t).items():
            inbox[v][c.id] = ct
    for c in clients:
        c.receive_shares(inbox[c.id])
    return clients, roster, vectors


def _rebuild(answers, kind, u, t):
    return _reconstruct([(v + 1, a[kind][u]) for v, a in sorted(answers.items())], t)


def test_double_unmasking_request_no_longer_reveals_an_input():
    # The attack: ask everyone once naming client 2 a survivor (its b_2 shares), then again naming
    # it dropped (its s_2 shares): with both secrets, client 2's masked input unmasks alone.
    n, t = 5, 3
    clients, roster, vectors = _round(n, t)
    y2 = clients[2].masked_input()
    first = {c.id: c.unmask(range(n), []) for c in clients}
    b_2 = _rebuild(first, "b", 2, t).to_bytes(32, "big")
    assert b_2 == clients[2]._b  # the honest first request works
    others = [k for k in range(n) if k != 2]
    for c in clients:
        with pytest.raises(ValueError, match="already answered an unmasking request this round"):
            c.unmask(others, [2])
    assert all(2 not in answer["s"] for answer in first.values())  # no share of s_2 ever left
    # b_2 alone does not unmask client 2: its pairwise masks are still on its input.
    leftover = (y2 - sa.mask(b_2, y2.size)).astype(np.uint32)
    assert not np.array_equal(leftover, vectors[2])


def test_a_client_refuses_requests_that_break_the_roster_or_the_threshold():
    n, t = 5, 3
    clients, _, _ = _round(n, t)
    with pytest.raises(ValueError, match="only 1 survivors are named, fewer than the threshold 3"):
        clients[2].unmask([2], [0, 1, 3, 4])  # a single-survivor request: that "sum" is client 2's input
    with pytest.raises(ValueError, match=r"not the round's roster \(\[0, 1, 2, 3, 4\]\)"):
        clients[2].unmask([0, 1, 2], [])  # clients 3 and 4 silently left out
    with pytest.raises(ValueError, match="itself named as dropped"):
        clients[2].unmask([0, 1, 3], [2, 4])
    assert not clients[2].answered  # refusals spend nothing: an honest request still works
    answer = clients[2].unmask([0, 1, 2, 3], [4])
    assert set(answer["b"]) == {0, 1, 2, 3} and set(answer["s"]) == {4}


def test_a_forged_share_is_detected_when_more_than_t_answer(monkeypatch):
    honest = sa.Client.unmask

    def forged(self, survivors, dropped):  # client 1 lies about its share of b_0
        out = honest(self, survivors, dropped)
        if self.id == 1:
            out["b"][0] = (out["b"][0] + 1) % sa.shamir.PRIME
        return out

    monkeypatch.setattr(sa.Client, "unmask", forged)
    with pytest.raises(ValueError, match=r"inconsistent shares: the points x=\[4, 5\]"):
        sa.secure_aggregate(_updates(5), threshold=3)  # x=2 is among the first t, so x=4, 5 disagree


def test_key_derivation_binds_purpose_round_and_both_public_keys():
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    a, b, c = (X25519PrivateKey.generate() for _ in range(3))
    pub = {k: x.public_key().public_bytes_raw() for k, x in zip("abc", (a, b, c))}
    ab = sa.pairwise_key(a, pub["b"], "mask", 3)
    assert ab == sa.pairwise_key(b, pub["a"], "mask", 3)  # both ends agree
    others = {sa.pairwise_key(a, pub["b"], "mask", 4), sa.pairwise_key(a, pub["b"], "share", 3),
              sa.pairwise_key(a, pub["c"], "mask", 3)}
    assert ab not in others and len(others) == 3  # a reused key pair never repeats a key
    assert sa.kdf_info("mask", 3, pub["a"], pub["b"]) == sa.kdf_info("mask", 3, pub["b"], pub["a"])
    with pytest.raises(ValueError, match="purpose='pad' is invalid"):
        sa.kdf_info("pad", 0, pub["a"], pub["b"])


def test_a_later_round_with_the_same_inputs_masks_differently_and_still_sums_exactly():
    ups = _updates(3, seed=5)
    r1, r2 = sa.secure_aggregate(ups, round_id=1), sa.secure_aggregate(ups, round_id=2)
    np.testing.assert_array_equal(r1.total, r2.total)
    assert not np.array_equal(r1.received[0], r2.received[0])


def test_a_threshold_below_a_majority_is_refused():
    # t=2 of 10 would let the server unmask two disjoint "survivor" sets and subtract them.
    with pytest.raises(ValueError, match="6 <= threshold <= 10"):
        sa.secure_aggregate(_updates(10, size=(2, 2)), threshold=2)
    res = sa.secure_aggregate(_updates(10, size=(2, 2)), threshold=6)
    assert res.survivors == list(range(10))


def test_a_client_itself_refuses_a_threshold_below_a_majority():
    # The attack through the protocol's own clients: t=2 of 10, two survivors named, each answers
    # once, and the "sum" of two clients comes back. Every client now refuses before sharing.
    with pytest.raises(ValueError, match=r"client 0 refuses threshold=2: allowed .* 6 <= threshold <= 10"):
        _round(10, 2)
    with pytest.raises(ValueError, match="refuses a roster that leaves it out"):
        sa.Client(7, np.zeros(2, np.uint32)).share_keys({0: (b"", b""), 1: (b"", b"")}, 2)
    clients, _, _ = _round(10, 6)  # a majority works
    assert all(c.threshold == 6 for c in clients)


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
    (dict(threshold=6), "3 <= threshold <= 5"),
    (dict(threshold=1), "3 <= threshold <= 5"),
    (dict(threshold=2), "3 <= threshold <= 5"),
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

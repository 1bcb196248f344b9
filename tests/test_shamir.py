import pytest

from fedtl_helpers.transforms import shamir


def _reconstruct(shares, t):
    """One secret from its ``(x, y)`` shares (``shamir.interpolator`` at the shares' points)."""
    from fedtl_helpers.transforms import shamir as _shamir

    return _shamir.interpolator([x for x, _ in shares], t)([y for _, y in shares])



def test_any_t_shares_rebuild_the_secret_and_fewer_refuse():
    secret = 2**255 + 12345
    shares = shamir.split(secret, n=7, t=4)
    assert [x for x, _ in shares] == list(range(1, 8))
    for subset in (shares[:4], shares[3:], [shares[0], shares[2], shares[4], shares[6]]):
        assert _reconstruct(subset, t=4) == secret
    # t - 1 shares interpolate a degree-2 polynomial: a different number (the secret stays hidden)
    assert shamir.lagrange_at_zero([1, 2, 3]) and _reconstruct(shares[:3], t=3) != secret
    with pytest.raises(ValueError, match="need at least 4"):
        _reconstruct(shares[:3], t=4)


def test_lagrange_coefficients_by_hand():
    # f(x) = 5 + 2x: f(1) = 7, f(2) = 9; f(0) = 2*f(1) - f(2) = 5
    assert shamir.lagrange_at_zero([1, 2]) == [2, shamir.PRIME - 1]
    assert _reconstruct([(1, 7), (2, 9)], t=2) == 5


@pytest.mark.parametrize("n,t", [(3, 1), (3, 4), (1, 1)])
def test_bad_threshold_is_refused(n, t):
    with pytest.raises(ValueError, match="2 <= t <= n"):
        shamir.split(1, n, t)


def test_secret_outside_the_field_and_repeated_points_are_refused():
    with pytest.raises(ValueError, match="secret"):
        shamir.split(shamir.PRIME, 3, 2)
    with pytest.raises(ValueError, match="distinct"):
        shamir.lagrange_at_zero([1, 1])


def test_a_forged_share_is_detected_when_more_than_t_shares_are_given():
    secret = 123456789
    shares = shamir.split(secret, n=6, t=3)
    forged = list(shares)
    forged[4] = (forged[4][0], (forged[4][1] + 1) % shamir.PRIME)
    with pytest.raises(ValueError, match=r"inconsistent shares: the points x=\[5\]"):
        _reconstruct(forged, t=3)
    forged[0] = (1, (forged[0][1] + 7) % shamir.PRIME)  # now among the first t: all others disagree
    with pytest.raises(ValueError, match=r"x=\[4, 6\]"):
        _reconstruct([forged[0], forged[1], forged[2], forged[3], forged[5]], t=3)
    assert _reconstruct(shares, t=3) == secret  # all six honest shares agree


def test_fewer_than_t_shares_are_refused_not_interpolated():
    shares = shamir.split(42, n=5, t=4)
    for k in range(4):
        with pytest.raises(ValueError, match="need at least 4"):
            _reconstruct(shares[:k], t=4)
    with pytest.raises(ValueError, match="threshold t=1 is invalid"):
        _reconstruct(shares, t=1)
    with pytest.raises(ValueError, match="distinct"):
        _reconstruct([shares[0], shares[0], shares[1], shares[2]], t=4)


def test_interpolator_reuses_coefficients_for_many_secrets_and_lagrange_at_evaluates_anywhere():
    # f(x) = 5 + 2x: f(3) = 2*f(2) - f(1) = 11, and lagrange_at([1, 2], 3) == [-1, 2]
    assert shamir.lagrange_at([1, 2], 3) == [shamir.PRIME - 1, 2]
    secrets_ = [7, 2**200 + 3, 0]
    split = [shamir.split(s, n=5, t=3) for s in secrets_]
    rebuild = shamir.interpolator([1, 2, 3, 4, 5], t=3)
    assert [rebuild([y for _, y in sh]) for sh in split] == secrets_


def test_the_one_multiplication_check_catches_a_forged_share_at_every_position():
    # The parity check is a random combination of n - t constraints: it must accept every honest
    # set of shares and reject a single changed share wherever it sits (base or extra).
    xs = list(range(1, 8))
    rebuild = shamir.interpolator(xs, t=4)
    for secret in (0, 1, 2**255 + 7):
        ys = [y for _, y in shamir.split(secret, n=7, t=4)]
        assert rebuild(ys) == secret
        for pos in range(7):
            forged = list(ys)
            forged[pos] = (forged[pos] + 3) % shamir.PRIME
            with pytest.raises(ValueError, match="inconsistent shares"):
                rebuild(forged)

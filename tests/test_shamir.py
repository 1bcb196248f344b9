import pytest

from fedtl_helpers import shamir


def test_any_t_shares_rebuild_the_secret_and_fewer_refuse():
    secret = 2**255 + 12345
    shares = shamir.split(secret, n=7, t=4)
    assert [x for x, _ in shares] == list(range(1, 8))
    for subset in (shares[:4], shares[3:], [shares[0], shares[2], shares[4], shares[6]]):
        assert shamir.reconstruct(subset, t=4) == secret
    # t - 1 shares interpolate a degree-2 polynomial: a different number (the secret stays hidden)
    assert shamir.lagrange_at_zero([1, 2, 3]) and shamir.reconstruct(shares[:3], t=3) != secret
    with pytest.raises(ValueError, match="need at least 4"):
        shamir.reconstruct(shares[:3], t=4)


def test_lagrange_coefficients_by_hand():
    # f(x) = 5 + 2x: f(1) = 7, f(2) = 9; f(0) = 2*f(1) - f(2) = 5
    assert shamir.lagrange_at_zero([1, 2]) == [2, shamir.PRIME - 1]
    assert shamir.reconstruct([(1, 7), (2, 9)], t=2) == 5


@pytest.mark.parametrize("n,t", [(3, 1), (3, 4), (1, 1)])
def test_bad_threshold_is_refused(n, t):
    with pytest.raises(ValueError, match="2 <= t <= n"):
        shamir.split(1, n, t)


def test_secret_outside_the_field_and_repeated_points_are_refused():
    with pytest.raises(ValueError, match="secret"):
        shamir.split(shamir.PRIME, 3, 2)
    with pytest.raises(ValueError, match="distinct"):
        shamir.lagrange_at_zero([1, 1])

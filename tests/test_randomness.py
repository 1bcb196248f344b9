import numpy as np
import pytest

from fedtl_helpers.core import randomness
from fedtl_helpers.core.config import RANDOMNESS_MODES


def _draws(mode, seed, purpose, *ids, n=8):
    return randomness.generator(mode, seed, purpose, *ids).random(n)


def test_simulation_streams_are_reproducible_and_depend_on_every_argument():
    a = _draws("simulation", 3, "noise", 1)
    np.testing.assert_array_equal(a, _draws("simulation", 3, "noise", 1))
    for other in (_draws("simulation", 4, "noise", 1), _draws("simulation", 3, "noise", 2),
                  _draws("simulation", 3, "sampling", 1)):
        assert not np.array_equal(a, other)
    one, two = (randomness.entropy("simulation", 3, "shuffle", 1, 2) for _ in range(2))
    assert one == two and len(one) == 4


def test_no_two_purposes_share_numbers():
    # The old scheme: default_rng([seed, round, 2]) was the round's noise AND client 2's shuffling,
    # and default_rng([seed, round]) (sampling) equalled client 0's shuffling [seed, round, 0].
    seed, rnd = 0, 1
    old_noise = np.random.default_rng([seed, rnd, 2]).random(8)
    np.testing.assert_array_equal(old_noise, np.random.default_rng([seed, rnd, 2]).random(8))
    np.testing.assert_array_equal(np.random.default_rng([seed, rnd]).random(8),
                                  np.random.default_rng([seed, rnd, 0]).random(8))  # the old collision
    streams = {("noise", rnd): _draws("simulation", seed, "noise", rnd),
               ("sampling", rnd): _draws("simulation", seed, "sampling", rnd)}
    for k in range(4):
        streams[("shuffle", rnd, k)] = np.random.default_rng(
            randomness.entropy("simulation", seed, "shuffle", rnd, k)).random(8)
        streams[("rounding", rnd, k)] = _draws("simulation", seed, "rounding", rnd, k)
    firsts = [tuple(v) for v in streams.values()]
    assert len(set(firsts)) == len(firsts)


def test_secure_mode_ignores_the_seed_and_never_repeats():
    a, b = _draws("secure", 0, "noise", 1), _draws("secure", 0, "noise", 1)
    assert not np.array_equal(a, b)
    one, two = (randomness.entropy("secure", 0, "sampling", 1) for _ in range(2))
    assert one != two
    assert isinstance(randomness.generator("secure", 0, "noise", 1).bit_generator, np.random.Philox)
    assert abs(randomness.generator("secure", 0, "noise", 1).normal(0, 1, 100_000).std() - 1) < 0.02


def test_secure_mode_keeps_the_streams_that_protect_nothing_seeded():
    """Shuffling and rounding guard no secret: seeded, a secure run without DP and with every
    client in every round repeats itself, in simulation and deployment alike."""
    for purpose, ids in (("shuffle", (1, 2)), ("rounding", (1, 2))):
        seeded = randomness.entropy("simulation", 0, purpose, *ids)
        assert randomness.entropy("secure", 0, purpose, *ids) == seeded
    assert set(randomness.SECURE_PURPOSES) == {"sampling", "noise"}


def test_deployment_accepts_only_the_secure_mode():
    randomness.require_secure("secure")
    with pytest.raises(ValueError, match="randomness='simulation' is invalid on the Flower deployment: "
                                         "allowed only 'secure'"):
        randomness.require_secure("simulation")
    with pytest.raises(ValueError, match="randomness='os' is invalid: allowed one of 'simulation', 'secure'"):
        randomness.require_secure("os", path="Flower deployment")


@pytest.mark.parametrize("args, match", [
    (("fast", 0, "noise", 1), "randomness='fast' is invalid"),
    (("simulation", 0, "dropout", 1), "purpose='dropout' is invalid"),
    (("simulation", 0, "shuffle", 1), r"needs 2 integer ids >= 0 \(round, client\)"),
    (("simulation", 0, "noise", -1), "needs 1 integer ids"),
    (("simulation", -1, "noise", 1), "seed=-1 is invalid"),
])
def test_bad_arguments_are_refused(args, match):
    with pytest.raises(ValueError, match=match):
        randomness.generator(*args)


def test_config_modes_mirror_the_module():
    assert RANDOMNESS_MODES == randomness.MODES


def test_fixed_size_sampling_follows_the_mode():
    from fedtl_helpers.federation.round import RoundStreams
    from fedtl_helpers.federation.stages import fixed_sample

    once = fixed_sample(RoundStreams(1, 3).sampling(), 50, 10)
    assert once == fixed_sample(RoundStreams(1, 3).sampling(), 50, 10)
    draws = {tuple(fixed_sample(RoundStreams(1, 3, "secure").sampling(), 50, 10)) for _ in range(3)}
    assert len(draws) == 3 and all(len(d) == 10 for d in draws)

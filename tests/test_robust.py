import re

import numpy as np
import pytest

from fedtl_helpers.core.config import ExperimentConfig
from fedtl_helpers.transforms import aggregation, robust


def _w(*values):
    return [np.array(values, np.float64)]


def test_rules_by_hand():
    deltas = [_w(2.0, 0.0), _w(3.0, 1.0), _w(-50.0, 9.0)]
    np.testing.assert_array_equal(robust.coordinate_median(deltas)[0], [2.0, 1.0])
    five = [_w(v) for v in (1.0, 2.0, 3.0, 4.0, 100.0)]
    np.testing.assert_allclose(robust.trimmed_mean(five, 0.2)[0], [3.0])  # drops 1 and 100
    np.testing.assert_allclose(robust.trimmed_mean(five, 0.0)[0], [22.0])  # beta=0 is the mean
    # Krum (f=1, n=5): each score sums the n - f - 2 = 2 smallest squared distances to others
    np.testing.assert_allclose(robust.krum_scores(five, 1), [5.0, 2.0, 2.0, 5.0, 96**2 + 97**2])
    assert robust.krum(five, 1)[0].tolist() == [2.0]  # the first of the two lowest (tied) scores
    np.testing.assert_allclose(robust.krum(five, 1, multi=3)[0], [2.0])  # 2, 3 and then 1


def _honest_and_attackers(seed=0, n=10, bad=2, factor=-10.0):
    rng = np.random.default_rng(seed)
    honest_mean = [rng.normal(size=(6, 4)), rng.normal(size=4)]
    honest = [[t + 0.1 * rng.normal(size=t.shape) for t in honest_mean] for _ in range(n - bad)]
    sent_mean = aggregation.mean(honest)
    attackers = [[factor * t for t in sent_mean] for _ in range(bad)]
    return honest + attackers, sent_mean


def _direction(agg, target):
    a = np.concatenate([t.ravel() for t in agg])
    b = np.concatenate([t.ravel() for t in target])
    cos = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
    return float(cos), float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_two_of_ten_sign_flippers_reverse_fedavg_but_not_the_robust_rules():
    deltas, honest = _honest_and_attackers()
    cos, _ = _direction(aggregation.mean(deltas), honest)
    assert cos < -0.99  # (8 * 1 - 2 * 10) / 10: the average now points the other way
    for agg in (robust.coordinate_median(deltas), robust.trimmed_mean(deltas, 0.2), robust.krum(deltas, 2),
                robust.krum(deltas, 2, multi=6)):
        cos, rel = _direction(agg, honest)
        assert cos > 0.95 and rel < 0.35


def test_trimming_too_little_lets_attackers_through():
    deltas, honest = _honest_and_attackers()
    assert _direction(robust.trimmed_mean(deltas, 0.1), honest)[0] < 0  # trims 1 of 2 attackers


@pytest.mark.parametrize("call,match", [
    (lambda d: robust.trimmed_mean(d, 0.5), r"beta=0.5 is invalid: allowed a number in \[0, 0.5\)"),
    (lambda d: robust.krum(d[:6], 2), r"needs n > 2f \+ 2 = 6 updates"),
    (lambda d: robust.krum(d, 1, multi=11), "1 <= multi <= 10"),
    (lambda d: robust.aggregate("mode", d), "rule='mode' is invalid"),
    (lambda d: robust.poison(d[0], "noise", 2.0), "attack='noise' is invalid"),
])
def test_bad_parameters_are_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call(_honest_and_attackers()[0])


def test_malicious_set_is_fixed_seeded_and_sized():
    a = robust.malicious_clients(20, 0.25, 3)
    assert a == robust.malicious_clients(20, 0.25, 3) and len(a) == 5 and a <= set(range(20))
    assert a != robust.malicious_clients(20, 0.25, 4)
    # The round's attack stage, built from the config: only the malicious clients poison.
    from fedtl_helpers.federation.stages import build_stages

    cfg = ExperimentConfig(num_clients=20, attack="sign_flip", malicious_fraction=0.25, attack_scale=3.0,
                           seed=3)
    d = [np.ones(2, np.float32)]
    bad, good = min(a), min(set(range(20)) - a)
    attack = build_stages(cfg).client.attack
    np.testing.assert_array_equal(attack(bad, d)[0], [-3.0, -3.0])
    assert attack(good, d) is d
    scaled = ExperimentConfig(num_clients=20, attack="scale", malicious_fraction=0.25, seed=3)
    np.testing.assert_array_equal(build_stages(scaled).client.attack(bad, d)[0], [10.0, 10.0])


@pytest.mark.parametrize("kw,field,allowed", [
    (dict(malicious_fraction=1.0, attack="scale"), "malicious_fraction", "[0, 1)"),
    (dict(malicious_fraction=-0.1, attack="scale"), "malicious_fraction", "[0, 1)"),
    (dict(malicious_fraction=0.2), "malicious_fraction", "0 when attack='none'"),
    (dict(attack="sign_flip"), "malicious_fraction", "at least one malicious"),
    (dict(attack="flip"), "attack", "'none', 'sign_flip', 'scale'"),
    (dict(aggregator="trimmed_mean", trim_fraction=0.5), "trim_fraction", "[0, 0.5)"),
    (dict(aggregator="trimmed_mean", trim_fraction=0.1, num_clients=5), "trim_fraction", "[0.2, 0.5) with 5"),
    (dict(aggregator="krum", krum_byzantine=2, num_clients=6), "krum_byzantine", "at most 1 with 6"),
    (dict(aggregator="krum", krum_multi=9, num_clients=6), "krum_multi", "[1, 6]"),
    (dict(secure_aggregation=True, secagg_threshold=6), "secagg_threshold", "[2, 5]"),
    (dict(secure_aggregation=True, secagg_threshold=1), "secagg_threshold", ">= 2"),
    (dict(secure_aggregation=True, num_clients=1), "secure_aggregation", "False with 1 client"),
    (dict(secure_aggregation=True, aggregator="median"), "aggregator", "'fedavg' or 'mean'"),
    (dict(secure_aggregation=True, compression="float16"), "compression", "'none' with secure"),
    (dict(secagg_clip=0), "secagg_clip", "> 0"),
    (dict(attack_scale=-1.0, attack="scale", malicious_fraction=0.2), "attack_scale", "> 0"),
])
def test_config_rejects_bad_values_before_training(kw, field, allowed):
    pattern = rf"ExperimentConfig\.{field}=.* is invalid: allowed .*{re.escape(allowed)}"
    with pytest.raises(ValueError, match=pattern):
        ExperimentConfig(**kw)


def test_config_lists_mirror_the_module():
    from fedtl_helpers.core import config
    assert config.ATTACKS == robust.ATTACKS and set(robust.RULES) <= set(config.AGGREGATORS)


def test_end_to_end_attack_breaks_fedavg_and_median_holds(small_shapes):
    """10 clients, 2 of them flip and scale their updates by 10; head-only on cached features."""
    base = dict(num_clients=10, rounds=3, n_train=1_500, n_test=600, strategy="head", local_epochs=2,
                attack="sign_flip", malicious_fraction=0.2, attack_scale=10.0)
    from fedtl_helpers.federation.server import run_federated

    acc = {agg: run_federated(ExperimentConfig(aggregator=agg, **base), dataset=small_shapes,
                              progress=False).history.column("test_accuracy")
           for agg in ("fedavg", "median")}
    assert acc["median"][-1] > 0.4 and acc["median"][-1] > acc["fedavg"][-1] + 0.2
    assert acc["fedavg"][-1] < 0.3  # the sign-flipped updates cancel (or reverse) the honest ones


def test_secure_aggregation_in_the_server_loop_equals_fedavg_up_to_quantisation(small_shapes):
    from fedtl_helpers.federation.server import run_federated

    base = dict(num_clients=4, rounds=2, n_train=1_500, n_test=600, strategy="head")
    plain = run_federated(ExperimentConfig(**base), dataset=small_shapes, progress=False)
    secure = run_federated(ExperimentConfig(secure_aggregation=True, **base), dataset=small_shapes,
                           progress=False)
    for a, b in zip(plain.weights, secure.weights):
        np.testing.assert_allclose(a, b, atol=1e-5)
    from fedtl_helpers.transforms import secure_agg
    up, down = secure_agg.overhead_bytes(4)
    row_p, row_s = plain.history.rows[1], secure.history.rows[1]
    assert row_s["bytes_up"] == row_p["bytes_up"] + up and row_s["bytes_down"] == row_p["bytes_down"] + down

import json
import math

import numpy as np
import pytest
from dp_accounting import NeighboringRelation, dp_event
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant

from fedtl_helpers.core import randomness, storage
from fedtl_helpers.core.config import CLIENT_SAMPLINGS, DP_ACCOUNTANTS, ExperimentConfig
from fedtl_helpers.federation.round import RoundStreams
from fedtl_helpers.federation.server import run_federated
from fedtl_helpers.federation.stages import build_stages
from fedtl_helpers.transforms import privacy


# ------------------------------------------------------------------ clipping
def test_clip_bound_holds_exactly_and_keeps_direction():
    rng = np.random.default_rng(0)
    for scale in (1e-3, 1.0, 7.3, 1e4):
        update = [rng.normal(0, scale, (17, 5)).astype(np.float32),
                  rng.normal(0, scale, 9).astype(np.float32)]
        for clip in (0.1, 1.0, 3.7):
            out = privacy.clip_update(update, clip)
            norm = privacy.global_norm(out)
            assert norm <= clip
            if privacy.global_norm(update) > clip:
                assert norm == pytest.approx(clip, rel=1e-5)
                # one factor for every tensor: the direction is kept
                ratio = out[0] / update[0]
                np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-5)
                np.testing.assert_allclose(out[1] / update[1], ratio.flat[0], rtol=1e-5)


def test_clip_leaves_small_update_unchanged_and_input_untouched():
    update = [np.array([0.3, 0.4], np.float32), np.array([[0.0]], np.float32)]  # norm 0.5
    out = privacy.clip_update(update, 1.0)
    for a, b in zip(out, update):
        np.testing.assert_array_equal(a, b)
    big = [np.array([3.0, 4.0], np.float32)]  # norm 5 -> [0.6, 0.8]
    np.testing.assert_allclose(privacy.clip_update(big, 1.0)[0], [0.6, 0.8], rtol=1e-6)
    np.testing.assert_array_equal(big[0], [3.0, 4.0])


@pytest.mark.parametrize("over", [1e-6, 1e-3, 5e-3, 2e-2])
def test_clip_at_the_boundary(over):
    """Just above the bound is clipped (a slack such as ``norm <= 1.01 * clip`` fails here); at
    the bound (to float32) and below it, the update is sent unchanged."""
    direction = np.array([0.6, 0.8], np.float64)  # unit norm
    for clip in (0.05, 1.0, 3.0):
        above = [(direction * clip * (1 + over)).astype(np.float32)]
        assert privacy.global_norm(above) > clip
        out = privacy.clip_update(above, clip)
        assert privacy.global_norm(out) <= clip
        assert privacy.global_norm(out) == pytest.approx(clip, rel=1e-6)
        below = [(direction * clip * (1 - over)).astype(np.float32)]
        np.testing.assert_array_equal(privacy.clip_update(below, clip)[0], below[0])


@pytest.mark.parametrize("clip", [0, -1.0, None, True])
def test_clip_rejects_bad_norm(clip):
    with pytest.raises(ValueError, match="clip="):
        privacy.clip_update([np.ones(2)], clip)


# ------------------------------------------------------------------ noise
def test_noise_std_on_the_sum_is_z_times_c():
    like = [np.zeros((400, 250)), np.zeros(50_000)]  # 150,000 independent draws
    z, c, m = 1.3, 0.7, 20.0
    out = privacy.noisy_mean([], like, c, z, m, np.random.default_rng(1))
    draws = np.concatenate([t.ravel() for t in out]) * m  # undo the division: noise on the sum
    assert np.std(draws) == pytest.approx(z * c, rel=0.02)
    assert abs(np.mean(draws)) < 0.01


def test_noisy_mean_without_noise_is_sum_over_fixed_denominator():
    a = [np.array([1.0, 2.0]), np.array([3.0])]
    b = [np.array([3.0, 4.0]), np.array([5.0])]
    out = privacy.noisy_mean([a, b], a, clip=10.0, noise_multiplier=0.0, denominator=4.0,
                             rng=np.random.default_rng(0))
    np.testing.assert_allclose(out[0], [1.0, 1.5])  # (1 + 3) / 4, (2 + 4) / 4: not / 2
    np.testing.assert_allclose(out[1], [2.0])


def test_the_server_clips_again_so_a_scaled_update_cannot_exceed_the_sensitivity():
    # A malicious client (or the "scale" attack) sends 10x its clipped update: the server's own
    # clip keeps one client's contribution to the sum at norm C, whatever the client did.
    honest = [np.array([0.6, 0.0]), np.array([0.8])]  # norm 1 = C
    scaled = [10 * t for t in honest]
    out = privacy.noisy_mean([scaled], honest, clip=1.0, noise_multiplier=0.0, denominator=1.0,
                             rng=np.random.default_rng(0))
    np.testing.assert_allclose(np.concatenate(out), [0.6, 0.0, 0.8], rtol=1e-6)
    assert privacy.global_norm(out) <= 1.0


def test_noise_is_a_function_of_the_generator():
    like = [np.zeros(5)]
    one = privacy.noisy_mean([], like, 1.0, 1.0, 1.0, np.random.default_rng([3, 1, 2]))
    two = privacy.noisy_mean([], like, 1.0, 1.0, 1.0, np.random.default_rng([3, 1, 2]))
    np.testing.assert_array_equal(one[0], two[0])


def test_poisson_sampling_rate_and_seeding():
    def sample(n, seed, rnd, mode="simulation"):
        return privacy.poisson_sample(RoundStreams(seed, rnd, mode).sampling(), n, 0.1)

    sizes = [len(sample(200, 0, r)) for r in range(300)]
    assert np.mean(sizes) == pytest.approx(20, rel=0.05)
    assert len(set(sizes)) > 5  # the number of clients varies
    assert sample(200, 0, 4) == sample(200, 0, 4)
    secure = [sample(200, 0, 4, "secure") for _ in range(3)]
    assert len({tuple(c) for c in secure}) == 3  # OS randomness: the seed does not fix the sample
    assert any(not sample(3, 0, r) for r in range(20))  # empty rounds exist


def test_expected_clients():
    assert privacy.expected_clients(500, 0.1, "poisson") == pytest.approx(50.0)
    assert privacy.expected_clients(10, 0.25, "fixed") == 2.0  # round(2.5), as clients_per_round


# ------------------------------------------------------------------ accounting
def _reference_rdp(z, q, t, delta, relation=NeighboringRelation.ADD_OR_REMOVE_ONE, event=None):
    acc = RdpAccountant(neighboring_relation=relation)
    acc.compose(event or dp_event.SelfComposedDpEvent(
        dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(z)), t))
    return acc.get_epsilon(delta)


def test_epsilon_matches_dp_accounting_directly():
    assert privacy.dp_epsilon(1.1, 0.05, 200, 1e-5) == pytest.approx(_reference_rdp(1.1, 0.05, 200, 1e-5))
    pld = PLDAccountant()
    pld.compose(dp_event.SelfComposedDpEvent(
        dp_event.PoissonSampledDpEvent(0.05, dp_event.GaussianDpEvent(1.1)), 200))
    ours = privacy.dp_epsilon(1.1, 0.05, 200, 1e-5, accountant="pld")
    assert ours == pytest.approx(pld.get_epsilon(1e-5))
    assert ours < privacy.dp_epsilon(1.1, 0.05, 200, 1e-5)  # PLD is the tighter accountant
    # fixed-size sampling: replace-one neighbours, where the sum moves by 2C, so z / 2
    ref = _reference_rdp(None, None, None, 1e-5, NeighboringRelation.REPLACE_ONE,
                         dp_event.SelfComposedDpEvent(dp_event.SampledWithoutReplacementDpEvent(
                             100, 10, dp_event.GaussianDpEvent(0.6)), 30))
    assert privacy.dp_epsilon(1.2, 0.1, 30, 1e-5, sampling="fixed", num_clients=100) == pytest.approx(ref)


def test_abadi_moments_accountant_setting():
    """Abadi et al. (2016): q=0.01, sigma=4, 10,000 steps, delta=1e-5 -> epsilon about 1.26 with
    the moments accountant. RDP with the classic conversion eps = rdp(a) + log(1/delta)/(a-1)
    reproduces that range; dp-accounting's tighter conversion gives a little less."""
    acc = RdpAccountant()
    one_step = dp_event.PoissonSampledDpEvent(0.01, dp_event.GaussianDpEvent(4.0))
    acc.compose(dp_event.SelfComposedDpEvent(one_step, 10_000))
    classic = min(r + math.log(1e5) / (a - 1) for a, r in zip(acc._orders, acc._rdp) if a > 1)
    assert 1.1 < classic < 1.35
    ours = privacy.dp_epsilon(4.0, 0.01, 10_000, 1e-5)
    assert 0.9 < ours <= classic


def test_epsilon_grows_with_rounds_and_falls_with_noise():
    eps = [privacy.dp_epsilon(1.0, 0.1, t, 1e-5) for t in (0, 1, 10, 50, 100)]
    assert eps[0] == 0.0 and all(a < b for a, b in zip(eps, eps[1:]))
    assert privacy.dp_epsilon(2.0, 0.1, 50, 1e-5) < privacy.dp_epsilon(1.0, 0.1, 50, 1e-5)
    assert privacy.dp_epsilon(0.0, 0.1, 5, 1e-5) == math.inf


def test_poisson_accounting_of_a_fixed_sample_overstates_privacy():
    """Accounting a fixed-size sample as if Poisson (ignoring replace-one's 2C) reports less epsilon."""
    right = privacy.dp_epsilon(1.0, 0.1, 50, 1e-5, sampling="fixed", num_clients=500)
    wrong = privacy.dp_epsilon(1.0, 0.1, 50, 1e-5, sampling="poisson")
    assert wrong < right / 2


@pytest.mark.parametrize("accountant", DP_ACCOUNTANTS)
def test_inverse_finds_a_multiplier_that_achieves_the_target(accountant):
    z = privacy.noise_multiplier_for_epsilon(4.0, 0.1, 100, 1e-5, accountant=accountant)
    assert privacy.dp_epsilon(z, 0.1, 100, 1e-5, accountant=accountant) <= 4.0
    assert privacy.dp_epsilon(z * 0.99, 0.1, 100, 1e-5, accountant=accountant) > 4.0
    zf = privacy.noise_multiplier_for_epsilon(8.0, 0.1, 50, 1e-5, sampling="fixed", num_clients=200)
    assert privacy.dp_epsilon(zf, 0.1, 50, 1e-5, sampling="fixed", num_clients=200) <= 8.0


@pytest.mark.parametrize("kwargs, match", [
    (dict(noise_multiplier=-1.0), "noise_multiplier=-1.0"),
    (dict(sampling_rate=0.0), "sampling_rate=0.0"),
    (dict(sampling_rate=1.5), "sampling_rate=1.5"),
    (dict(delta=1.0), "delta=1.0"),
    (dict(delta=0), "delta=0"),
    (dict(rounds=-2), "rounds=-2"),
    (dict(sampling="uniform"), "sampling='uniform'"),
    (dict(accountant="moments"), "accountant='moments'"),
    (dict(sampling="fixed"), "num_clients=None"),
    (dict(sampling="fixed", num_clients=10, accountant="pld"), "accountant='pld'"),
])
def test_accounting_errors_name_the_argument(kwargs, match):
    args = dict(noise_multiplier=1.0, sampling_rate=0.1, rounds=10, delta=1e-5) | kwargs
    with pytest.raises(ValueError, match=match):
        privacy.dp_epsilon(args.pop("noise_multiplier"), args.pop("sampling_rate"), args.pop("rounds"),
                           args.pop("delta"), **args)


def test_inverse_errors():
    with pytest.raises(ValueError, match="target_epsilon=0"):
        privacy.noise_multiplier_for_epsilon(0, 0.1, 10, 1e-5)
    with pytest.raises(ValueError, match="out of reach"):
        privacy.noise_multiplier_for_epsilon(1e-6, 1.0, 10_000, 1e-5)


# ------------------------------------------------------------------ config
@pytest.mark.parametrize("kwargs, field, allowed", [
    (dict(dp_clip=0.0, aggregator="mean"), "dp_clip", "> 0"),
    (dict(dp_clip=-1, aggregator="mean"), "dp_clip", "> 0"),
    (dict(dp_noise_multiplier=-0.5), "dp_noise_multiplier", ">= 0"),
    (dict(dp_delta=0.0), "dp_delta", "(0, 1)"),
    (dict(dp_delta=1.0), "dp_delta", "(0, 1)"),
    (dict(client_sampling="uniform"), "client_sampling", "'fixed', 'poisson'"),
    (dict(dp_accountant="moments"), "dp_accountant", "'rdp', 'pld'"),
    (dict(dp_clip=1.0), "aggregator", "'mean' when dp_clip is set"),
    (dict(dp_clip=1.0, aggregator="mean", compression="quantize"), "compression", "'none' when dp_clip"),
    (dict(dp_clip=1.0, aggregator="mean", dp_accountant="pld"), "dp_accountant",
     "'rdp' with client_sampling"),
    (dict(dp_clip=1.0, aggregator="mean", dp_delta=0.5), "dp_delta", "below 1 / num_clients = 0.2"),
    (dict(dp_clip=1.0, aggregator="mean", dp_delta=0.2), "dp_delta", "below 1 / num_clients = 0.2"),
    (dict(randomness="os"), "randomness", "'simulation', 'secure'"),
])
def test_config_rejects_bad_privacy_settings(kwargs, field, allowed):
    with pytest.raises(ValueError, match=rf"ExperimentConfig\.{field}=") as err:
        ExperimentConfig(**kwargs)
    assert allowed in str(err.value)


def test_config_choices_mirror_privacy_module():
    assert CLIENT_SAMPLINGS == privacy.SAMPLINGS and DP_ACCOUNTANTS == privacy.ACCOUNTANTS
    cfg = ExperimentConfig(dp_clip=0.5, aggregator="mean", client_sampling="poisson", dp_accountant="pld")
    assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg


# ------------------------------------------------------------------ in the round
def test_aggregate_dp_branch_and_empty_round():
    cfg = ExperimentConfig(num_clients=4, client_fraction=0.5, dp_clip=1.0, aggregator="mean",
                           dp_noise_multiplier=0.0, client_sampling="poisson")
    d1, d2 = [np.array([0.6, 0.8])], [np.array([0.0, 0.5])]
    out = build_stages(cfg).aggregate([d1, d2], [10, 1000], d1, RoundStreams(0, 1))
    np.testing.assert_allclose(out[0], [0.3, 0.65])  # unweighted sum / (q * N = 2)
    noisy = cfg.__class__(**{**cfg.to_dict(), "dp_noise_multiplier": 2.0})
    empty = build_stages(noisy).aggregate([], [], [np.zeros(10_000)], RoundStreams(0, 1))
    assert np.std(empty[0]) == pytest.approx(2.0 * 1.0 / 2, rel=0.05)  # pure noise, z*C / (qN)
    plain = ExperimentConfig(num_clients=4, client_sampling="poisson")
    np.testing.assert_array_equal(build_stages(plain).aggregate([], [], [np.ones(3)], RoundStreams(0, 1))[0],
                                  np.zeros(3))


def _dp_cfg(**kw):
    base = dict(num_clients=6, n_train=1_500, n_test=600, rounds=3, strategy="head", aggregator="mean",
                dp_clip=0.5, dp_noise_multiplier=0.8, client_sampling="poisson", client_fraction=0.5)
    return ExperimentConfig(**(base | kw))


def test_a_dp_run_under_a_scaling_attack_moves_the_model_by_at_most_the_clip(small_shapes):
    """In a whole run: attackers scale their clipped update 100x after clipping; the server clips
    again, so without noise the averaged step can never exceed C (it would be up to 100 C)."""
    from fedtl_helpers.federation.simulation import Simulation

    cfg = _dp_cfg(client_sampling="fixed", client_fraction=1.0, rounds=1, dp_noise_multiplier=0.0,
                  attack="scale", attack_scale=100.0, malicious_fraction=0.5)
    start = Simulation(cfg, small_shapes)
    mask = start.mask
    w0 = start.model.get_weights()
    w1 = run_federated(cfg, dataset=small_shapes, progress=False).weights
    step = [a - b for a, b, m in zip(w1, w0, mask) if m]
    assert 0.1 * cfg.dp_clip < privacy.global_norm(step) <= cfg.dp_clip * (1 + 1e-5)


def test_dp_run_records_epsilon_and_resumes_bit_identically(small_shapes, tmp_path):
    full = run_federated(_dp_cfg(), dataset=small_shapes, progress=False)
    eps = full.history.column("epsilon")
    assert eps[0] == 0.0 and all(a < b for a, b in zip(eps, eps[1:]))
    assert eps[-1] == pytest.approx(privacy.dp_epsilon(0.8, 0.5, 3, 1e-5))
    assert full.history.meta["privacy"]["epsilon"] == eps[-1]
    withheld = ["train_loss", "clients", "dropped", "bytes_up", "bytes_down", "seconds"]
    for row in full.history.rows:  # only what the accountant covers is released
        assert [row[k] for k in withheld] == [None] * 6, row  # bytes, seconds: they count the sample
        assert isinstance(row["test_accuracy"], float) and isinstance(row["epsilon"], float)
    meta = full.history.meta
    assert meta["withheld"] == withheld and meta["randomness"] == "simulation"
    assert "withheld (DP: not covered by epsilon): train_loss, clients, dropped" in full.history.table()
    assert meta["privacy"]["randomness"] == "simulation" and "no privacy" in meta["privacy"]["warning"]
    part = tmp_path / "run"
    run_federated(_dp_cfg(rounds=2), dataset=small_shapes, progress=False, checkpoint_dir=part)
    # The server's private state (sampled ids, residuals) lies apart from the released files.
    assert sorted(p.name for p in part.iterdir()) == ["history.csv", "history.json", "private"]
    assert sorted(p.name for p in (part / "private").iterdir()) == ["README.txt", "checkpoint.npz"]
    assert storage.read_checkpoint_state(part)["seen"]  # the ids are there, not in history.json
    resumed = run_federated(_dp_cfg(), dataset=small_shapes, progress=False, checkpoint_dir=part, resume=True)
    for a, b in zip(full.weights, resumed.weights):
        np.testing.assert_array_equal(a, b)
    assert resumed.history.column("epsilon") == eps
    header, first = (part / "history.csv").read_text().splitlines()[:2]
    cells = dict(zip(header.split(","), first.split(",")))
    assert "epsilon" in cells and [cells[k] for k in withheld] == [""] * 6  # withheld, blank
    assert json.loads((part / "history.json").read_text())["meta"]["privacy"]["delta"] == 1e-5


def test_dp_run_survives_an_empty_round_and_noise_moves_the_model(small_shapes):
    seed = next(s for s in range(100) if not privacy.poisson_sample(RoundStreams(s, 1).sampling(), 6, 0.1))
    res = run_federated(_dp_cfg(rounds=1, client_fraction=0.1, seed=seed), dataset=small_shapes,
                        progress=False)
    assert res.history.rows[1]["clients"] is None and res.history.rows[1]["train_loss"] is None
    start = run_federated(_dp_cfg(rounds=0, seed=seed), dataset=small_shapes, progress=False)
    moved = sum(float(np.abs(a - b).sum()) for a, b in zip(res.weights, start.weights))
    assert moved > 0  # nobody came, but the noise was still added


# ------------------------------------------------------------------ attacks on the noise
def _spy_on_sums(monkeypatch):
    """Record the true clipped sum of every round (what DP is meant to hide)."""
    sums, real = [], privacy.noisy_mean

    def spy(clipped, like, clip, noise_multiplier, denominator, rng):
        sums.append([np.sum([np.asarray(u[i], np.float64) for u in clipped], axis=0) if clipped
                     else np.zeros(np.shape(t)) for i, t in enumerate(like)])
        return real(clipped, like, clip, noise_multiplier, denominator, rng)

    monkeypatch.setattr(privacy, "noisy_mean", spy)
    return sums


def _subtract_seeded_noise(history, start, weights, trained):
    """The attack: everything it uses is in history.json and the two released models."""
    cfg = history.meta["config"]
    m = privacy.expected_clients(cfg["num_clients"], cfg["client_fraction"], cfg["client_sampling"])
    rng = randomness.generator("simulation", cfg["seed"], "noise", 1)  # the seed is published
    std = cfg["dp_noise_multiplier"] * cfg["dp_clip"]
    out = []
    for k in trained:
        delta = weights[k].astype(np.float64) - start[k]
        out.append(m * delta / cfg["server_lr"] - rng.normal(0.0, std, delta.shape))
    return out


@pytest.mark.parametrize("mode", ["simulation", "secure"])
def test_noise_subtraction_from_a_run_and_its_history_works_only_on_seeded_noise(small_shapes, monkeypatch,
                                                                                  mode):
    sums = _spy_on_sums(monkeypatch)
    cfg = _dp_cfg(rounds=1, randomness=mode)
    start = run_federated(_dp_cfg(rounds=0), dataset=small_shapes, progress=False).weights
    res = run_federated(cfg, dataset=small_shapes, progress=False)
    history = res.history.from_dict(json.loads(json.dumps(res.history.to_dict())))  # as saved
    trained = [k for k, (a, b) in enumerate(zip(start, res.weights)) if not np.array_equal(a, b)]
    recovered = _subtract_seeded_noise(history, start, res.weights, trained)
    err = max(float(np.abs(r - s).max()) for r, s in zip(recovered, sums[0]))
    if mode == "simulation":  # the documented weakness: the exact clipped sum, to float32 rounding
        assert err < 1e-4
    else:  # fresh noise: what is left is the noise itself, std z*C = 0.4 per coordinate
        left = np.concatenate([(r - s).ravel() for r, s in zip(recovered, sums[0])])
        assert np.std(left) > 0.8 * 0.5 * 0.5 and err > 0.4
        assert history.meta["privacy"]["randomness"] == "secure" and "warning" not in history.meta["privacy"]


@pytest.mark.parametrize("mode", ["simulation", "secure"])
def test_two_releases_at_different_noise_cannot_be_solved_for_the_sum_in_secure_mode(mode):
    # Two runs with one seed at z=2 and z=4 (as in a noise sweep): with seeded noise
    # r1 = s + 2C n and r2 = s + 4C n, so 2 r1 - r2 = s exactly.
    rng = np.random.default_rng(7)
    clipped = [[privacy.clip_update([rng.normal(size=300)], 1.0)[0]] for _ in range(5)]
    truth = np.sum([u[0] for u in clipped], axis=0, dtype=np.float64)
    r1, r2 = (privacy.noisy_mean(clipped, clipped[0], 1.0, z, 1.0, randomness.generator(mode, 0, "noise", 1))
              [0].astype(np.float64) for z in (2.0, 4.0))
    err = np.abs(2 * r1 - r2 - truth)
    if mode == "simulation":
        assert err.max() < 1e-4
    else:
        assert np.std(2 * r1 - r2 - truth) > 2.0  # independent noise: std sqrt(4*4 + 16) ~ 5.7


def test_secure_mode_runs_are_not_reproducible(small_shapes):
    # (Simulation mode is: the resume test above checks it bit for bit.)
    a, b = (run_federated(_dp_cfg(rounds=1, randomness="secure"), dataset=small_shapes, progress=False)
            for _ in range(2))
    assert any(not np.array_equal(x, y) for x, y in zip(a.weights, b.weights))

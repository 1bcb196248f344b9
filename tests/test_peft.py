"""Parameter-efficient strategies (LoRA, BitFit, LP-FT), feature skew and FedBN.

Chapter "Parameter-efficient federated fine-tuning". Counts are of the built-in backbone
(five 3x3 convolutions 3-32-32-64-64-128 without bias, five BatchNorms) and its 17,802-value head.
"""

import numpy as np
import pytest

from fedtl_helpers.core.config import ExperimentConfig
from fedtl_helpers.federation import personalization
from fedtl_helpers.federation.server import run_federated
from fedtl_helpers.federation.simulation import Simulation
from fedtl_helpers.federation.stages import DEPLOYMENT, refusals
from fedtl_helpers.inputs import partitioning
from fedtl_helpers.modeling import models

HEAD = 17_802  # Dense(128 -> relu) on 128 features + Dense(10): 128*128+128 + 128*10+10
FULL = 158_186  # every tensor, BatchNorm statistics included
BN = 4 * (32 + 32 + 64 + 64 + 128)  # gamma, beta, moving mean, moving variance
CONV_IN_OUT = ((3, 32), (32, 32), (32, 64), (64, 64), (64, 128))


def upload(clients: int, values: int, tensors: int) -> int:
    """float32 bytes plus ``compression.HEADER_BYTES`` (8) per tensor, for every client."""
    return clients * (4 * values + 8 * tensors)


def lora_values(rank: int) -> int:
    """A: (3, 3, in, r), B: (r, out) per convolution."""
    return sum(9 * i * rank + rank * o for i, o in CONV_IN_OUT)


@pytest.fixture(scope="module")
def tiny():
    from fedtl_helpers.inputs.data import load_dataset

    return load_dataset("shapes", n_train=300, n_test=100, seed=0)


def _cfg(**kw):
    base = dict(num_clients=2, rounds=1, n_train=300, n_test=100, batch_size=32)
    return ExperimentConfig(**{**base, **kw})


def _sent(model) -> int:
    return sum(w.size for w, m in zip(model.get_weights(), models.updatable_mask(model)) if m)


# ------------------------------------------------------------------ config
@pytest.mark.parametrize("field, value, allowed", [
    ("strategy", "adapters", "'lora'"),
    ("lora_rank", 0, ">= 1"),
    ("lpft_switch_round", 0, ">= 1"),
    ("lpft_then", "head", "'partial', 'full'"),
    ("feature_skew", "yes", "True or False"),
])
def test_bad_peft_values_name_the_field(field, value, allowed):
    with pytest.raises(ValueError, match=rf"ExperimentConfig\.{field}=.*allowed.*{allowed}"):
        ExperimentConfig(**{field: value})


def test_lpft_refuses_state_kept_per_sent_tensor():
    with pytest.raises(ValueError, match=r"server_optimizer='momentum'.*allowed 'sgd'"):
        ExperimentConfig(strategy="lpft", server_optimizer="momentum")
    with pytest.raises(ValueError, match=r"error_feedback=True.*allowed False"):
        ExperimentConfig(strategy="lpft", compression="topk")
    assert ExperimentConfig(strategy="lpft", compression="topk", error_feedback=False).lpft_then == "full"


def test_deployment_refuses_the_peft_strategies_by_name():
    for s in ("lora", "ffa_lora", "bitfit", "lpft"):
        cfg = ExperimentConfig(strategy=s, randomness="secure")
        assert refusals(cfg, "simulation") == []
        (msg,) = refusals(cfg, DEPLOYMENT)
        assert msg.startswith(f"strategy={s!r} is not supported by the Flower deployment: allowed 'head'")
    assert refusals(ExperimentConfig(strategy="full", randomness="secure"), DEPLOYMENT) == []


# ------------------------------------------------------------------ what each strategy sends
def test_trained_and_sent_values_per_strategy():
    model = models.build_model("builtin_cnn", None)
    expected = {"head": (HEAD, HEAD), "bitfit": (HEAD + BN // 2, HEAD + BN),
                "full": (FULL - BN // 2, FULL)}
    for strategy, (trained, sent) in expected.items():
        models.set_strategy(model, "builtin_cnn", strategy)
        assert (models.trainable_count(model), _sent(model)) == (trained, sent), strategy
    models.set_strategy(model, "builtin_cnn", "lora", lora_rank=4)
    assert lora_values(4) == 8_300
    assert models.trainable_count(model) == _sent(model) == HEAD + 8_300
    assert FULL / (HEAD + 8_300) > 6  # the target: >= 5 on the built-in backbone
    assert len(models.lora_pairs(model)) == 5
    with pytest.raises(ValueError, match="strategy='full' is invalid for a model with LoRA"):
        models.set_strategy(model, "builtin_cnn", "full")
    # FFA-LoRA: the same adapters, A frozen: only B (r x out per convolution) and the head train
    models.set_strategy(model, "builtin_cnn", "ffa_lora", lora_rank=4)
    assert models.trainable_count(model) == _sent(model) == HEAD + 4 * sum(o for _, o in CONV_IN_OUT)
    models.set_strategy(model, "builtin_cnn", "lora", lora_rank=4)  # and back
    assert models.trainable_count(model) == HEAD + 8_300
    with pytest.raises(ValueError, match="strategy='lpft' is invalid here"):
        models.set_strategy(model, "builtin_cnn", "lpft")


def test_bitfit_then_full_unfreezes_every_kernel_again():
    model = models.build_model("builtin_cnn", None)
    models.set_strategy(model, "builtin_cnn", "bitfit")
    models.set_strategy(model, "builtin_cnn", "full")
    assert all(models.updatable_mask(model))


def test_phase_strategy():
    assert [models.phase_strategy("lpft", r, 2, "partial") for r in (1, 2, 3, 9)] == [
        "head", "head", "partial", "partial"]
    assert models.phase_strategy("lora", 1, 2) == "lora"


def test_lora_factor_gap_hand_checked():
    one, zero = np.ones((1, 1)), np.zeros((1, 1))
    # mean(A) mean(B) = 0.25, mean(A B) = 0.5: relative error 0.5
    assert models.lora_factor_gap([one, zero], [one, zero]) == pytest.approx(0.5)
    # weighted 3:1 -> mean A = mean B = 0.75, mean AB = 0.75: |0.5625 - 0.75| / 0.75 = 0.25
    assert models.lora_factor_gap([one, zero], [one, zero], counts=[3, 1]) == pytest.approx(0.25)
    a, b = np.arange(6.0).reshape(3, 2), np.arange(8.0).reshape(2, 4)
    assert models.lora_factor_gap([a, a], [b, b]) == 0.0  # clients agree: no gap
    with pytest.raises(ValueError, match="equally long"):
        models.lora_factor_gap([a], [])
    with pytest.raises(ValueError, match="counts"):
        models.lora_factor_gap([a, a], [b, b], counts=[1, 0])


def test_average_lora_products_folds_the_exact_mean_into_the_kernel():
    # one "layer": W (1x1), A (1x1), B (1x1); and a plain tensor averaged as FedAvg does
    glob = [np.array([[2.0]]), np.array([[1.0]]), np.array([[0.0]]), np.array([0.0])]
    c1 = [np.array([[2.0]]), np.array([[1.0]]), np.array([[1.0]]), np.array([1.0])]
    c2 = [np.array([[2.0]]), np.array([[3.0]]), np.array([[0.5]]), np.array([4.0])]
    out = models.average_lora_products(glob, [c1, c2], [1, 3], [(0, 1, 2)])
    # mean(A B) = (1*1 + 3*(3*0.5)) / 4 = 1.375; A0 B0 = 0: W = 2 + 1.375; A, B stay A0, B0
    np.testing.assert_allclose(out[0], [[3.375]])
    np.testing.assert_array_equal(out[1], glob[1])
    np.testing.assert_array_equal(out[2], glob[2])
    np.testing.assert_allclose(out[3], [3.25])  # FedAvg: (1 + 3*4) / 4
    # factor averaging would compute with mean(A) mean(B) = 2.5 * 0.625 = 1.5625, not 1.375
    with pytest.raises(ValueError, match="counts"):
        models.average_lora_products(glob, [c1, c2], [1], [(0, 1, 2)])


# ------------------------------------------------------------------ in the round
def _frozen_unchanged(before, after, mask):
    return all(np.array_equal(a, b) for a, b, m in zip(before, after, mask) if not m)


def test_lora_round_sends_only_adapters_and_head_and_keeps_the_rest(tiny):
    cfg = _cfg(strategy="lora", lora_rank=2)
    sim = Simulation(cfg, tiny)
    start = sim.model.get_weights()
    res = run_federated(cfg, simulation=sim, progress=False)
    assert res.history.rows[1]["bytes_up"] == upload(2, HEAD + lora_values(2), 14)
    assert _frozen_unchanged(start, res.weights, sim.mask)
    b_factors = [res.weights[ib] for _, _, ib in models.lora_pairs(sim.model)]
    assert all(np.abs(b).max() > 0 for b in b_factors)  # B starts at zero and has trained


def test_ffa_lora_round_trains_b_only_and_its_mean_is_the_mean_update(tiny):
    """FFA-LoRA (Sun et al., 2024): A stays at its initialisation on every client, so the server's
    mean of the Bs is exactly the mean of the clients' updates A @ B_k (averaging both factors is
    not: ``lora_factor_gap``)."""
    from fedtl_helpers.federation.client import client_update

    cfg = _cfg(strategy="ffa_lora", lora_rank=2, aggregator="mean")
    sim = Simulation(cfg, tiny)
    start = sim.model.get_weights()
    pairs = models.lora_pairs(sim.model)
    b_values = 2 * sum(o for _, o in CONV_IN_OUT)
    assert sum(start[ib].size for _, _, ib in pairs) == b_values
    res = run_federated(cfg, simulation=sim, progress=False)
    assert res.history.rows[1]["bytes_up"] == upload(2, HEAD + b_values, 9)  # 5 Bs + 4 head tensors
    assert _frozen_unchanged(start, res.weights, sim.mask)
    for _, ia, ib in pairs:
        np.testing.assert_array_equal(res.weights[ia], start[ia])  # A: frozen, never sent back
        assert np.abs(res.weights[ib]).max() > 0  # B starts at zero and has trained
    # the clients' own updates, from the same start: the mean of A @ B_k is A @ mean(B_k)
    sim.model.set_weights(start)
    mask = sim.mask
    deltas = [client_update(sim.trainer, start, k, *sim.client_data(k),
                            seed=sim_streams_seed(cfg, k)).delta for k in range(2)]
    position = {i: n for n, i in enumerate(i for i, m in enumerate(mask) if m)}
    for _, ia, ib in pairs:
        a = start[ia].reshape(-1, start[ia].shape[-1])
        mean_of_products = np.mean([a @ d[position[ib]] for d in deltas], axis=0)
        np.testing.assert_allclose(a @ (res.weights[ib] - start[ib]), mean_of_products, rtol=1e-5, atol=1e-7)


def sim_streams_seed(cfg, client):
    from fedtl_helpers.federation.round import RoundStreams

    return RoundStreams(cfg.seed, 1).shuffle(client)


def test_bitfit_round_changes_only_norms_and_head(tiny):
    cfg = _cfg(strategy="bitfit")
    sim = Simulation(cfg, tiny)
    start = sim.model.get_weights()
    res = run_federated(cfg, simulation=sim, progress=False)
    assert res.history.rows[1]["bytes_up"] == upload(2, HEAD + BN, 24)
    assert _frozen_unchanged(start, res.weights, sim.mask)
    gamma = sim.model.get_layer("backbone").get_layer("block1_a_bn").gamma
    i = [id(v) for v in sim.model.weights].index(id(gamma))
    assert not np.array_equal(start[i], res.weights[i])


def _interrupted_equals_uninterrupted(tiny, tmp_path, **kw):
    """Two rounds in one go, and one round + a resumed second from the checkpoint: the same bits."""
    full = run_federated(_cfg(rounds=2, **kw), dataset=tiny, progress=False)
    run_federated(_cfg(rounds=1, **kw), dataset=tiny, progress=False, checkpoint_dir=tmp_path)
    resumed = run_federated(_cfg(rounds=2, **kw), dataset=tiny, progress=False,
                            checkpoint_dir=tmp_path, resume=True)
    for a, b in zip(full.weights, resumed.weights):
        np.testing.assert_array_equal(a, b)
    return full


def test_lpft_switches_sent_tensors_and_resumes_bit_identically(tiny, tmp_path):
    full = _interrupted_equals_uninterrupted(tiny, tmp_path, strategy="lpft", lpft_switch_round=1)
    ups = full.history.column("bytes_up")
    assert ups[1:] == [upload(2, HEAD, 4), upload(2, FULL, 29)]  # head only, then everything


def test_lpft_head_phase_uses_the_feature_cache_and_keeps_the_backbone(tiny):
    cfg = _cfg(strategy="lpft", lpft_switch_round=5)
    sim = Simulation(cfg, tiny)
    start = sim.model.get_weights()
    res = run_federated(cfg, simulation=sim, progress=False)
    assert sim.cached and sim.strategy == "head"
    assert sum(sim.mask) == 4 and _frozen_unchanged(start, res.weights, sim.mask)


def test_lora_resumes_bit_identically_with_quantised_uploads(tiny, tmp_path):
    full = _interrupted_equals_uninterrupted(tiny, tmp_path, strategy="lora", compression="quantize",
                                             quantize_bits=8)
    # 8 bits a value plus a scale and offset per tensor: about a quarter of float32's bytes
    assert full.history.rows[1]["bytes_up"] < 2 * (HEAD + lora_values(4)) * 1.05


@pytest.mark.parametrize("kw", [dict(dp_clip=1.0, aggregator="mean"),
                                dict(secure_aggregation=True)])
def test_lora_runs_with_dp_and_secure_aggregation(tiny, kw):
    res = run_federated(_cfg(strategy="lora", **kw), dataset=tiny, progress=False)
    assert np.isfinite(res.history.rows[1]["test_loss"])
    if "dp_clip" in kw:  # a DP History withholds the bytes (they count the sample)
        assert res.history.rows[1]["bytes_up"] is None
    else:
        assert res.history.rows[1]["bytes_up"] >= upload(2, HEAD + lora_values(4), 14)


def test_bitfit_resumes_bit_identically_with_topk_error_feedback(tiny, tmp_path):
    full = _interrupted_equals_uninterrupted(tiny, tmp_path, strategy="bitfit", compression="topk",
                                             sparsity=0.1)
    assert full.history.rows[2]["bytes_up"] < upload(2, HEAD + BN, 24) / 4  # 10% of the values


def test_lpft_runs_with_dp_across_the_switch(tiny):
    res = run_federated(_cfg(strategy="lpft", lpft_switch_round=1, rounds=2, dp_clip=1.0,
                             aggregator="mean", lpft_then="partial"), dataset=tiny, progress=False)
    assert res.history.column("epsilon")[2] > res.history.column("epsilon")[1] > 0
    assert np.isfinite(res.history.rows[2]["test_loss"])


@pytest.mark.parametrize("strategy, kw", [
    ("bitfit", dict(dp_clip=1.0, aggregator="mean")), ("bitfit", dict(secure_aggregation=True)),
    ("lpft", dict(secure_aggregation=True)), ("lpft", dict(compression="quantize", quantize_bits=8))],
    ids=["bitfit+dp", "bitfit+secagg", "lpft+secagg", "lpft+q8"])
def test_bitfit_and_lpft_run_with_the_rest_of_the_round(tiny, strategy, kw):
    """What chapter 05b says works, run: each against the same strategy without the feature
    (LP-FT for two rounds, across its switch after round 1)."""
    cfg = dict(strategy=strategy, rounds=2 if strategy == "lpft" else 1, lpft_switch_round=1)
    res = run_federated(_cfg(**cfg, **kw), dataset=tiny, progress=False)
    plain = _plain_run(tiny, **cfg, **({"aggregator": "mean"} if "dp_clip" in kw else {}))
    last = cfg["rounds"]
    assert np.isfinite(res.history.rows[last]["test_loss"])
    if kw.get("secure_aggregation"):  # masked sums give the plain weighted mean, to fixed-point precision
        assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(res.weights, plain.weights))
        assert res.history.rows[last]["bytes_up"] > plain.history.rows[last]["bytes_up"]  # keys, shares
    if "dp_clip" in kw:
        assert res.history.rows[1]["epsilon"] > 0
        assert not all(np.allclose(a, b) for a, b in zip(res.weights, plain.weights))  # noise added
    if kw.get("compression") == "quantize":  # both phases upload about a quarter of float32
        for r in (1, 2):
            assert res.history.rows[r]["bytes_up"] < plain.history.rows[r]["bytes_up"] / 3


_PLAIN: dict = {}


def _plain_run(tiny, **kw):
    """One run per distinct config, shared by the cases above (LP-FT's plain run serves two)."""
    key = tuple(sorted(kw.items()))
    if key not in _PLAIN:
        _PLAIN[key] = run_federated(_cfg(**kw), dataset=tiny, progress=False)
    return _PLAIN[key]


# ------------------------------------------------------------------ feature skew and FedBN
def test_feature_skew_styles_each_client_and_keeps_labels():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (30, 8, 8, 3)).astype(np.uint8)
    parts = [np.arange(0, 10), np.arange(10, 20), np.arange(20, 30)]
    out = partitioning.feature_skew(x, parts, seed=0)
    assert out.dtype == np.uint8 and out.shape == x.shape
    assert [partitioning.client_style(k)[0] for k in range(3)] == ["tint", "contrast", "blur"]
    for idx in parts:
        assert not np.array_equal(out[idx], x[idx])
    np.testing.assert_array_equal(out, partitioning.feature_skew(x, parts, seed=0))  # seeded
    flat = np.full((1, 5, 5, 3), 100, np.uint8)
    np.testing.assert_array_equal(partitioning.apply_style(flat, "blur", np.array([2])), flat)
    np.testing.assert_array_equal(partitioning.apply_style(flat, "contrast", np.array([2.0])), flat)
    np.testing.assert_array_equal(partitioning.apply_style(flat, "tint", np.array([0.5, 1.0, 3.0]))[0, 0, 0],
                                  [50, 100, 255])  # clipped to 255
    with pytest.raises(ValueError, match="kind='sepia' is invalid: allowed 'tint'"):
        partitioning.apply_style(flat, "sepia", np.array([1.0]))
    with pytest.raises(ValueError, match="uint8 images"):
        partitioning.feature_skew(x.astype(np.float32), parts)


def test_fedbn_keeps_norm_layers_on_each_client(tiny):
    cfg = _cfg(strategy="full", num_clients=3, feature_skew=True, holdout_fraction=0.2)
    sim = Simulation(cfg, tiny)
    for k in range(3):  # training and held-out images alike wear the client's style
        for idx in (sim.parts[k], sim.holdout[k]):
            assert not np.array_equal(sim.x_train[idx], tiny[0][0][idx])
    res = personalization.run_fedbn(cfg, simulation=sim)
    assert sum(res.mask) == 20  # 5 BatchNorms x (gamma, beta, mean, variance)
    assert sorted(res.heads) == [0, 1, 2]
    assert not np.array_equal(res.heads[0][0], res.heads[1][0])  # each client its own gamma
    # the shared tensors are one model; the row's upload excludes the personal tensors
    assert res.history.rows[1]["bytes_up"] == upload(3, FULL - BN, 9)  # row 0: the initial model
    acc = personalization.fedper_accuracy(sim, res)
    assert acc.shape == (3,) and ((0 <= acc) & (acc <= 1)).all()


def test_fedbn_and_fedper_refuse_what_they_cannot_run(tiny):
    with pytest.raises(ValueError, match="strategy='head' is invalid for FedBN.*allowed 'full'"):
        personalization.run_fedbn(_cfg(strategy="head"), dataset=tiny)
    with pytest.raises(ValueError, match="strategy='lpft' is invalid for FedPer"):
        personalization.run_fedper(_cfg(strategy="lpft"), dataset=tiny)


# ------------------------------------------------------------------ the chapter's checkers
def test_checkers_5_4_and_5_5(capsys):
    import fedtl_helpers as fl
    from fedtl_helpers.check import ExerciseError

    def todo(*args):
        raise NotImplementedError

    assert not fl.check.exercise_5_4(todo) and not fl.check.exercise_5_5(todo)
    assert capsys.readouterr().out.count("not attempted yet") == 2

    def values(shape, rank):
        return int(np.prod(shape[:-1])) * rank + rank * shape[-1]

    assert fl.check.exercise_5_4(values)
    with pytest.raises(ExerciseError, match="keeps the kernel's spatial size"):
        fl.check.exercise_5_4(lambda shape, r: shape[-2] * r + r * shape[-1])
    with pytest.raises(ExerciseError, match="multiplied the two factors"):
        fl.check.exercise_5_4(lambda shape, r: int(np.prod(shape[:-1])) * r * r * shape[-1])

    def product_mean(a, b, counts):
        w = np.asarray(counts, float) / sum(counts)
        return sum(wi * (x @ y) for wi, x, y in zip(w, a, b))

    assert fl.check.exercise_5_5(product_mean)
    with pytest.raises(ExerciseError, match="averaging the factors separately"):
        fl.check.exercise_5_5(lambda a, b, c: (
            sum(ci * x for ci, x in zip(c, a)) / sum(c)) @ (sum(ci * y for ci, y in zip(c, b)) / sum(c)))
    with pytest.raises(ExerciseError, match="unweighted mean"):
        fl.check.exercise_5_5(lambda a, b, c: sum(x @ y for x, y in zip(a, b)) / len(a))

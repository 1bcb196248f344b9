import json

import numpy as np
import pytest

from fedtl_helpers.core.config import ExperimentConfig
from fedtl_helpers.federation.round import RoundStreams
from fedtl_helpers.federation.server import Simulation, run_federated
from fedtl_helpers.federation.stages import fixed_sample


def _cfg(**kw):
    base = dict(num_clients=3, rounds=2, batch_size=32, n_train=1_500, n_test=600)
    base.update(kw)
    return ExperimentConfig(**base)


def test_sample_clients_seeded_and_sized():
    a = fixed_sample(RoundStreams(1, 3).sampling(), 20, 5)
    assert a == fixed_sample(RoundStreams(1, 3).sampling(), 20, 5)
    assert len(set(a)) == 5 and all(0 <= k < 20 for k in a)
    assert a != fixed_sample(RoundStreams(1, 4).sampling(), 20, 5)
    assert _cfg(num_clients=10, client_fraction=0.25).clients_per_round == 2  # round(2.5) = 2


def test_federated_run_learns_above_chance(small_shapes):
    res = run_federated(_cfg(rounds=3), dataset=small_shapes, progress=False)
    acc = res.history.column("test_accuracy")
    assert acc[0] < 0.2  # round 0: new random head
    assert acc[-1] > 0.3  # 10 classes: chance is 0.1
    losses = [r for r in res.history.column("test_loss")]
    assert losses[-1] < losses[0]
    row = res.history.rows[1]
    assert row["clients"] == [0, 1, 2] and row["bytes_up"] > 0 and row["seconds"] > 0
    assert "shapes" in res.history.meta["dataset"] and res.history.meta["weights"] == "builtin"


def test_client_fraction_uses_fewer_clients(small_shapes):
    res = run_federated(_cfg(rounds=1, client_fraction=0.34, strategy="head"),
                        dataset=small_shapes, progress=False)
    assert len(res.history.rows[1]["clients"]) == 1


def test_resume_gives_same_final_weights(small_shapes, tmp_path):
    full = run_federated(_cfg(rounds=2), dataset=small_shapes, progress=False)
    part_dir = tmp_path / "run"
    run_federated(_cfg(rounds=1), dataset=small_shapes, progress=False, checkpoint_dir=part_dir)
    # Resuming builds a new Simulation (model, trainer) as a fresh process would.
    resumed = run_federated(_cfg(rounds=2), dataset=small_shapes, progress=False,
                            checkpoint_dir=part_dir, resume=True)
    for a, b in zip(full.weights, resumed.weights):
        np.testing.assert_array_equal(a, b)
    assert resumed.history.column("round") == [0, 1, 2]
    saved = json.loads((part_dir / "history.json").read_text())
    assert [r["round"] for r in saved["rows"]] == [0, 1, 2]
    assert (part_dir / "history.csv").read_text().startswith("round,test_accuracy")


def test_resume_rejects_other_config(small_shapes, tmp_path):
    run_federated(_cfg(rounds=1, strategy="head"), dataset=small_shapes, progress=False,
                  checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="different config"):
        run_federated(_cfg(rounds=1, strategy="head", seed=1), dataset=small_shapes,
                      progress=False, checkpoint_dir=tmp_path, resume=True)


def test_feature_cache_matches_uncached(small_shapes):
    """Head-only training on cached features is the same model as the uncached run."""
    cached = run_federated(_cfg(rounds=2, strategy="head"), dataset=small_shapes, progress=False)
    plain = run_federated(_cfg(rounds=2, strategy="head", feature_cache=False),
                          dataset=small_shapes, progress=False)
    for a, b in zip(cached.weights, plain.weights):
        np.testing.assert_allclose(a, b, atol=2e-5)
    np.testing.assert_allclose(cached.history.column("test_accuracy"),
                               plain.history.column("test_accuracy"), atol=0.005)


def test_pretrained_beats_random_after_round_one(small_shapes):
    pre = run_federated(_cfg(rounds=1), dataset=small_shapes, progress=False)
    rnd = run_federated(_cfg(rounds=1, weights=None), dataset=small_shapes, progress=False)
    assert pre.history.rows[1]["test_accuracy"] > rnd.history.rows[1]["test_accuracy"] + 0.15


def test_memory_objects_do_not_grow_with_clients(small_shapes):
    sim = Simulation(_cfg(num_clients=15, n_train=1_500, strategy="head"), small_shapes)
    run_federated(sim.config, simulation=sim, progress=False)
    # One model and one traced step whatever the number of clients.
    assert sim.trainer._train_epoch.experimental_get_tracing_count() == 1


def test_per_client_accuracy_on_holdout(small_shapes):
    cfg = _cfg(rounds=1, strategy="head", holdout_fraction=0.2)
    sim = Simulation(cfg, small_shapes)
    res = run_federated(cfg, simulation=sim, progress=False)
    acc = sim.per_client_accuracy(res.weights)
    assert acc.shape == (3,) and np.all((acc >= 0) & (acc <= 1))
    trained = set(np.concatenate(sim.parts))
    assert trained.isdisjoint(np.concatenate(sim.holdout))  # held-out data is never trained on
    plain = Simulation(_cfg(rounds=1, strategy="head"), small_shapes)
    with pytest.raises(ValueError, match="holdout_fraction"):
        plain.per_client_accuracy(res.weights)


def test_unweighted_mean_aggregator_differs(small_shapes):
    cfg = _cfg(rounds=1, strategy="head", partition="dirichlet", alpha=0.3)
    a = run_federated(cfg, dataset=small_shapes, progress=False).weights
    b = run_federated(_cfg(rounds=1, strategy="head", partition="dirichlet", alpha=0.3,
                           aggregator="mean"), dataset=small_shapes, progress=False).weights
    assert any(not np.allclose(x, y) for x, y in zip(a, b))


def test_crash_mid_run_then_resume_matches_uninterrupted(small_shapes, tmp_path, monkeypatch):
    from fedtl_helpers.core import randomness
    from fedtl_helpers.federation import round as server  # the round's client update stage

    cfg = _cfg(rounds=3, strategy="partial")
    full = run_federated(cfg, dataset=small_shapes, progress=False)
    real = server.client_update

    def crash_in_round_3(*args, seed, **kw):
        if seed == randomness.entropy("simulation", cfg.seed, "shuffle", 3, args[2]):  # args[2]: client
            raise KeyboardInterrupt("power cut")
        return real(*args, seed=seed, **kw)

    monkeypatch.setattr(server, "client_update", crash_in_round_3)
    with pytest.raises(KeyboardInterrupt):
        run_federated(cfg, dataset=small_shapes, progress=False, checkpoint_dir=tmp_path)
    assert not (tmp_path / "history.json").exists()  # nothing that looks finished
    monkeypatch.setattr(server, "client_update", real)
    resumed = run_federated(cfg, dataset=small_shapes, progress=False, checkpoint_dir=tmp_path,
                            resume=True)
    for a, b in zip(full.weights, resumed.weights):
        np.testing.assert_array_equal(a, b)
    assert resumed.history.column("round") == [0, 1, 2, 3]

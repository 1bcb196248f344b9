import numpy as np
import pytest

from fedtl_helpers.core.config import ExperimentConfig
from fedtl_helpers.federation import evaluation, personalization
from fedtl_helpers.federation.server import Simulation, run_federated


def test_interpolate_by_hand():
    g = [np.array([0.0, 4.0], np.float32)]
    w = [np.array([2.0, 0.0], np.float32)]
    np.testing.assert_allclose(personalization.interpolate(g, w, 0.25)[0], [1.5, 1.0])
    np.testing.assert_array_equal(personalization.interpolate(g, w, 1.0)[0], g[0])
    assert personalization.interpolate(g, w, 0.5)[0].dtype == np.float32
    with pytest.raises(ValueError, match=r"alpha=1.5 is invalid: allowed a number in \[0, 1\]"):
        personalization.interpolate(g, w, 1.5)


def _sim(**kw):
    base = dict(num_clients=5, rounds=3, n_train=1_500, n_test=600, strategy="head", holdout_fraction=0.2,
                partition="dirichlet", alpha=0.1)
    base.update(kw)
    return ExperimentConfig(**base)


def test_personal_mask_is_the_classifier_only(small_shapes):
    sim = Simulation(_sim(), small_shapes)
    mask = personalization.personal_mask(sim.model)
    assert [w.shape for w, m in zip(sim.model.get_weights(), mask) if m] == [(128, 10), (10,)]
    with pytest.raises(ValueError, match="personal layers \\['nope'\\] are invalid"):
        personalization.personal_mask(sim.model, ["nope"])


def test_personalisation_beats_the_global_model_under_label_skew(small_shapes):
    """The chapter's claim, small: at alpha=0.1 local fine-tuning lifts the mean and the worst client."""
    cfg = _sim()
    sim = Simulation(cfg, small_shapes)
    fed = run_federated(cfg, simulation=sim, progress=False)
    res = personalization.finetune_clients(sim, fed.weights, epochs=3, seed=0)
    g, loc = evaluation.spread(res.global_acc), evaluation.spread(res.local_acc)
    assert loc["mean"] > g["mean"] + 0.10
    assert loc["worst"] > g["worst"]
    assert res.curve.shape == (5, len(personalization.ALPHAS))
    np.testing.assert_allclose(res.curve[:, -1], res.global_acc)  # alpha = 1 is the global model
    assert set(res.chosen_alpha) <= set(personalization.ALPHAS)
    # FedPer: one small head per client, not a model per client, and better than the global model
    fp = personalization.run_fedper(cfg, simulation=sim)
    assert sorted(fp.heads) == list(range(5))
    assert all([h.shape for h in head] == [(128, 10), (10,)] for head in fp.heads.values())
    assert personalization.fedper_accuracy(sim, fp).mean() > g["mean"] + 0.10
    shared = [w for w, p in zip(fp.weights, fp.mask) if not p]
    assert all(np.array_equal(a, b) for a, b in zip(shared, [w for w, p in zip(fp.client_weights(3), fp.mask)
                                                             if not p]))


def test_fedper_with_nothing_to_share_is_refused(small_shapes):
    cfg = _sim(rounds=1)
    with pytest.raises(ValueError, match="leaves nothing to share"):
        personalization.run_fedper(cfg, dataset=small_shapes, personal_layers=("dense_128", "logits"))


def test_a_client_without_held_out_data_is_named_before_training(small_shapes):
    cfg = _sim(partition="iid", alpha=None, quantity_alpha=0.05, num_clients=10, holdout_fraction=0.05)
    with pytest.raises(ValueError, match=r"client \d+ has \d+ examples: too few to hold out fraction=0.05"):
        Simulation(cfg, small_shapes)


def test_finetune_needs_holdout_and_sane_arguments(small_shapes):
    sim = Simulation(_sim(holdout_fraction=0.0), small_shapes)
    with pytest.raises(ValueError, match="holdout_fraction"):
        personalization.finetune_clients(sim, sim.model.get_weights(), 1)
    sim = Simulation(_sim(), small_shapes)
    with pytest.raises(ValueError, match="epochs=0 is invalid"):
        personalization.finetune_clients(sim, sim.model.get_weights(), 0)
    with pytest.raises(ValueError, match="val_fraction=1.0 is invalid"):
        personalization.finetune_clients(sim, sim.model.get_weights(), 1, val_fraction=1.0)


def test_fedper_history_says_what_ran_and_withholds_what_dp_does_not_account(small_shapes):
    """FedPer's History carries run_federated's meta: the randomness mode, and under DP the columns
    withheld from release and the privacy spent (with the seeded-noise warning)."""
    from fedtl_helpers.core.history import DP_WITHHELD

    cfg = _sim(rounds=2, aggregator="mean", dp_clip=1.0, dp_noise_multiplier=1.0, dp_delta=1e-3,
               client_fraction=0.6)
    fp = personalization.run_fedper(cfg, dataset=small_shapes)
    meta = fp.history.meta
    assert meta["path"] == "FedPer" and meta["randomness"] == "simulation"
    assert meta["config"]["dp_clip"] == 1.0 and meta["withheld"] == list(DP_WITHHELD)
    assert meta["privacy"]["epsilon"] == fp.history.rows[-1]["epsilon"] > 0
    assert "no privacy" in meta["privacy"]["warning"]
    plain = personalization.run_fedper(_sim(rounds=1), dataset=small_shapes).history.meta
    assert plain["withheld"] == [] and "privacy" not in plain


@pytest.mark.parametrize("where", ["shared", "personal"])
def test_a_diverged_fedper_round_stops_with_a_clear_error(small_shapes, monkeypatch, where):
    """Round 2 turns the shared aggregate, or one client's personal tensors, to NaN: either stops
    the run (the personal check is the runner's own: the server never sees those tensors)."""
    import dataclasses
    import re

    from fedtl_helpers.core.storage import NonFiniteError
    from fedtl_helpers.federation.round import ClientStages

    if where == "shared":
        real = personalization.build_stages

        def nan_aggregate(cfg):
            built = real(cfg)

            def aggregate(deltas, counts, like, streams):
                agg = built.aggregate(deltas, counts, like, streams)
                return [np.full_like(a, np.nan) for a in agg] if streams.round == 2 else agg

            return dataclasses.replace(built, aggregate=aggregate)

        monkeypatch.setattr(personalization, "build_stages", nan_aggregate)
    else:
        real_update = ClientStages.update

        def nan_update(self, trainer, weights, client, x, y, streams):
            res = real_update(self, trainer, weights, client, x, y, streams)
            if streams.round == 2:
                res.delta = [np.full_like(d, np.nan) for d in res.delta]
            return res

        monkeypatch.setattr(ClientStages, "update", nan_update)
    with pytest.raises(NonFiniteError, match="training diverged in round 2") as err:
        personalization.run_fedper(_sim(rounds=3), dataset=small_shapes)
    total = int(re.search(r"\d+ of (\d+) weight tensors", str(err.value)).group(1))
    # personal: the client's logits kernel and bias; shared: the whole model's tensors
    assert (total == 2) == (where == "personal")



def test_fedper_resumes_from_its_checkpoint_with_the_personal_tensors(small_shapes, tmp_path):
    """FedPer runs ``run_rounds`` as the simulation does: a run stopped after round 1 and resumed
    ends with the uninterrupted run's shared weights, personal tensors and History (round 0
    included)."""
    cfg = _sim(rounds=2, client_fraction=0.6)
    whole = personalization.run_fedper(cfg, dataset=small_shapes)
    personalization.run_fedper(_sim(rounds=1, client_fraction=0.6), dataset=small_shapes,
                               checkpoint_dir=tmp_path)
    resumed = personalization.run_fedper(cfg, dataset=small_shapes, checkpoint_dir=tmp_path, resume=True)
    assert [r["round"] for r in resumed.history.rows] == [0, 1, 2]
    assert resumed.history.meta["resumed_after_rounds"] == [1]
    for key in ("clients", "train_loss", "bytes_up", "bytes_down"):
        assert resumed.history.column(key) == whole.history.column(key), key
    for a, b in zip(resumed.weights, whole.weights):
        np.testing.assert_array_equal(a, b)
    assert sorted(resumed.heads) == sorted(whole.heads)
    for k in whole.heads:
        for a, b in zip(resumed.heads[k], whole.heads[k]):
            np.testing.assert_array_equal(a, b)

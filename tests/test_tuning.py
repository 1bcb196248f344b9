"""Fair comparisons' tools: the validation split, the grid search, the seed-band plot."""

import dataclasses

import numpy as np
import pytest

from fedtl_helpers.workflow.tuning import grid_search, validation_split


def test_validation_split_is_stratified_disjoint_and_reproducible():
    y = np.repeat(np.arange(4), [10, 20, 5, 1])
    x = np.arange(len(y))
    (xt, yt), (xv, yv) = validation_split(x, y, 0.2, seed=3)
    assert sorted(np.concatenate([xt, xv]).tolist()) == x.tolist()
    assert np.bincount(yv, minlength=4).tolist() == [2, 4, 1, 0]  # a singleton class stays in train
    (_, _), (xv2, _) = validation_split(x, y, 0.2, seed=3)
    assert xv.tolist() == xv2.tolist()
    with pytest.raises(ValueError, match="fraction"):
        validation_split(x, y, 1.0)


def test_grid_search_keeps_the_best_and_the_first_of_ties():
    tuned = grid_search("learning_rate", [1e-3, 3e-3, 1e-2], {1e-3: 0.5, 3e-3: 0.7, 1e-2: 0.7}.get)
    assert tuned.best == 3e-3 and tuned.scores[1e-2] == 0.7
    assert "<- chosen" in tuned.table().splitlines()[2]
    with pytest.raises(ValueError, match="candidates"):
        grid_search("learning_rate", [], float)


def test_accuracy_bands_draw_the_mean_and_the_min_max_band():
    import matplotlib

    matplotlib.use("Agg")
    from fedtl_helpers.teaching import plotting
    ax = plotting.accuracy_bands({"a": [[0.1, 0.5, 0.7], [0.1, 0.3, 0.9]]}, "t")
    (line,) = ax.get_lines()
    np.testing.assert_allclose(line.get_ydata(), [0.1, 0.4, 0.8])
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(0.1) and band.max() == pytest.approx(0.9)
    assert "mean of 2 seeds" in ax.get_legend().get_texts()[0].get_text()
    with pytest.raises(ValueError, match="curves"):
        plotting.accuracy_bands({"a": []}, "t")


def _fake_run(config, dataset):
    """A stand-in for federated training: accuracy peaks at each arm's own best rate."""
    from fedtl_helpers.core.history import History

    (_, y_train), (_, y_eval) = dataset
    best = {"head": 1e-2, "full": 1e-3}[config.strategy]
    acc = 0.9 - abs(np.log10(config.learning_rate / best)) * 0.2 + 0.01 * config.seed
    if config.server_lr != 1.0:
        acc -= 0.1
    # the tuning must see a validation split of the training data, never the test set
    assert len(y_eval) in (20, 50) and len(y_train) in (80, 100)
    return History(rows=[{"round": r, "test_accuracy": acc} for r in range(config.rounds + 1)])


def _load(seed):
    rng = np.random.default_rng(seed)
    return ((rng.normal(size=(100, 2)), np.tile(np.arange(10), 10)),
            (rng.normal(size=(50, 2)), np.tile(np.arange(10), 5)))


def test_compare_arms_tunes_each_arm_on_validation_and_runs_every_seed():
    from fedtl_helpers.core.config import ExperimentConfig
    from fedtl_helpers.workflow.tuning import compare_arms

    arms = {s: ExperimentConfig(strategy=s, rounds=3, n_train=100, n_test=50) for s in ("head", "full")}
    comp = compare_arms(arms, [1e-3, 1e-2], seeds=[0, 1, 2], load=_load, run=_fake_run, log=lambda s: None)
    assert {a: t.best for a, t in comp.tuned.items()} == {"head": 1e-2, "full": 1e-3}
    assert comp.finals("full") == pytest.approx([0.9, 0.91, 0.92])
    summary = comp.summary()
    assert summary["head"] == pytest.approx({"learning_rate": 1e-2, "mean": 0.91, "min": 0.9, "max": 0.92})

    # settings that interact are tuned together: a tuple of fields, tuples of values
    pair = compare_arms({"full": arms["full"]}, [(1e-3, 2.0), (1e-3, 1.0), (1e-2, 1.0)],
                        field=("learning_rate", "server_lr"), seeds=[0], load=_load, run=_fake_run,
                        log=lambda s: None)
    assert pair.tuned["full"].best == (1e-3, 1.0)
    assert pair.summary()["full"]["server_lr"] == 1.0
    with pytest.raises(ValueError, match="one per field"):
        compare_arms({"full": arms["full"]}, [1e-3], field=("learning_rate", "server_lr"), seeds=[0],
                     load=_load, run=_fake_run, log=lambda s: None)
    with pytest.raises(ValueError, match="seeds"):
        compare_arms(arms, [1e-3], seeds=[], load=_load, run=_fake_run)


def test_a_choice_on_the_grids_edge_is_named():
    from fedtl_helpers.workflow.tuning import Tuned

    pair = Tuned(("learning_rate", "server_lr"), (1e-2, 2.0),
                 {(1e-2, 1.0): 0.5, (1e-2, 2.0): 0.8, (1e-2, 4.0): 0.6, (3e-2, 2.0): 0.7})
    assert pair.at_edge() == ["learning_rate"]  # 1e-2 is the smallest rate tried; 2.0 is inside
    assert "edge for learning_rate" in pair.table()
    assert grid_search("lr", [1, 2, 3], {1: 0, 2: 1, 3: 0}.get).at_edge() == []
    assert grid_search("lr", [1, 2, 3], {1: 0, 2: 1, 3: 2}.get).at_edge() == ["lr"]
    assert grid_search("lr", [1], {1: 0}.get).at_edge() == []


def test_widening_in_two_dimensions_grows_the_box_until_the_choice_is_interior():
    from fedtl_helpers.workflow.tuning import widen_box

    clients, servers = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1), (0.25, 0.5, 1.0, 2.0, 4.0)
    calls = []

    def score(point):  # one peak at (3e-2, 0.5): up one client step and down one server step
        calls.append(point)
        lr, slr = point
        return -abs(np.log10(lr / 3e-2)) - abs(np.log2(slr / 0.5))

    best, scores, edge = widen_box([clients, servers], (3e-3, 1.0), score)
    assert best == (3e-2, 0.5) and edge == []
    # the 3 x 3 box, then a column of client rates (3e-2) and a row of server rates (0.25) at
    # once, then one more column (1e-1) until 3e-2 is interior: 5 x 4 points, each scored once
    assert len(calls) == len(set(calls)) == len(scores) == 5 * 4
    assert {p[0] for p in scores} == set(clients) and {p[1] for p in scores} == {0.25, 0.5, 1.0, 2.0}
    # a peak beyond the grid stops on its end and names the dimension
    best, _, edge = widen_box([clients, servers], (3e-3, 1.0), lambda p: p[0] - abs(p[1] - 1.0))
    assert best == (1e-1, 1.0) and edge == [0]
    with pytest.raises(ValueError, match=r"grids\[1\].*start\[1\]=3.0"):
        widen_box([clients, servers], (3e-3, 3.0), score)


def test_compare_arms_widens_each_arm_on_one_grid_over_the_run_horizon():
    from fedtl_helpers.core.config import ExperimentConfig
    from fedtl_helpers.workflow.tuning import compare_arms

    horizons = []

    def run(config, dataset):
        horizons.append(config.rounds)
        return _fake_run(config, dataset)

    arms = {s: ExperimentConfig(strategy=s, rounds=4, n_train=100, n_test=50) for s in ("head", "full")}
    grid = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
    comp = compare_arms(arms, grid, start=3e-4, seeds=[0], load=_load, run=run, log=lambda s: None)
    assert {a: t.best for a, t in comp.tuned.items()} == {"head": 1e-2, "full": 1e-3}
    assert list(comp.tuned["head"].scores) == [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]  # widened to 3e-2
    assert list(comp.tuned["full"].scores) == [1e-4, 3e-4, 1e-3, 3e-3]
    assert not comp.tuned["head"].at_edge() and not comp.tuned["full"].at_edge()
    assert set(horizons) == {4}  # trials as long as the runs they choose for
    pair = compare_arms({"full": arms["full"]}, ((1e-3, 1e-2), (1.0, 2.0, 4.0)), start=(1e-3, 2.0),
                        field=("learning_rate", "server_lr"), seeds=[0], load=_load, run=_fake_run,
                        log=lambda s: None)
    assert pair.tuned["full"].best == (1e-3, 1.0)


def test_resumable_runs_continue_a_killed_comparison_where_it_stopped(tmp_path):
    """A comparison started again after a kill: the finished run is read back, the one cut
    off after round 1 continues from its checkpoint, and both equal an uninterrupted run."""
    import fedtl_helpers as fl
    from fedtl_helpers.workflow.tuning import ResumableRuns

    config = fl.ExperimentConfig(strategy="full", rounds=2, n_train=100, n_test=50, num_clients=2)
    data = fl.load_dataset("shapes", n_train=100, n_test=50, seed=0)
    plain = fl.run_federated(config, dataset=data, progress=False).history.column("test_accuracy")
    runs = ResumableRuns(tmp_path)
    assert runs(config, data).column("test_accuracy") == plain and runs.resumed == 0
    assert runs(config, data).column("test_accuracy") == plain and runs.resumed == 1  # read back
    other = ((data[0][0][:80], data[0][1][:80]), data[1])
    assert runs.folder(config, other) != runs.folder(config, data)  # other arrays: another run
    # a run killed after round 1: its checkpoint is where the 2-round run of these arrays looks
    killed = ResumableRuns(tmp_path / "killed")
    fl.run_federated(dataclasses.replace(config, rounds=1), dataset=data, progress=False,
                     checkpoint_dir=killed.folder(config, data))
    history = killed(config, data)
    assert history.column("test_accuracy") == plain and history.meta["resumed_after_rounds"] == [1]
    light = ResumableRuns(tmp_path / "light", keep_weights=False)  # only the history is kept
    assert light(config, data).column("test_accuracy") == plain
    assert sorted(p.name for p in light.folder(config, data).iterdir()) == ["history.csv", "history.json"]
    assert light(config, data).column("test_accuracy") == plain and light.resumed == 1

"""Chapter 06 reads the local-optimizer record through ``teaching.local_optimizer``."""

import pytest

from fedtl_helpers.teaching import local_optimizer


def _record(adam, sgd, momentum, n_test=1000):
    curves = {"adam": adam, "sgd": sgd, "sgd_momentum": momentum}
    arms = {a: {"lr": lr, "at_grid_edge": edge, "acc_round1": 0.5,
                "tuning_scores": {"0.001": 0.8, "0.003": 0.9, "0.01": 0.85}}
            for a, lr, edge in (("adam", 0.003, False), ("sgd", 0.1, False), ("sgd_momentum", 0.3, True))}
    return {"arms": arms, "curves": curves, "last": 2, "grid": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3],
            "rounds": 3, "seeds": [0, 1, 2],
            "configs": {a: {"n_test": n_test} for a in arms}}


def test_verdicts_follow_from_the_curves_by_the_books_rule():
    # per seed, the mean of the last 2 rounds: Adam 0.90, 0.91, 0.92; SGD 10 points lower in every
    # seed; SGD+momentum 0.5 point lower, which is below the 2-point seed spread
    adam = [[0.1, 0.9, 0.9], [0.1, 0.91, 0.91], [0.1, 0.92, 0.92]]
    sgd = [[0.1, 0.8, 0.8], [0.1, 0.81, 0.81], [0.1, 0.82, 0.82]]
    momentum = [[0.1, 0.895, 0.895], [0.1, 0.905, 0.905], [0.1, 0.915, 0.915]]
    reading = local_optimizer.read(_record(adam, sgd, momentum))
    v = reading.verdicts["sgd"]
    assert v.shown and v.difference_points == pytest.approx(-10.0)
    assert v.sentence.startswith("local Adam is above local SGD in every seed, by 10.0 points")
    m = reading.verdicts["sgd_momentum"]
    assert not m.shown and m.difference_points == pytest.approx(-0.5)
    assert m.mdd_points == pytest.approx(2.0)  # the seeds' spread beats the 1,000-image floor (1.4)
    assert m.sentence.startswith("No difference shown between local SGD with momentum and local Adam")
    assert reading.edges() == ["sgd_momentum"]
    note = reading.edge_note()
    assert note.startswith("The rate chosen for local SGD with momentum is on the shared grid")
    assert reading.decision().startswith("local SGD with momentum is not shown to be worse than local Adam")
    g = reading.glue_values()
    assert g["opt_adam_final"] == pytest.approx(0.91) and g["opt_sgd_lr"] == 0.1
    assert g["opt_sgd_minus_adam"] == pytest.approx(-10.0) and g["opt_n_test"] == 1000
    assert g["opt_sgd_adam_lead_min"] == pytest.approx(10.0)  # Adam's lead in its closest seed
    assert list(reading.curves()) == ["local Adam, lr 0.003", "local SGD, lr 0.1",
                                      "local SGD with momentum, lr 0.3"]
    rows = reading.table().splitlines()
    assert len(rows) == 4 and "0.003:0.900" in rows[1] and "0.810..0.820" not in rows[1]
    assert "0.800..0.820" in rows[2]


def test_a_record_of_another_benchmark_is_refused_by_name():
    with pytest.raises(ValueError, match="not a bench_optimizer record.*sgd_momentum"):
        local_optimizer.read({"arms": {"adam": {}, "sgd": {}}, "curves": {}, "configs": {}, "last": 1,
                              "rounds": 1, "seeds": [0]})


def test_adam_stays_the_default_only_when_it_beats_both_sgd_arms():
    adam = [[0.1, 0.9, 0.9], [0.1, 0.91, 0.91], [0.1, 0.92, 0.92]]
    lower = [[0.1, a - 0.1, a - 0.1] for a in (0.9, 0.91, 0.92)]
    reading = local_optimizer.read(_record(adam, lower, lower))
    assert reading.decision().startswith("local Adam is above both SGD variants")

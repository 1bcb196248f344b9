import numpy as np
import pytest

from fedtl_helpers.federation.evaluation import confusion_matrix, local_holdout, spread


def test_local_holdout_disjoint_and_within_client():
    parts = [np.arange(0, 10), np.arange(10, 30)]
    train, held = local_holdout(parts, 0.2, seed=0)
    for p, t, h in zip(parts, train, held):
        assert set(t).isdisjoint(h) and set(t) | set(h) == set(p)
    assert [len(h) for h in held] == [2, 4]
    t2, h2 = local_holdout(parts, 0.2, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(held, h2))


def test_local_holdout_errors():
    with pytest.raises(ValueError, match="fraction=1.5"):
        local_holdout([np.arange(10)], 1.5)
    with pytest.raises(ValueError, match="client 1 has 1 examples"):
        local_holdout([np.arange(10), np.array([10])], 0.2)


def test_confusion_matrix_and_spread():
    cm = confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]), 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [0, 0, 1]])
    s = spread(np.array([0.5, 0.7, 0.9]))
    assert s["mean"] == pytest.approx(0.7) and s["worst"] == 0.5 and s["best"] == 0.9

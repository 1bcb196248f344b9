"""Fair comparisons' tools: the validation split, the grid search, the seed-band plot."""

import numpy as np
import pytest

from fedtl_helpers.tuning import grid_search, validation_split


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
    from fedtl_helpers import plotting

    ax = plotting.accuracy_bands({"a": [[0.1, 0.5, 0.7], [0.1, 0.3, 0.9]]}, "t")
    (line,) = ax.get_lines()
    np.testing.assert_allclose(line.get_ydata(), [0.1, 0.4, 0.8])
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(0.1) and band.max() == pytest.approx(0.9)
    assert "mean of 2 seeds" in ax.get_legend().get_texts()[0].get_text()
    with pytest.raises(ValueError, match="curves"):
        plotting.accuracy_bands({"a": []}, "t")

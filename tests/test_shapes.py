"""Tests for the embedded offline dataset (fedtl_helpers.inputs.shapes); numpy only, no training."""

import numpy as np
import pytest

from fedtl_helpers.inputs import shapes
from fedtl_helpers.inputs.shapes import SOURCE_SHAPES, TARGET_SHAPES, load_shapes


@pytest.fixture(scope="module")
def splits():
    return load_shapes(2_000, 1_000, seed=0)


def _row_hashes(x: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in x.reshape(len(x), -1)}


def test_class_names_are_disjoint_and_sized():
    assert len(TARGET_SHAPES) == 10 and len(set(TARGET_SHAPES)) == 10
    assert len(SOURCE_SHAPES) == 20 and len(set(SOURCE_SHAPES)) == 20
    assert not set(TARGET_SHAPES) & set(SOURCE_SHAPES)


@pytest.mark.parametrize(("task", "k"), [("target", 10), ("source", 20)])
def test_shapes_dtypes_and_label_range(task, k):
    x, y = load_shapes(3 * k + 1, 1, task=task, seed=1)[0]
    assert x.shape == (3 * k + 1, 32, 32, 3) and x.dtype == np.uint8
    assert y.shape == (3 * k + 1,) and y.dtype == np.int64
    assert y.min() == 0 and y.max() == k - 1
    assert x.std() > 20  # not blank or constant


def test_load_shapes_matches_cifar_layout(splits):
    (x_train, y_train), (x_test, y_test) = splits
    assert x_train.shape == (2_000, 32, 32, 3) and x_test.shape == (1_000, 32, 32, 3)
    assert x_train.dtype == x_test.dtype == np.uint8
    assert y_train.dtype == y_test.dtype == np.int64


def test_same_seed_same_bytes_other_seed_differs():
    x1, y1 = load_shapes(40, 1, task="target", seed=7)[0]
    x2, y2 = load_shapes(40, 1, task="target", seed=7)[0]
    x3, _ = load_shapes(40, 1, task="target", seed=8)[0]
    assert x1.tobytes() == x2.tobytes() and np.array_equal(y1, y2)
    assert x1.tobytes() != x3.tobytes()
    (a, _), (b, _) = load_shapes(30, 20, seed=7)
    (c, _), (d, _) = load_shapes(30, 20, seed=7)
    assert a.tobytes() == c.tobytes() and b.tobytes() == d.tobytes()


@pytest.mark.parametrize(
    ("task", "n", "expected"),
    [
        ("target", 103, [10] * 7 + [11] * 3),
        ("source", 45, [2] * 15 + [3] * 5),
        ("target", 7, [0] * 3 + [1] * 7),
    ],
)
def test_classes_are_balanced_and_shuffled(task, n, expected):
    _, y = load_shapes(n, 1, task=task, seed=2)[0]
    counts = np.bincount(y, minlength=len(expected))
    assert sorted(counts.tolist()) == expected
    assert counts[: n % len(expected)].min() == n // len(expected) + 1  # remainder goes first
    if n > 20:
        assert np.any(np.diff(y) < 0)  # shuffled, not grouped by class


def test_train_and_test_share_no_image(splits):
    (x_train, _), (x_test, _) = splits
    train, test = _row_hashes(x_train), _row_hashes(x_test)
    assert len(train) == len(x_train) and len(test) == len(x_test)  # no duplicates inside
    assert not train & test
    # Equal sizes would give identical splits if both came from one stream.
    (a, _), (b, _) = load_shapes(50, 50, seed=3)
    assert not _row_hashes(a) & _row_hashes(b)


@pytest.mark.parametrize("bad", ["cifar10", "", "Target"])
def test_invalid_task_raises_naming_it(bad):
    with pytest.raises(ValueError, match=r"task.*'target', 'source'.*" + repr(bad)):
        load_shapes(10, 1, task=bad)
    with pytest.raises(ValueError, match="task"):
        load_shapes(10, 10, task=bad)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_train": 0}, "n_train"),
        ({"n_test": -3}, "n_test"),
        ({"n_train": 2.5}, "n_train"),
        ({"seed": -1}, "seed"),
    ],
)
def test_invalid_sizes_and_seed_raise_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=rf"{name}.*{kwargs[name]}"):
        load_shapes(**{"n_train": 10, "n_test": 10, **kwargs})


def test_every_shape_is_drawn_inside_the_unit_disc_and_distinct():
    # Shapes share one size convention, so "scale" means the same for every class.
    g = np.linspace(-1.5, 1.5, 151, dtype=np.float32)
    u, v = np.meshgrid(g, g)
    masks = {name: shapes._SDFS[name](u[None], v[None])[0] < 0 for name in TARGET_SHAPES + SOURCE_SHAPES}
    for name, m in masks.items():
        assert m.mean() * 9 > 0.5, name  # area in shape units: clearly non-empty
        assert np.hypot(u, v)[m].max() < 1.3, name
    for names in (TARGET_SHAPES, SOURCE_SHAPES):
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
                assert iou < 0.95, (a, b)


def test_class_is_not_encoded_by_colour(splits):
    (x, y), _ = splits
    class_colour = np.stack([x[y == c].mean(axis=(0, 1, 2)) for c in range(10)])
    # Every class's mean RGB is within a few levels (of 255) of the overall mean.
    assert np.abs(class_colour - x.mean(axis=(0, 1, 2))).max() < 10


def test_nearest_class_mean_on_pixels_is_near_chance(splits):
    (x_train, y_train), (x_test, y_test) = splits
    f = x_train.reshape(len(x_train), -1).astype(np.float32)
    g = x_test.reshape(len(x_test), -1).astype(np.float32)
    mu = np.stack([f[y_train == c].mean(axis=0) for c in range(10)])
    dist = (g**2).sum(1)[:, None] - 2 * g @ mu.T + (mu**2).sum(1)
    accuracy = (dist.argmin(axis=1) == y_test).mean()
    assert accuracy < 0.4  # chance is 0.1; a trivially separable set scores far higher

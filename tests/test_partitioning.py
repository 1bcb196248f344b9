"""Tests for fedtl_helpers.inputs.partitioning: every scheme is a true partition, seeded, and as skewed
as it claims; bad input fails early with a message naming the parameter."""

import numpy as np
import pytest

from fedtl_helpers.inputs.partitioning import SCHEMES, label_skew, partition, partition_stats

# 10 balanced classes of 60, in shuffled order (like a real training set).
LABELS = np.random.default_rng(123).permutation(np.repeat(np.arange(10), 60))
N = len(LABELS)
OPTIONS = {"iid": {}, "strided": {}, "dirichlet": {"alpha": 0.5}, "shards": {}}


def split(scheme, num_clients=6, seed=0, labels=LABELS, **kw):
    return partition(labels, num_clients, scheme, seed=seed, **{**OPTIONS[scheme], **kw})


@pytest.mark.parametrize("scheme", SCHEMES)
def test_is_a_partition(scheme):
    parts = split(scheme)
    assert len(parts) == 6
    for p in parts:
        assert p.dtype == np.int64 and p.ndim == 1
        assert len(p) >= 1
        assert np.all(np.diff(p) > 0)  # sorted, no duplicates within a client
    everything = np.concatenate(parts)
    assert len(everything) == N  # disjoint ...
    np.testing.assert_array_equal(np.sort(everything), np.arange(N))  # ... and covering


@pytest.mark.parametrize("scheme", SCHEMES)
def test_same_seed_same_split(scheme):
    for a, b in zip(split(scheme, seed=7), split(scheme, seed=7), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "shards"])
def test_different_seed_different_split(scheme):
    a, b = split(scheme, seed=1), split(scheme, seed=2)
    assert any(len(x) != len(y) or not np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_partition_does_not_touch_global_random_state():
    np.random.seed(0)
    expected = np.random.rand()
    np.random.seed(0)
    split("dirichlet")
    split("iid")
    assert np.random.rand() == expected


def test_strided_is_the_articles_split_and_ignores_seed():
    for k in (1, 3, 5, 7):
        parts = partition(LABELS[:103], k, "strided", seed=99)
        for i, p in enumerate(parts):
            np.testing.assert_array_equal(p, np.arange(103)[i::k])


def test_iid_sizes_are_balanced():
    sizes = [len(p) for p in partition(LABELS[:103], 5, "iid")]
    assert sorted(sizes) == [20, 20, 21, 21, 21]


def test_iid_has_little_skew_and_one_client_gets_everything():
    assert label_skew(partition_stats(LABELS, split("iid", num_clients=3))) < 0.15
    (only,) = partition(LABELS, 1, "shards", shards_per_client=3)
    np.testing.assert_array_equal(only, np.arange(N))


def test_dirichlet_skew_grows_as_alpha_falls():
    def mean_skew(alpha):
        return np.mean(
            [
                label_skew(partition_stats(LABELS, split("dirichlet", 10, seed=s, alpha=alpha)))
                for s in range(5)
            ]
        )

    high, mid, low = mean_skew(100.0), mean_skew(1.0), mean_skew(0.1)
    assert high < mid < low
    assert high < 0.15 and low > 0.5


def test_shards_give_at_most_shards_per_client_labels_when_balanced():
    # 10 classes x 60 = 600 examples, 10 clients x 2 shards = 20 shards of 30: one class each.
    for seed in range(3):
        stats = partition_stats(LABELS, split("shards", 10, seed=seed, shards_per_client=2))
        assert ((stats > 0).sum(axis=1) <= 2).all()
        assert (stats.sum(axis=1) == 60).all()
    stats = partition_stats(LABELS, split("shards", 5, shards_per_client=1))
    assert ((stats > 0).sum(axis=1) <= 2).all()  # shard of 120 = exactly two classes


def test_impossible_dirichlet_raises_a_clear_error():
    for seed in range(5):
        with pytest.raises(ValueError, match=r"alpha=0\.0001.*num_clients=3.*increase alpha"):
            partition(np.zeros(3, dtype=int), 3, "dirichlet", alpha=1e-4, seed=seed)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((LABELS, 0), {}, "num_clients=0"),
        ((LABELS, N + 1), {}, f"num_clients={N + 1}.*<= {N}"),
        ((LABELS, 2.0), {}, "num_clients=2.0"),
        ((LABELS, True), {}, "num_clients=True"),
        ((LABELS, 3, "random"), {}, "scheme='random'.*'iid', 'strided', 'dirichlet', 'shards'"),
        ((LABELS, 3, "dirichlet"), {}, "alpha=None.*> 0"),
        ((LABELS, 3, "dirichlet"), {"alpha": 0.0}, "alpha=0.0"),
        ((LABELS, 3, "dirichlet"), {"alpha": -1}, "alpha=-1"),
        ((LABELS, 3, "dirichlet"), {"alpha": float("nan")}, "alpha=nan"),
        ((LABELS, 3, "iid"), {"alpha": 0.5}, "alpha=0.5.*only used by scheme='dirichlet'"),
        ((LABELS, 3, "shards"), {"shards_per_client": 0}, "shards_per_client=0"),
        ((LABELS[:10], 3, "shards"), {"shards_per_client": 4}, "shards_per_client=4.*12 shards"),
        ((LABELS.reshape(-1, 1), 3), {}, r"labels must be a 1-D integer array.*ravel"),
        ((LABELS.astype(float), 3), {}, "labels must be a 1-D integer array"),
    ],
)
def test_bad_input_names_the_parameter(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        partition(*args, **kwargs)


def test_partition_stats_exact():
    labels = np.array([0, 1, 1, 2, 2, 2])
    parts = [np.array([0, 3]), np.array([1, 2, 4]), np.array([5])]
    expected = [[1, 0, 1], [0, 2, 1], [0, 0, 1]]
    np.testing.assert_array_equal(partition_stats(labels, parts), expected)
    np.testing.assert_array_equal(
        partition_stats(labels, parts, num_classes=4), [row + [0] for row in expected]
    )
    assert partition_stats(labels, parts).dtype == np.int64
    with pytest.raises(ValueError, match="num_classes=2"):
        partition_stats(labels, parts, num_classes=2)


def test_label_skew_exact():
    assert label_skew([[5, 5], [5, 5]]) == 0.0
    assert label_skew([[4, 0], [0, 4]]) == 0.5  # global mix (0.5, 0.5); TV of each client 0.5
    assert label_skew([[3, 1], [1, 3], [0, 0]]) == pytest.approx(0.25)  # empty client skipped
    assert label_skew([[3, 0], [0, 1]]) == pytest.approx(0.5)  # mean of 0.25 and 0.75
    with pytest.raises(ValueError, match="stats"):
        label_skew([[0, 0]])

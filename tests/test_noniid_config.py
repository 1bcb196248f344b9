"""The non-IID block of ExperimentConfig: every bad value fails before anything runs."""

import numpy as np
import pytest

from fedtl_helpers.core.config import ExperimentConfig
from fedtl_helpers.inputs.partitioning import partition


@pytest.mark.parametrize("kw, match", [
    (dict(prox_mu=-0.1), "prox_mu=-0.1 is invalid: allowed a finite number >= 0"),
    (dict(prox_mu=float("inf")), "prox_mu=inf"),
    (dict(prox_mu=True), "prox_mu=True"),
    (dict(server_optimizer="adagrad"), "server_optimizer='adagrad' is invalid: allowed one of 'sgd', "
                                       "'momentum', 'adam'"),
    (dict(server_momentum=1.0), r"server_momentum=1.0 is invalid: allowed a number in \[0, 1\)"),
    (dict(server_beta1=-0.1), "server_beta1=-0.1"),
    (dict(server_beta2=1.5), "server_beta2=1.5"),
    (dict(server_tau=0), "server_tau=0 is invalid: allowed a number > 0"),
    (dict(quantity_alpha=0), "quantity_alpha=0 is invalid: allowed a number > 0"),
    (dict(quantity_alpha=0.5, partition="dirichlet", alpha=0.5),
     "quantity_alpha=0.5.*None unless partition='iid'"),
    (dict(partition="dirichlet", alpha=0), "alpha=0 is invalid"),
    (dict(partition="dirichlet", alpha=-1.0), "alpha=-1.0 is invalid"),
    (dict(partition="shards", n_train=100, num_clients=10, shards_per_client=11),
     "shards_per_client=11 is invalid: allowed at most n_train / num_clients = 10"),
])
def test_bad_noniid_fields_fail_with_the_field_name(kw, match):
    with pytest.raises(ValueError, match=match):
        ExperimentConfig(**kw)


def test_good_noniid_fields_pass():
    c = ExperimentConfig(prox_mu=0.01, server_optimizer="adam", server_lr=0.01, quantity_alpha=0.5)
    assert (c.prox_mu, c.server_optimizer, c.quantity_alpha) == (0.01, "adam", 0.5)


def test_quantity_skew_sizes_are_uneven_seeded_and_cover_everything():
    labels = np.arange(2000) % 10
    parts = partition(labels, 10, "iid", quantity_alpha=0.3, seed=1)
    sizes = np.array([len(p) for p in parts])
    assert sizes.sum() == 2000 and sizes.min() >= 1
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(2000))
    assert sizes.max() > 4 * sizes.min()  # skewed; near-equal would be 200 each
    even = [len(p) for p in partition(labels, 10, "iid", seed=1)]
    assert max(even) - min(even) <= 1
    again = partition(labels, 10, "iid", quantity_alpha=0.3, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    # the label mix stays IID-like: large clients hold every class
    big = parts[int(np.argmax(sizes))]
    assert len(np.unique(labels[big])) == 10


def test_partition_rejects_quantity_skew_elsewhere_and_too_many_shards():
    labels = np.arange(50) % 10
    with pytest.raises(ValueError, match="quantity_alpha=0.5 is invalid for scheme='shards'"):
        partition(labels, 5, "shards", quantity_alpha=0.5)
    with pytest.raises(ValueError, match="quantity_alpha=0 is invalid"):
        partition(labels, 5, "iid", quantity_alpha=0)
    too_many = r"shards_per_client=11 is invalid: num_clients \* shards_per_client = 55"
    with pytest.raises(ValueError, match=too_many):
        partition(labels, 5, "shards", shards_per_client=11)

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture(scope="session")
def small_shapes():
    """A small slice of the embedded dataset, shared by the training tests."""
    from fedtl_helpers.data import load_dataset

    return load_dataset("shapes", n_train=1_500, n_test=600, seed=0)

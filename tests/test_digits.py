"""``dataset="digits"``: scikit-learn's real handwritten digits through the course's loader."""

import numpy as np
import pytest

import fedtl_helpers as fl
from fedtl_helpers.core import config as config_module
from fedtl_helpers.inputs import digits
from fedtl_helpers.inputs.data import class_names, describe, load_dataset


@pytest.fixture(scope="module")
def loaded():
    return load_dataset("digits")


def test_format_sizes_and_a_stratified_fixed_split(loaded):
    (x, y), (xt, yt) = loaded
    assert x.shape == (1_297, 32, 32, 3) and xt.shape == (500, 32, 32, 3)
    assert x.dtype == xt.dtype == np.uint8 and y.dtype == yt.dtype == np.int64
    assert np.array_equal(np.bincount(yt), [50] * 10)  # 50 of each digit in the test set
    assert np.bincount(y).min() >= 124  # the rest train: 174-183 of each digit minus 50
    # grey: three equal channels; ink bright (255 = a fully inked 4x4 block) on a dark ground
    assert np.array_equal(x[..., 0], x[..., 1]) and np.array_equal(x[..., 0], x[..., 2])
    assert x.max() == 255 and np.mean(x < 128) > 0.6 and np.mean(x[:, 0, 0]) < 10  # dark corners
    # fixed data: the run's seed does not move the split (like CIFAR-10)
    (x2, _), (xt2, _) = load_dataset("digits", seed=5)
    assert np.array_equal(x, x2) and np.array_equal(xt, xt2)


def test_every_image_is_one_of_sklearns_and_train_and_test_do_not_overlap(loaded):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    (x, y), (xt, yt) = loaded
    ours = {(img[..., 0].tobytes(), lab) for img, lab in zip(np.concatenate([x, xt]),
                                                              np.concatenate([y, yt]), strict=True)}
    theirs = {(img[..., 0].tobytes(), lab)
              for img, lab in zip(digits.upsample(bunch.images), bunch.target, strict=True)}
    assert ours == theirs  # the same images with the same labels, none invented or lost
    train_keys = {img.tobytes() for img in x}
    assert len(train_keys & {img.tobytes() for img in xt}) <= 1  # at most a duplicate image


def test_upsampling_is_the_documented_bilinear_resize():
    flat = np.full((1, 8, 8), 16.0)
    assert np.all(digits.upsample(flat) == 255)
    # The same rule as PIL's (and tf.image.resize's) bilinear resize with half-pixel centres:
    # equal up to rounding to uint8 (0.5).
    from PIL import Image

    counts = np.random.default_rng(0).integers(0, 17, size=(3, 8, 8)).astype(float)
    for c, ours in zip(counts, digits.upsample(counts)[..., 0].astype(float), strict=True):
        pil = Image.fromarray((c * 255 / 16).astype(np.float32), mode="F").resize((32, 32), Image.BILINEAR)
        assert np.abs(ours - np.asarray(pil)).max() <= 0.5


def test_describe_names_origin_resize_and_licence():
    line = describe("digits")
    for word in ("UCI", "scikit-learn", "real", "32x32", "CC BY 4.0", "offline"):
        assert word in line
    assert "; " not in line  # History.table() splits descriptions at "; "
    assert class_names("digits") == tuple("0123456789")


@pytest.mark.parametrize("kwargs, message", [
    ({"n_train": 1_298}, "n_train=1298 is invalid: allowed None or at most 1297"),
    ({"n_test": 501}, "n_test=501 is invalid: allowed None or at most 500"),
])
def test_sizes_beyond_the_fixed_split_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_dataset("digits", **kwargs)


def test_config_refuses_sizes_the_split_cannot_give_before_any_data_is_read():
    with pytest.raises(ValueError, match=r"n_train=5000 is invalid: allowed None \(all\) or an integer "
                                         r"in \[1, 1297\] with dataset='digits'"):
        fl.ExperimentConfig(dataset="digits")  # the shapes-sized default does not fit
    assert config_module.FIXED_SPLIT_SIZES["digits"] == (digits.N_TRAIN, digits.N_TEST)
    fl.ExperimentConfig(dataset="digits", n_train=None, n_test=None)


def test_one_round_on_digits_learns_and_names_the_data():
    """Smoke test: one federated round of full fine-tuning on the real digits.

    Measured after round 1 (seed 0, rate 3e-3, AMD EPYC): 0.692 with oneDNN off (this CPU's
    default), 0.704 with TF_ENABLE_ONEDNN_OPTS=1: 1.2 points apart. Chance is 0.1; the bound 0.4
    leaves 29 points, over twenty times the measured kernel-path spread.
    """
    cfg = fl.ExperimentConfig(dataset="digits", n_train=None, n_test=None, num_clients=5, rounds=1,
                              strategy="full", learning_rate=3e-3)
    history = fl.run_federated(cfg, progress=False).history
    assert "UCI handwritten digits" in history.meta["dataset"]
    assert history.rows[1]["test_accuracy"] > 0.4

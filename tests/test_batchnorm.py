"""BatchNormalization in federated training: moving statistics that keep up with the weights.

With Keras' default momentum (0.99) and ~13 local steps per client and round, the averaged
moving statistics lag the weights for many rounds: a model trained from random weights scored
0.10 in inference mode and 0.20 with recomputed statistics (chapter 04 shows the measurement).
"""

import keras
import numpy as np
import pytest

import fedtl_helpers as fl
from fedtl_helpers.modeling import models


def test_build_model_sets_the_federated_momentum_on_every_batchnorm_layer():
    model = fl.build_model("builtin_cnn", None, seed=0)
    bns = models.batchnorm_layers(model)
    assert len(bns) == 5 and {bn.momentum for bn in bns} == {models.FEDERATED_BN_MOMENTUM}
    keep = fl.build_model("builtin_cnn", None, seed=0, bn_momentum=None)
    assert {bn.momentum for bn in models.batchnorm_layers(keep)} == {0.99}


@pytest.mark.parametrize("bad", [1.0, -0.1, True, "0.9"])
def test_bn_momentum_is_checked(bad):
    with pytest.raises(ValueError, match="bn_momentum"):
        models.set_bn_momentum(fl.build_model("builtin_cnn", None, seed=0), bad)


def test_recalibrate_batchnorm_gives_the_exact_statistics_of_the_data():
    model = fl.build_model("builtin_cnn", None, seed=0)
    x = np.random.default_rng(0).integers(0, 256, (40, 32, 32, 3)).astype("uint8")
    models.recalibrate_batchnorm(model, x, batch_size=16)  # batches of uneven size on purpose
    first = models.batchnorm_layers(model)[0]
    body = model.get_layer("backbone")
    acts = keras.Model(body.input, first.input)(x).numpy().reshape(-1, first.moving_mean.shape[0])
    np.testing.assert_allclose(first.moving_mean.numpy(), acts.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(first.moving_variance.numpy(), acts.var(0), rtol=1e-3, atol=1e-6)
    # Recalibrated, the first layer's output is standardised over the data in inference mode.
    out = keras.Model(body.input, first.output)(x).numpy().reshape(-1, acts.shape[1])
    assert np.abs(out.mean(0)).max() < 1e-3 + np.abs(first.beta.numpy()).max()


def test_pooled_moments_are_the_statistics_of_all_clients_data():
    # client A: one value 0 in its only channel; client B: three values 4 (counts weight them)
    a = [(1, np.array([0.0]), np.array([0.0]))]
    b = [(3, np.array([4.0]), np.array([16.0]))]
    [(mean, var)] = models.pool_batchnorm_moments([a, b])
    np.testing.assert_allclose(mean, [3.0])  # (0 + 3 * 4) / 4
    np.testing.assert_allclose(var, [3.0])  # (0 + 3 * 16) / 4 - 3**2 = 12 - 9
    # two channels, two layers, equal counts: means average, variances add the spread of the means
    c1 = [(2, np.array([1.0, 0.0]), np.array([1.0, 1.0])), (2, np.array([5.0]), np.array([25.0]))]
    c2 = [(2, np.array([3.0, 0.0]), np.array([9.0, 1.0])), (2, np.array([5.0]), np.array([26.0]))]
    (m1, v1), (m2, v2) = models.pool_batchnorm_moments([c1, c2])
    np.testing.assert_allclose(m1, [2.0, 0.0])
    np.testing.assert_allclose(v1, [1.0, 1.0])
    np.testing.assert_allclose(m2, [5.0])
    np.testing.assert_allclose(v2, [0.5])
    with pytest.raises(ValueError, match="^moments must hold one list per client"):
        models.pool_batchnorm_moments([a, a + a])
    with pytest.raises(ValueError, match="^moments must hold one list per client"):
        models.pool_batchnorm_moments([])


def test_federated_recalibration_pools_what_the_clients_compute():
    x = np.random.default_rng(1).integers(0, 256, (60, 32, 32, 3)).astype("uint8")
    one = fl.build_model("builtin_cnn", None, seed=0)
    exact = fl.build_model("builtin_cnn", None, seed=0)
    models.recalibrate_batchnorm_federated(one, [x])  # one client: exact recalibration
    models.recalibrate_batchnorm(exact, x)
    for got, want in zip(one.get_weights(), exact.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # two clients: the first layer sees the raw images, so the pooled statistics are exact there
    two = fl.build_model("builtin_cnn", None, seed=0)
    before = two.get_weights()
    models.recalibrate_batchnorm_federated(two, [x[:20], x[20:]])
    first, first_exact = models.batchnorm_layers(two)[0], models.batchnorm_layers(exact)[0]
    np.testing.assert_allclose(first.moving_mean.numpy(), first_exact.moving_mean.numpy(),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(first.moving_variance.numpy(), first_exact.moving_variance.numpy(),
                               rtol=1e-3, atol=1e-6)
    # only the statistics change: every trainable weight is where it was
    bn_stats = {id(v) for bn in models.batchnorm_layers(two) for v in (bn.moving_mean, bn.moving_variance)}
    for v, w in zip(two.weights, before):
        if id(v) not in bn_stats:
            np.testing.assert_array_equal(v.numpy(), w)


def test_a_frozen_backbone_keeps_its_statistics():
    x = np.random.default_rng(2).integers(0, 256, (20, 32, 32, 3)).astype("uint8")
    model = fl.build_model("builtin_cnn", "builtin", seed=0)
    fl.set_strategy(model, "builtin_cnn", "head")
    before = [bn.moving_mean.numpy().copy() for bn in models.batchnorm_layers(model)]
    models.recalibrate_batchnorm_federated(model, [x, x])
    for bn, b in zip(models.batchnorm_layers(model), before):
        np.testing.assert_array_equal(bn.moving_mean.numpy(), b)


@pytest.mark.parametrize(("changes", "message"), [
    ({"bn_recalibration": "yes"}, r"bn_recalibration='yes' is invalid: allowed True or False"),
    ({"bn_recalibration": True, "backbone": "resnet50", "weights": None},
     r"bn_recalibration=True is invalid: allowed False with backbone='resnet50'"),
])
def test_bn_recalibration_is_checked(changes, message):
    with pytest.raises(ValueError, match=message):
        fl.ExperimentConfig(**changes)


def test_paths_that_cannot_recalibrate_refuse_it():
    from fedtl_helpers.federation import stages

    config = fl.ExperimentConfig(bn_recalibration=True, randomness="secure")
    assert any(m.startswith("bn_recalibration=True is not supported by the Flower deployment")
               for m in stages.refusals(config, stages.DEPLOYMENT))
    assert any(m.startswith("bn_recalibration=True is not supported by FedBN")
               for m in stages.refusals(config, "FedBN"))
    assert stages.refusals(config, "simulation") == []


def test_random_init_is_evaluated_with_statistics_that_describe_its_weights():
    """Issue 28's criterion on a smaller, faster job (5 IID clients x 200 images, 5 rounds, full
    fine-tuning from random weights; the benchmark bench_batchnorm.py runs 5 x 400 on 3 seeds):
    with ``bn_recalibration`` the accuracy the run reports is within 3 points of the same weights
    with statistics recomputed on all training images, while the moving statistics alone are not.

    Tolerances, measured on two kernel paths (seed 0, 1,000 test images, AMD EPYC, 12-06):
    TensorFlow's default kernels (oneDNN off): federated 0.161, exact 0.161, moving 0.103;
    ``TF_ENABLE_ONEDNN_OPTS=1``: federated 0.166, exact 0.165, moving 0.102. So federated minus
    exact moved by at most 1 image (0.1 points) against the 3-point bound, exact by 4 images
    between the paths (0.161 / 0.165) against its 0.14 floor, and the moving statistics' shortfall
    was 5.8 / 6.3 points against the 3 points asserted: each margin (2.9, 2.1 and 2.8 points) is
    at least 5 times the change measured between the paths (0.1, 0.4 and 0.5 points).
    """
    config = fl.ExperimentConfig(num_clients=5, n_train=1000, n_test=1000, rounds=5, strategy="full",
                                 weights=None, bn_recalibration=True, seed=0)
    sim = fl.Simulation(config)
    result = fl.run_federated(config, simulation=sim, progress=False)
    losses = result.history.column("train_loss")[1:]
    assert losses[-1] < losses[0]  # it learns
    federated = result.history.final_accuracy
    sim.model.set_weights(result.weights)  # the global weights keep their moving statistics
    moving = sim.trainer.evaluate(sim.test_inputs, sim.y_test)["accuracy"]
    models.recalibrate_batchnorm(sim.model, sim.x_train)
    exact = sim.trainer.evaluate(sim.test_inputs, sim.y_test)["accuracy"]
    assert abs(federated - exact) <= 0.03, (federated, exact)
    assert exact >= 0.14  # chance is 0.10: the weights have learnt something
    # the case recalibration is for: the moving statistics understate it by more than 3 points
    assert exact - moving > 0.03, (moving, exact)

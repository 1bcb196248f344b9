import numpy as np
import pytest

from fedtl_helpers.core.config import ExperimentConfig
from fedtl_helpers.federation.server import run_federated
from fedtl_helpers.transforms.server_opt import ServerAdam, ServerMomentum, ServerSGD, make_server_optimizer

W = [np.array([1.0, 2.0], np.float32), np.array([5.0], np.float32)]
MASK = [True, False]  # the second tensor is frozen: the aggregate holds only the first


def test_momentum_accumulates_by_hand():
    opt = ServerMomentum(lr=1.0, momentum=0.5)
    w1 = opt.step(W, MASK, [np.array([1.0, -1.0], np.float32)])
    np.testing.assert_allclose(w1[0], [2.0, 1.0])  # v = [1, -1]
    w2 = opt.step(w1, MASK, [np.array([1.0, 1.0], np.float32)])
    np.testing.assert_allclose(w2[0], [3.5, 1.5])  # v = 0.5*[1, -1] + [1, 1] = [1.5, 0.5]
    assert w2[1] is W[1] and w2[0].dtype == np.float32


def test_adam_by_hand_first_step_moves_about_lr_per_coordinate():
    opt = ServerAdam(lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    w1 = opt.step(W, MASK, [np.array([4.0, -0.5], np.float32)])
    # m = 0.1*agg, v = 0.01*agg^2: step = lr * 0.1*agg / (0.1*|agg| + tau)
    expected = [1.0 + 0.1 * 0.4 / (0.4 + 1e-3), 2.0 - 0.1 * 0.05 / (0.05 + 1e-3)]
    np.testing.assert_allclose(w1[0], expected, rtol=1e-5)


def test_state_round_trip_continues_exactly():
    for make in (lambda: ServerMomentum(0.5, 0.9), lambda: ServerAdam(0.1)):
        a, b = make(), make()
        agg = [np.array([0.3, -0.2], np.float32)]
        w = a.step(W, MASK, agg)
        b.load_state(a.state())
        np.testing.assert_array_equal(a.step(w, MASK, agg)[0], b.step(w, MASK, agg)[0])
        fresh = make()  # without the saved state the second step differs: the state matters
        assert not np.array_equal(fresh.step(w, MASK, agg)[0], a.step(w, MASK, agg)[0])


def test_load_state_rejects_another_optimisers_arrays():
    with pytest.raises(ValueError, match="ServerMomentum cannot load state array 'm/0'"):
        ServerMomentum().load_state({"m/0": np.zeros(2)})
    with pytest.raises(ValueError, match="ServerSGD has no state"):
        ServerSGD().load_state({"v/0": np.zeros(2)})


def test_factory_takes_plain_arguments_and_build_stages_follows_config():
    from fedtl_helpers.federation.stages import build_stages

    assert isinstance(make_server_optimizer(), ServerSGD)
    m = make_server_optimizer("momentum", 1.0, momentum=0.7)
    assert isinstance(m, ServerMomentum) and m.momentum == 0.7
    with pytest.raises(ValueError, match="name='nesterov' is invalid: allowed 'sgd', 'momentum' or 'adam'"):
        make_server_optimizer("nesterov")
    assert isinstance(build_stages(ExperimentConfig()).make_server_optimizer(), ServerSGD)
    config = ExperimentConfig(server_optimizer="momentum", server_momentum=0.7)
    m = build_stages(config).make_server_optimizer()
    assert isinstance(m, ServerMomentum) and m.momentum == 0.7
    a = build_stages(ExperimentConfig(server_optimizer="adam", server_lr=0.01,
                                      server_tau=0.1)).make_server_optimizer()
    assert isinstance(a, ServerAdam) and (a.lr, a.tau) == (0.01, 0.1)


@pytest.mark.parametrize("opt", [dict(server_optimizer="momentum"),
                                 dict(server_optimizer="adam", server_lr=0.03),
                                 dict(prox_mu=0.1)])
def test_resume_is_bit_identical_with_stateful_server_optimisers(small_shapes, tmp_path, opt):
    def cfg(rounds):
        return ExperimentConfig(num_clients=3, rounds=rounds, n_train=1_500, n_test=600, strategy="head",
                                partition="dirichlet", alpha=0.3, **opt)

    full = run_federated(cfg(3), dataset=small_shapes, progress=False)
    run_federated(cfg(2), dataset=small_shapes, progress=False, checkpoint_dir=tmp_path)
    resumed = run_federated(cfg(3), dataset=small_shapes, progress=False, checkpoint_dir=tmp_path,
                            resume=True)
    for a, b in zip(full.weights, resumed.weights):
        np.testing.assert_array_equal(a, b)
    plain = run_federated(ExperimentConfig(num_clients=3, rounds=3, n_train=1_500, n_test=600,
                                           strategy="head", partition="dirichlet", alpha=0.3),
                          dataset=small_shapes, progress=False)
    assert any(not np.allclose(a, b) for a, b in zip(full.weights, plain.weights))  # not plain FedAvg

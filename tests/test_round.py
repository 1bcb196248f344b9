"""The round's parts without training: random streams, stages built from the config, the state."""

import numpy as np
import pytest

from fedtl_helpers.core import randomness
from fedtl_helpers.core.config import ExperimentConfig
from fedtl_helpers.core.history import History
from fedtl_helpers.core.storage import NonFiniteError
from fedtl_helpers.federation.round import (
    ClientMessage,
    RoundStreams,
    ServerState,
    broadcast,
    initial_state,
    run_round,
    unpack,
)
from fedtl_helpers.federation.stages import DEPLOYMENT, build_stages, fixed_sample, refusals
from fedtl_helpers.transforms import compression, privacy
from fedtl_helpers.transforms.server_opt import ServerMomentum

A = [np.array([1.0, 2.0], np.float32)]
B = [np.array([3.0, 4.0], np.float32)]
C = [np.array([-50.0, 9.0], np.float32)]


def test_streams_are_the_books_seeds():
    """Book numbers depend on these exact streams (one per purpose, ``randomness``); a change
    must be deliberate."""
    s = RoundStreams(7, 3)
    assert s.sampling().random() == randomness.generator("simulation", 7, "sampling", 3).random()
    assert s.shuffle(4) == randomness.entropy("simulation", 7, "shuffle", 3, 4)
    assert s.uplink(4).random() == randomness.generator("simulation", 7, "rounding", 3, 4).random()
    assert s.noise().random() == randomness.generator("simulation", 7, "noise", 3).random()
    secure = RoundStreams(7, 3, "secure")
    assert secure.shuffle(4) == s.shuffle(4)  # protects nothing: stays seeded
    assert secure.noise().random() != s.noise().random()  # the OS's, not the seed's
    assert fixed_sample(RoundStreams(1, 3).sampling(), 20, 5) == build_stages(
        ExperimentConfig(num_clients=20, client_fraction=0.25, seed=1)).sample(RoundStreams(1, 3).sampling())
    poisson = build_stages(ExperimentConfig(num_clients=20, client_fraction=0.3, client_sampling="poisson",
                                            dp_clip=1.0, aggregator="mean", seed=2))
    for rnd in range(1, 6):
        want = privacy.poisson_sample(RoundStreams(2, rnd).sampling(), 20, 0.3)
        assert poisson.sample(RoundStreams(2, rnd).sampling()) == want


@pytest.mark.parametrize("kw,want", [
    (dict(), [2.5, 3.5]),  # FedAvg weighted by n_k = 1, 3 (the style guide's example)
    (dict(aggregator="mean"), [2.0, 3.0]),
    (dict(aggregator="median", num_clients=3), [1.0, 4.0]),
])
def test_aggregate_stage_follows_the_config(kw, want):
    stages = build_stages(ExperimentConfig(**kw))
    deltas = [A, B] if "median" not in kw.values() else [A, B, C]
    got = stages.aggregate(deltas, [1, 3, 1][:len(deltas)], A, RoundStreams(0, 1))
    np.testing.assert_allclose(got[0], want, atol=1e-4)
    empty = stages.aggregate([], [], A, RoundStreams(0, 1))  # nobody sampled
    np.testing.assert_array_equal(empty[0], [0.0, 0.0])


def test_secure_stage_masks_sums_and_lets_a_client_refuse_its_nan_update():
    """In process, secure aggregation is a stage over the clients' messages: the server gets
    only the weighted mean (a ``Summed``), as from the deployment's SecAgg+."""
    stages = build_stages(ExperimentConfig(num_clients=3, secure_aggregation=True, secagg_clip=8.0))
    nan = [np.array([np.nan, 1.0], np.float32)]
    msgs = [ClientMessage(k, compression.encode_dense(u), n, float(k))
            for k, (u, n) in enumerate([(A, 1), (B, 3), (nan, 5)])]
    got = stages.secure(msgs, RoundStreams(0, 1))
    # FedAvg of [1, 2] (n=1) and [3, 4] (n=3) in 32-bit fixed point over [-8, 8]: two values each
    # within half a step (8 / 2**31) over their weight 4/9 (n=5 refused): off by < 8.4e-9
    np.testing.assert_allclose(got.mean[0], [2.5, 3.5], atol=1e-8)
    assert (got.clients, got.dropped, got.received) == ([0, 1], [2], [0, 1, 2])  # 2 refused, a dropout
    assert (got.num_examples, got.train_losses) == ([1, 3], [0.0, 1.0])
    assert got.bytes_up > 2 * compression.dense_nbytes(A) and got.bytes_down > 0  # keys, shares
    with pytest.raises(NonFiniteError, match="every client's update"):
        stages.secure([msgs[2], ClientMessage(1, compression.encode_dense(nan), 1, 0.0)], RoundStreams(0, 1))
    assert build_stages(ExperimentConfig()).secure is None


def test_dp_stages_clip_on_the_client_and_add_seeded_noise_on_the_server():
    cfg = ExperimentConfig(num_clients=4, dp_clip=1.0, aggregator="mean", client_fraction=0.5)
    stages = build_stages(cfg)
    uplink = stages.make_uplink()
    sent = stages.client.transform(0, B, uplink, RoundStreams(0, 1))  # |B| = 5 -> clipped to 1
    np.testing.assert_allclose(compression.decode(sent)[0], [0.6, 0.8], rtol=1e-6)
    agg = stages.aggregate([compression.decode(sent)], [1], A, RoundStreams(5, 2))
    want = privacy.noisy_mean([compression.decode(sent)], A, 1.0, 1.0, 2.0, RoundStreams(5, 2).noise())
    np.testing.assert_array_equal(agg[0], want[0])
    assert stages.privacy_columns(3) == {"epsilon": privacy.dp_epsilon(1.0, 0.5, 3, 1e-5, sampling="fixed",
                                                                      num_clients=4)}
    assert build_stages(ExperimentConfig()).privacy_columns(3) == {}


class FakeClients:
    """A ``Clients`` runner whose clients send fixed updates: ``run_round`` without training."""

    def __init__(self, mask, updates, loss=1.0):
        self.mask, self.updates, self.loss = mask, updates, loss
        self.variances = [False] * len(mask)
        self.payloads, self.started = [], []

    def start_round(self, rnd):
        self.started.append(rnd)

    def train(self, payloads, streams, uplink):
        self.payloads.append(payloads)
        return [ClientMessage(p.client, compression.encode_dense(self.updates[p.client]), 1 + 2 * p.client,
                              1.0 + p.client) for p in payloads]

    def evaluate(self, weights):
        return {"accuracy": 0.5, "loss": self.loss}

    def state(self):
        return {}

    def load_state(self, arrays):
        pass


def test_run_round_broadcasts_records_bytes_clients_and_state():
    cfg = ExperimentConfig(num_clients=2, server_optimizer="momentum", server_momentum=0.5)
    stages = build_stages(cfg)
    weights = [np.zeros(2, np.float32), np.ones(3, np.float32)]  # the second tensor is frozen
    clients = FakeClients([True, False], {0: A, 1: B})
    state = initial_state(stages, weights, History(), lambda w: {"accuracy": 0.1, "loss": 2.0})
    row = run_round(state, stages, clients)
    np.testing.assert_allclose(state.weights[0], [2.5, 3.5])  # FedAvg (n = 1, 3), momentum: v = agg
    assert state.weights[1] is weights[1] and state.round == 1 and state.seen == {0, 1}
    dense = compression.dense_nbytes
    got = [(p.client, p.trained_only, len(p.arrays)) for p in clients.payloads[0]]
    assert got == [(0, False, 2), (1, False, 2)]
    assert row["bytes_up"] == 2 * dense(A)
    assert row["bytes_down"] == 2 * dense(weights)  # new clients download everything once
    assert (row["clients"], row["train_loss"], row["test_accuracy"]) == ([0, 1], 1.5, 0.5)  # mean loss
    assert isinstance(state.server_opt, ServerMomentum)
    np.testing.assert_allclose(state.arrays()["server_opt/v/0"], [2.5, 3.5])
    row = run_round(state, stages, clients)  # round 2: both hold the frozen tensor
    assert all(p.trained_only and len(p.arrays) == 1 for p in clients.payloads[1])
    np.testing.assert_array_equal(clients.payloads[1][0].arrays[0], [2.5, 3.5])  # the new weights
    assert row["bytes_down"] == 2 * dense(A) and clients.started == [1, 2]
    assert [r["round"] for r in state.history.rows] == [0, 1, 2]


def test_unpack_inverts_the_broadcasts_split():
    weights = [np.full(2, float(i), np.float32) for i in range(4)]
    mask = [True, False, True, False]
    (full,), (part,) = broadcast(weights, mask, [3], set()), broadcast(weights, mask, [3], {3})
    assert full.nbytes == compression.dense_nbytes(weights) and part.nbytes == full.nbytes // 2
    back = unpack(part.arrays, mask, [w for w, m in zip(weights, mask) if not m])
    assert [float(w[0]) for w in back] == [0.0, 1.0, 2.0, 3.0]


def test_run_round_stops_a_diverged_round_before_recording_it():
    stages = build_stages(ExperimentConfig(num_clients=2))
    state = initial_state(stages, [np.zeros(2, np.float32)], History(),
                          lambda w: {"accuracy": 0.1, "loss": 2.0})
    huge = [np.full(2, 3e38, np.float32)]  # finite updates whose mean overflows float32 once added
    state.weights = huge
    with pytest.raises(NonFiniteError, match="round 1: 1 of 1 weight tensors"):
        run_round(state, stages, FakeClients([True], {0: huge, 1: huge}))
    state.weights = [np.zeros(2, np.float32)]
    with pytest.raises(NonFiniteError, match=r"round 1: the test loss \(nan\)"):
        run_round(state, stages, FakeClients([True], {0: A, 1: B}, loss=float("nan")))
    assert state.round == 0 and len(state.history.rows) == 1  # nothing recorded
    with pytest.raises(NonFiniteError, match=r"round 1: every client's update \(2\) was NaN or infinite"):
        run_round(state, stages, FakeClients([True], {0: [np.array([np.nan, 0], np.float32)],
                                                       1: [np.array([np.inf, 0], np.float32)]}))
    row = run_round(state, stages, FakeClients([True], {0: A, 1: [np.array([np.inf, 0], np.float32)]}))
    assert row["dropped"] == [1] and row["clients"] == [0, 1]  # dropped, the round went on with 0
    np.testing.assert_array_equal(state.weights[0], A[0])  # the mean of what remained: client 0's


def test_state_checkpoint_round_trip_and_config_check(tmp_path):
    cfg = ExperimentConfig(compression="topk", sparsity=0.5, server_optimizer="adam", server_lr=0.01)
    stages = build_stages(cfg)
    state = ServerState([np.arange(4, dtype=np.float32)], stages.make_server_optimizer(),
                        stages.make_uplink(), History(), {1}, 0)
    stages.client.transform(1, [np.array([3.0, 1.0, 0.5, 0.0], np.float32)], state.uplink, RoundStreams(0, 1))
    state.weights = state.server_opt.step(state.weights, [True], [np.ones(4, np.float32)])
    state.round = 1
    state.save(tmp_path, cfg.to_dict())
    back = ServerState.load(tmp_path, build_stages(cfg), cfg.to_dict())
    assert (back.round, back.seen) == (1, {1})
    np.testing.assert_array_equal(back.weights[0], state.weights[0])
    assert back.arrays().keys() == state.arrays().keys() and len(back.arrays()) == 3  # residual, m, v
    for k, v in state.arrays().items():
        np.testing.assert_array_equal(back.arrays()[k], v)
    other = ExperimentConfig(compression="topk", sparsity=0.5, seed=1).to_dict()
    with pytest.raises(ValueError, match="different config"):
        ServerState.load(tmp_path, build_stages(cfg), other)
    assert ServerState.load(tmp_path / "none", stages, cfg.to_dict()) is None


def test_only_the_deployment_refuses_and_it_names_field_and_path():
    # SecAgg+ in the deployment needs a threshold of 3 (its masks come from 32-bit seeds)
    cfg = ExperimentConfig(num_clients=3, secure_aggregation=True, randomness="secure")
    assert refusals(cfg, "simulation") == []
    (msg,) = refusals(cfg, DEPLOYMENT)  # a majority of 3 is 2
    assert msg.startswith("secure_aggregation=True is not supported by the Flower deployment with a "
                          "threshold of 2 (3 clients per round)")
    for ok in (dict(num_clients=3, secagg_threshold=3), dict(num_clients=4)):
        assert refusals(ExperimentConfig(secure_aggregation=True, randomness="secure", **ok),
                        DEPLOYMENT) == []
    assert refusals(ExperimentConfig(aggregator="mean", dp_clip=1.0, randomness="secure"), DEPLOYMENT) == []
    (msg,) = refusals(ExperimentConfig(), DEPLOYMENT)  # seeded noise and sampling on real clients
    assert msg.startswith("ExperimentConfig.randomness='simulation' is invalid on the Flower deployment")


def test_in_process_clients_refuse_a_checkpoint_with_client_state():
    """A FedPer checkpoint (personal tensors under ``clients/``) cannot resume a plain run."""
    from fedtl_helpers.federation.simulation import InProcessClients

    with pytest.raises(ValueError, match=r"in-process clients keep no state.*\['0/0'\]"):
        InProcessClients.load_state(None, {"0/0": np.zeros(2)})


def test_the_round_clamps_batchnorm_variances_that_an_aggregate_made_negative():
    """DP noise on the mean update made BatchNorm moving variances negative: the model then
    evaluated to NaN with TensorFlow's kernels and to a number with oneDNN's, so the same test
    passed on one CPU and failed on another. The round clamps them at 0 (post-processing)."""
    import numpy as np

    from fedtl_helpers.federation.round import nonnegative_variances

    w = [np.array([-0.5, 0.2]), np.array([-1.0, 3.0])]
    out = nonnegative_variances(w, [True, False])
    assert out[0].tolist() == [0.0, 0.2] and out[1].tolist() == [-1.0, 3.0]  # only the variance
    assert w[0].tolist() == [-0.5, 0.2]  # a new list: the input is not changed

"""Secure aggregation in the deployment: Flower's SecAgg+ driven by the course's round.

Chapter: "From simulation to deployment". The ServerApp's ``main`` and the ClientApp's
``train`` (with Flower's ``secaggplus_mod``) run here in process, every message copied as the
network would (``LossyGrid``), so a node can vanish between the protocol's stages exactly as
the server sees a killed node: no reply. ``test_secagg_over_real_flower_processes`` runs
SecAgg+ once end to end over real SuperLink and SuperNode processes.
"""

import copy
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from fedtl_helpers.core import randomness, storage
from fedtl_helpers.core.config import ExperimentConfig
from fedtl_helpers.federation.server import run_federated
from fedtl_helpers.federation.simulation import Simulation
from fedtl_helpers.transforms import aggregation, compression, robust

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
sys.path.insert(0, str(DEPLOY))
with warnings.catch_warnings():  # typer, imported by flwr, uses a deprecated click API
    warnings.simplefilter("ignore", DeprecationWarning)
    import run_local
    from fedtl_deploy import client_app, server_app
    from fedtl_deploy.task import run_config_for
    from flwr.app import ConfigRecord, Context, Error, Message, MessageType, RecordDict
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
    from flwr.supercore.task_identity import TaskIdentity

# Three nodes, threshold 3 (the deployment's least: its masks come from 32-bit seeds), one
# round: the aggregate is compared with plain FedAvg of the very same updates (round 1 starts
# every node from the same weights). Four nodes, threshold 3 (a majority) for dropouts.
SECURE = ExperimentConfig(num_clients=3, rounds=1, n_train=300, n_test=100, strategy="head",
                          secure_aggregation=True, secagg_threshold=3, randomness="secure")
FOUR = ExperimentConfig(**{**SECURE.to_dict(), "num_clients": 4, "n_train": 400, "secagg_threshold": None})
Q = 2**22  # SecAgg+'s quantisation levels (flwr 1.42's default ``quantization_range``)


class EveryNodesCache(dict):
    """``client_app._NODE`` as three SuperNode processes would hold it: each node keeps its own
    data and model (one process here, so the ClientApp's one-experiment rule must not clear)."""

    def clear(self):
        pass


@pytest.fixture
def os_entropy(monkeypatch):
    """The OS's entropy as one fixed number, so both runs sample and shuffle alike (see
    ``test_conformance.os_entropy``); and every node's model kept, as its own process would."""
    monkeypatch.setattr(randomness, "fresh_entropy", lambda: 0x5EC12E)
    monkeypatch.setattr(client_app, "_NODE", EveryNodesCache())


class LossyGrid:
    """Flower's ``Grid`` in process: each message is copied (as serialisation would) and handed
    to ``client_app``; a node in ``dead`` (partition -> SecAgg+ stage) stops answering from that
    stage on, as a killed SuperNode does."""

    def __init__(self, config: ExperimentConfig, run_config: dict, dead: dict[int, str] | None = None):
        self.contexts = {100 + k: Context(run_id=1, node_id=100 + k, state=RecordDict(),
                                          node_config={"partition-id": k,
                                                       "num-partitions": config.num_clients},
                                          run_config=run_config)
                         for k in range(config.num_clients)}
        self.dead = {100 + k: stage for k, stage in (dead or {}).items()}
        self.gone: set[int] = set()

    def get_node_ids(self):
        return list(self.contexts)

    def send_and_receive(self, messages, timeout=None):
        replies = []
        for m in messages:
            node = m.metadata.dst_node_id
            content = copy.deepcopy(m.content)
            configs = content.config_records.get(RECORD_KEY_CONFIGS)
            if configs is not None and self.dead.get(node) == configs[Key.STAGE]:
                self.gone.add(node)
            if node in self.gone:
                continue  # killed: no reply, whatever the timeout
            copied = Message(content, node, m.metadata.message_type, group_id=m.metadata.group_id)
            handler = client_app.query if m.metadata.message_type == MessageType.QUERY else client_app.train
            try:
                replies.append(handler(copied, self.contexts[node]))
            except Exception as e:  # what a SuperNode sends back when its ClientApp raised
                replies.append(Message(Error(0, f"{type(e).__name__}: {e}"), reply_to=copied))
        return replies


def deploy(config: ExperimentConfig, tmp_path: Path, dead=None) -> tuple[dict, list[np.ndarray]]:
    """Run the ServerApp in process; its result JSON and the final global weights."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1  # what Flower sets
    run_config = {"experiment": run_config_for(config), "result-path": str(tmp_path / "result.json"),
                  "node-timeout": 5.0, "round-timeout": 5.0, "checkpoint-dir": str(tmp_path / "ckpt")}
    server_app.main(LossyGrid(config, run_config, dead),
                    Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config))
    weights, _ = storage.load_checkpoint(tmp_path / "ckpt")
    return json.loads((tmp_path / "result.json").read_text()), weights


def plain_fedavg(config: ExperimentConfig, partitions: list[int]) -> tuple[list, list[list], list[int]]:
    """Round 1's global weights under plain FedAvg of ``partitions``' updates, computed by the
    same ClientApp from plain (unmasked) messages; the updates and their example counts."""
    sim = Simulation(config)
    initial = sim.model.get_weights()
    run_config = {"experiment": run_config_for(config)}
    grid = LossyGrid(config, run_config)
    deltas, counts = [], []
    for k in partitions:
        msg = Message(RecordDict({"arrays": server_app.to_record(initial),
                                  "config": ConfigRecord({"round": 1, "trained-only": False})}),
                      100 + k, MessageType.TRAIN)
        (reply,) = grid.send_and_receive([msg])
        deltas.append(compression.decode(server_app.encoded_from_records(reply.content["update"],
                                                                         reply.content["encoding"])))
        counts.append(int(reply.content["metrics"]["num-examples"]))
    mean = iter(aggregation.fedavg(deltas, counts))
    return [w + next(mean) if m else w for w, m in zip(initial, sim.mask)], deltas, counts


def secagg_error_bound(config: ExperimentConfig, deltas: list, counts: list[int]) -> float:
    """SecAgg+'s worst-case error on one value of the weighted mean, from flwr 1.42's code.

    Node k sends ``r_k * x`` with ``r_k = round(n_k / W * Q) / Q`` (``W = max_weight``, the
    training set's size: ``n_train`` here),
    clipped to ``[-c, c]`` and stochastically rounded to a grid of step ``2c / Q``: off by less
    than one step. The server divides the sum of ``m`` such values by ``sum r_k``, so the mean
    is off by less than ``m * 2c / Q / sum r_k``; the weights ``r_k`` themselves are rounded to
    ``1 / (2Q)``, which moves the mean by at most ``max|x| * m / (2Q) / sum r_k``. Adding the
    update to the float32 weights rounds once more (half an ulp of the largest weight).
    """
    c, w = config.secagg_clip, config.n_train
    r = sum(n / w for n in counts)
    biggest = max(float(np.max(np.abs(t))) for d in deltas for t in d)
    m = len(counts)
    return m * 2 * c / Q / r + biggest * m / (2 * Q) / r


def float32_rounding(weights: list[np.ndarray]) -> float:
    """Both sides add their aggregate to float32 weights, each rounding by half an ulp at most."""
    return 2 * max(float(np.max(np.abs(w))) for w in weights) * 2.0**-24


def test_secagg_aggregate_is_fedavg_of_the_same_updates(tmp_path, os_entropy):
    got, weights = deploy(SECURE, tmp_path)
    want, deltas, counts = plain_fedavg(SECURE, [0, 1, 2])
    bound = secagg_error_bound(SECURE, deltas, counts)
    ulp = float32_rounding(want)
    # bound ~ 3 * 2 / 2**22 / 1.0 = 1.43e-6 (clip 1, three nodes holding all 300 examples)
    assert 1.4e-6 < bound < 1.6e-6
    err = max(float(np.max(np.abs(g - w))) for g, w in zip(weights, want))
    # measured 1.31e-6 (12-06): stochastic rounding, so below the bound but not far
    assert 0 < err <= bound + ulp, (err, bound)  # masked integers: close, never bit-identical
    row = got["history"]["rows"][1]
    assert (row["clients"], row["dropped"]) == ([0, 1, 2], [])
    assert row["bytes_up"] > 3 * compression.dense_nbytes(deltas[0])  # masked inputs and keys


def test_a_node_killed_mid_round_is_tolerated_up_to_the_threshold(tmp_path, os_entropy):
    # Node 2 of 4 dies after sharing its keys: no masked input; the three survivors (= the
    # threshold) rebuild its secret key and remove its pairwise masks from their sum.
    got, weights = deploy(FOUR, tmp_path, dead={2: "collect_masked_vectors"})
    want, deltas, counts = plain_fedavg(FOUR, [0, 1, 3])
    bound = secagg_error_bound(FOUR, deltas, counts)  # 3 nodes, sum r = 3/4: ~1.9e-6
    ulp = float32_rounding(want)
    err = max(float(np.max(np.abs(g - w))) for g, w in zip(weights, want))
    assert err <= bound + ulp, (err, bound)
    row = got["history"]["rows"][1]
    assert (row["clients"], row["dropped"]) == ([0, 1, 2, 3], [2])
    assert got["status"] == "completed"


def test_a_node_killed_while_unmasking_still_counts(tmp_path, os_entropy):
    # Node 0 of 4 dies after sending its masked input: its update is in the sum; the three
    # others hold enough shares of its self-mask seed to remove it.
    got, weights = deploy(FOUR, tmp_path, dead={0: "unmask"})
    want, deltas, counts = plain_fedavg(FOUR, [0, 1, 2, 3])
    err = max(float(np.max(np.abs(g - w))) for g, w in zip(weights, want))
    assert err <= secagg_error_bound(FOUR, deltas, counts) + float32_rounding(want)
    assert got["history"]["rows"][1]["dropped"] == []  # its input is in the sum


@pytest.mark.parametrize("config,dead", [(FOUR, {1: "share_keys", 2: "share_keys"}),
                                         (SECURE, {2: "collect_masked_vectors"})])
def test_below_the_threshold_the_run_stops_with_a_clear_message(tmp_path, os_entropy, config, dead):
    with pytest.raises(RuntimeError, match=rf"round 1: secure aggregation stopped: fewer than the "
                                           rf"threshold \(3\) of the {config.num_clients} sampled nodes"):
        deploy(config, tmp_path, dead=dead)
    assert not (tmp_path / "result.json").exists()


def test_a_node_refuses_its_own_nan_update_before_masking(tmp_path, os_entropy):
    # One node of four is the attacker (malicious_fraction 0.25): it would send NaN, which a
    # mask would hide from the server; it refuses, and is a dropout of the protocol.
    config = ExperimentConfig(**{**FOUR.to_dict(), "attack": "nan", "malicious_fraction": 0.25,
                                 "rounds": 2})
    (bad,) = robust.malicious_clients(config.num_clients, config.malicious_fraction, config.seed)
    got, weights = deploy(config, tmp_path)
    rows = got["history"]["rows"]
    assert [r["dropped"] for r in rows[1:]] == [[bad], [bad]]
    assert all(np.isfinite(r["test_loss"]) for r in rows) and all(np.all(np.isfinite(w)) for w in weights)


def test_a_node_refuses_an_unmasking_request_that_names_a_node_alive_and_dropped():
    ask = ConfigRecord({Key.STAGE: Stage.UNMASK, Key.ACTIVE_NODE_ID_LIST: [100, 101],
                        Key.DEAD_NODE_ID_LIST: [101, 102]})
    with pytest.raises(ValueError, match=r"nodes \[101\] are listed as both alive and dropped"):
        client_app.check_unmask_request(ask)
    honest = ConfigRecord({Key.STAGE: Stage.UNMASK, Key.ACTIVE_NODE_ID_LIST: [100, 101],
                           Key.DEAD_NODE_ID_LIST: [102]})
    client_app.check_unmask_request(honest)  # answered


@pytest.mark.parametrize("args,field", [
    (["--aggregator", "median"], "aggregator='median' is invalid"),
    (["--dp-clip", "1.0", "--aggregator", "mean"], "secure_aggregation=True is invalid"),
    (["--compression", "float16"], "compression='float16' is invalid"),
    ([], "secure_aggregation=True is not supported by the Flower deployment with a threshold of 2 "
         "(3 clients per round)"),  # 3 clients: a majority is 2; SecAgg+'s 32-bit seeds need 3
])
def test_what_secure_aggregation_cannot_run_is_refused_before_anything_starts(tmp_path, capsys, args,
                                                                              field):
    code = run_local.main(["--randomness", "secure", "--num-clients", "3", "--secure-aggregation", "true",
                           *args, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and field in err, err
    assert not (tmp_path / "logs").exists()  # no process was started


@pytest.mark.slow  # starts Flower processes: 80-150 s on the loaded 2-core machine (3 TensorFlow imports)
def test_secagg_over_real_flower_processes(tmp_path):
    """SecAgg+ end to end: a SuperLink, three SuperNodes with persistent ClientApps (loopback,
    plain HTTP for speed; TLS changes the transport only). The History matches the simulation's
    plain FedAvg to within one test image and 1e-4 in loss (the aggregate is off by < 1.5e-6
    per value, test above)."""
    from test_deploy import free_ports

    config = SECURE
    base = free_ports(config.num_clients + 1)
    result = run_local.run_local(config, tmp_path / "deploy", superlink_port=base, node_port=base + 1,
                                 connect_timeout=60, secure=False)
    rows = result["history"]["rows"]
    sim = run_federated(ExperimentConfig(**{**config.to_dict(), "secure_aggregation": False}),
                        progress=False).history.rows
    for d, s in zip(rows, sim):
        assert abs(d["test_accuracy"] - s["test_accuracy"]) <= 1 / config.n_test, (d, s)
        assert abs(d["test_loss"] - s["test_loss"]) <= 1e-4, (d, s)
    assert (rows[1]["clients"], rows[1]["dropped"]) == ([0, 1, 2], [])

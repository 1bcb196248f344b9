"""The ClientApp: what a SuperNode runs when the ServerApp sends it a message.

Chapter: "From simulation to deployment". ``train`` is the round's client side
(``round.client_side``: client update, then clip, attack, encode, with the stages that
``stages.build_stages`` makes from the same config as the server's) behind a network endpoint.
The node holds one partition of the training set (its node config's ``partition-id``) and
builds the model *architecture* only: it never loads the pretrained weights itself; its
starting point is the global model the server sends (in round 1, the pretrained initial model).
Top-k's error-feedback residual is the client's own memory: it lives in the node's
``context.state``, which Flower keeps between the messages of a run; so do the frozen tensors of
the first broadcast, after which the server sends a node only what training changes.

The node's data, model, trainer (with its traced train step) and stages are built at the
first ``train`` message and kept in this module (``node_simulation``) for the messages that
follow. That pays off when the ClientApp process stays up across messages, as the launcher's
``persistent_clientapp.py`` does (``--isolation process``); under Flower's default, a fresh
``flwr-clientapp`` process per message, they are rebuilt every time, with the same result.
``query`` (which partition do you hold?) answers without importing TensorFlow. Under secure
aggregation Flower's ``secaggplus_mod`` answers the protocol's stages and masks the update
``train_for_secagg`` returns (after refusing a non-finite one). A real node
would load its own data from disk (see the chapter).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage

from fedtl_deploy.task import encoded_to_records, experiment_config, from_record, node_partition, to_record

app = ClientApp()
RESIDUAL = "uplink-residual"  # key of the error-feedback residual in the node's context.state
FROZEN = "frozen-tensors"  # the tensors training never changes, kept from the node's first round
_NODE: dict[tuple[str, int], tuple[Any, Any]] = {}  # (experiment JSON, partition) -> (sim, stages)


def node_simulation(run_config: dict[str, Any], k: int) -> tuple[Any, Any]:
    """This node's ``(Simulation, Stages)`` for the run's experiment, built once per process.

    The ``Simulation`` holds the node's data, the model *architecture* (``weights=None``: its
    weights are always the broadcast's) and the trainer, reused as ``run_federated`` reuses
    them from round to round. One experiment at a time: a new one replaces the old.
    """
    from fedtl_helpers.federation.simulation import Simulation
    from fedtl_helpers.federation.stages import build_stages

    key = (str(run_config.get("experiment", "{}")), k)
    if key not in _NODE:
        _NODE.clear()
        config = experiment_config(run_config)
        _NODE[key] = (Simulation(dataclasses.replace(config, weights=None)), build_stages(config))
    return _NODE[key]


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Tell the server which partition of how many this node holds."""
    k, n = node_partition(context.node_config)
    return Message(RecordDict({"info": ConfigRecord({"partition-id": k, "num-partitions": n})}),
                   reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Load the broadcast global weights, run the client's stages, send back the encoded update.

    Under secure aggregation (a message carrying SecAgg+'s records) Flower's ``secaggplus_mod``
    runs the protocol's stages and calls ``train_for_secagg`` for the update it masks.
    """
    if RECORD_KEY_CONFIGS in msg.content.config_records:
        check_unmask_request(msg.content.config_records[RECORD_KEY_CONFIGS])
        return secaggplus_mod(msg, context, train_for_secagg)
    sent, metrics = client_round(from_record(msg.content["arrays"]), msg.content["config"], context)
    arrays, header = encoded_to_records(sent.encoded)
    return Message(RecordDict({"update": arrays, "encoding": header, "metrics": MetricRecord(metrics)}),
                   reply_to=msg)


def client_round(weights: list, config: ConfigRecord, context: Context) -> tuple[Any, dict]:
    """The client side of one round (``round.client_side``) from the broadcast ``weights``:
    the client's message and its metrics in the clear."""
    from fedtl_helpers.federation.round import client_side, unpack

    t0 = time.perf_counter()
    k, _ = node_partition(context.node_config)
    sim, stages = node_simulation(context.run_config, k)
    if config.get("trained-only", False):  # the server sends the rest only once
        if FROZEN not in context.state:
            raise RuntimeError(f"node of partition {k} got only the trained tensors but holds no "
                               "frozen ones from an earlier round (its state was lost)")
        weights = unpack(weights, sim.mask, from_record(context.state[FROZEN]))
    else:
        context.state[FROZEN] = to_record([w for w, m in zip(weights, sim.mask) if not m])
    streams = stages.streams(int(config["round"]))
    sim.model.set_weights(weights)  # before client_data: cached features use the global backbone
    x, y = sim.client_data(k)
    uplink = stages.make_uplink()
    if RESIDUAL in context.state:  # what this client did not send in earlier rounds
        uplink.residuals[k] = from_record(context.state[RESIDUAL])
    sent = client_side(stages.client, sim.trainer, weights, k, x, y, uplink, streams)
    if k in uplink.residuals:
        context.state[RESIDUAL] = to_record(uplink.residuals[k])
    return sent, {"num-examples": sent.num_examples, "partition-id": k, "train-loss": sent.train_loss,
                  # How long the node worked (data and model included): the server tells the
                  # network's and Flower's share of a round from it.
                  "client-seconds": time.perf_counter() - t0}


def check_unmask_request(configs: ConfigRecord) -> None:
    """Refuse an unmasking request that names a node both alive and dropped.

    For such a node ``secaggplus_mod`` (flwr 1.42) would send both the share of its self-mask
    seed and the share of its mask key: with the threshold's worth of such answers the server
    rebuilds both and reads that node's update. The course's in-process client refuses this
    (``secure_agg.Client.unmask``); Flower's answers once per round (its stage order) and only
    with at least the threshold alive, but does not check the overlap.
    """
    if configs.get(Key.STAGE) != Stage.UNMASK:
        return
    both = set(configs[Key.ACTIVE_NODE_ID_LIST]) & set(configs[Key.DEAD_NODE_ID_LIST])
    if both:
        raise ValueError(f"this node refuses to unmask: nodes {sorted(both)} are listed as both "
                         "alive and dropped (that would reveal their updates).")


def train_for_secagg(msg: Message, context: Context) -> Message:
    """The update that ``secaggplus_mod`` masks, in the legacy ``FitIns``/``FitRes`` records
    that SecAgg+ speaks in flwr 1.42 (converted by Flower's own ``recorddict_compat``).

    The node refuses its own non-finite update *before* masking: once masked, a NaN is an
    arbitrary integer the server cannot see, and it would spoil the sum. Refusing makes the
    node a dropout of the protocol (the error goes back instead of a masked input); the others'
    sum is still recovered while at least the threshold remain.
    """
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.compat.common.recorddict_compat import fitres_to_recorddict, recorddict_to_fitins

    from fedtl_helpers.federation.round import is_finite
    from fedtl_helpers.transforms.compression import decode

    fitins = recorddict_to_fitins(msg.content, keep_input=False)
    sent, metrics = client_round(parameters_to_ndarrays(fitins.parameters), fitins.config, context)
    delta = decode(sent.encoded)  # compression is refused with secure aggregation: dense
    if not is_finite(delta):
        raise ValueError(f"node of partition {metrics['partition-id']} refuses to mask its update: "
                         "it holds NaN or infinity (dropped from this round's sum)")
    # FedAvg weighs by n_k; the plain mean by 1 (the weight is masked with the update).
    weight = sent.num_examples if bool(fitins.config.get("weighted", True)) else 1
    res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(delta), int(weight), metrics)
    return Message(fitres_to_recorddict(res, keep_input=False), reply_to=msg)

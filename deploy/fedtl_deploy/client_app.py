"""The ClientApp: what a SuperNode runs when the ServerApp sends it a message.

Chapter: "From simulation to deployment". ``train`` is the round's client side
(``round.client_side``: client update, then clip, attack, encode, with the stages that
``stages.build_stages`` makes from the same config as the server's) behind a network endpoint.
The node holds one partition of the training set (its node config's ``partition-id``) and
builds the model *architecture* only: it never loads the pretrained weights itself; its
starting point is the global model the server sends (in round 1, the pretrained initial model).
Top-k's error-feedback residual is the client's own memory: it lives in the node's
``context.state``, which Flower keeps between the messages of a run.

Flower starts a fresh ClientApp process for every message, so ``query`` (which partition do
you hold?) answers without importing TensorFlow, and ``train`` builds its data and model each
time (a real node would load its own data from disk; see the chapter).
"""

from __future__ import annotations

import dataclasses

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedtl_deploy.task import encoded_to_records, experiment_config, from_record, node_partition, to_record

app = ClientApp()
RESIDUAL = "uplink-residual"  # key of the error-feedback residual in the node's context.state


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Tell the server which partition of how many this node holds."""
    k, n = node_partition(context.node_config)
    return Message(RecordDict({"info": ConfigRecord({"partition-id": k, "num-partitions": n})}),
                   reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Load the broadcast global weights, run the client's stages, send back the encoded update."""
    from fedtl_helpers.round import client_side
    from fedtl_helpers.simulation import Simulation
    from fedtl_helpers.stages import build_stages

    config = experiment_config(context.run_config)
    stages = build_stages(config)
    k, _ = node_partition(context.node_config)
    # weights=None: the architecture with random weights, overwritten by the broadcast below.
    sim = Simulation(dataclasses.replace(config, weights=None))
    weights = from_record(msg.content["arrays"])
    streams = stages.streams(int(msg.content["config"]["round"]))
    sim.model.set_weights(weights)  # before client_data: cached features use the global backbone
    x, y = sim.client_data(k)
    uplink = stages.make_uplink()
    if RESIDUAL in context.state:  # what this client did not send in earlier rounds
        uplink.residuals[k] = from_record(context.state[RESIDUAL])
    sent = client_side(stages, sim.trainer, weights, k, x, y, uplink, streams)
    if k in uplink.residuals:
        context.state[RESIDUAL] = to_record(uplink.residuals[k])
    arrays, header = encoded_to_records(sent.encoded)
    metrics = MetricRecord({"num-examples": sent.num_examples, "partition-id": k,
                            "train-loss": sent.train_loss})
    return Message(RecordDict({"update": arrays, "encoding": header, "metrics": metrics}),
                   reply_to=msg)

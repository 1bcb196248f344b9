"""The ClientApp: what a SuperNode runs when the ServerApp sends it a message.

Chapter: "From simulation to deployment". ``train`` is ``client_update`` behind a network
endpoint. The node holds one partition of the training set (its node config's
``partition-id``) and builds the model *architecture* only: it never loads the pretrained
weights itself; its starting point is the global model the server sends (in round 1, the
pretrained initial model).

Flower starts a fresh ClientApp process for every message, so ``query`` (which partition do
you hold?) answers without importing TensorFlow, and ``train`` builds its data and model each
time (a real node would load its own data from disk; see the chapter).
"""

from __future__ import annotations

import dataclasses

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedtl_deploy.task import experiment_config, from_record, node_partition, to_record

app = ClientApp()


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Tell the server which partition of how many this node holds."""
    k, n = node_partition(context.node_config)
    return Message(RecordDict({"info": ConfigRecord({"partition-id": k, "num-partitions": n})}),
                   reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Load the broadcast global weights, train on the local partition, send back the delta."""
    from fedtl_helpers.client import client_update
    from fedtl_helpers.server import Simulation

    config = experiment_config(context.run_config)
    k, _ = node_partition(context.node_config)
    # weights=None: the architecture with random weights, overwritten by the broadcast below.
    sim = Simulation(dataclasses.replace(config, weights=None))
    weights = from_record(msg.content["arrays"])
    rnd = int(msg.content["config"]["round"])
    sim.model.set_weights(weights)  # before client_data: cached features use the global backbone
    x, y = sim.client_data(k)
    result = client_update(sim.trainer, weights, k, x, y, epochs=config.local_epochs,
                           seed=(config.seed, rnd, k))
    metrics = MetricRecord({"num-examples": result.num_examples, "partition-id": k,
                            "train-loss": result.metrics["train_loss"]})
    return Message(RecordDict({"delta": to_record(result.delta), "metrics": metrics}), reply_to=msg)

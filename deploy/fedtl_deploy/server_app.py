"""The ServerApp: the simulation's server loop, with the clients on other machines.

Chapter: "From simulation to deployment". One round is the book's picture::

    global weights --Message(TRAIN)--> SuperNodes (client_update) --delta, n_k-->
       fedavg (weighted by n_k) --> server_update --> evaluate --> History row

The server builds the initial global model (``weights`` of the config, e.g. the built-in
pretrained backbone) and sends it in round 1; it evaluates on the held-out test set, as
``run_federated`` does, and writes the result JSON atomically when the last round is done.
Clients are sampled with ``sample_clients`` and seeded like the simulation's, so both give the
same numbers for the same config.
"""

from __future__ import annotations

import json
import random
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedtl_deploy.task import check_partitions, experiment_config, from_record, to_record
from fedtl_helpers import aggregation, compression
from fedtl_helpers.history import History
from fedtl_helpers.server import Simulation, sample_clients
from fedtl_helpers.server_opt import server_update
from fedtl_helpers.storage import atomic_write_text

app = ServerApp()


@contextmanager
def private_keras_seeds(seed: int):
    """Let Keras draw its initialisers' default seeds from a private ``random.Random(seed)``.

    ``build_model`` seeds Python's global ``random`` and Keras draws the seeds of the new
    head's initialisers from it. In the ServerApp, Flower's heartbeat thread draws from the
    same global generator (``random.uniform``, jitter), so a heartbeat during the build would
    silently change the initial model. A private generator seeded like the global one gives
    the numbers ``run_federated`` gets, whatever other threads do.
    """
    from keras.src.random import seed_generator  # where Keras keeps its `random` (pinned Keras)

    shared = seed_generator.python_random
    seed_generator.python_random = random.Random(seed)
    try:
        yield
    finally:
        seed_generator.python_random = shared


def wait_for_nodes(grid: Grid, count: int, timeout: float) -> list[int]:
    """IDs of the first ``count`` connected SuperNodes; ``TimeoutError`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= count:
            return nodes[:count]
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(nodes)} of {count} SuperNodes connected within "
                               f"{timeout:.0f} s; start one per client (num_clients={count}).")
        time.sleep(0.5)


def _replies(grid: Grid, messages: list[Message], timeout: float, what: str) -> list[Message]:
    """Send, wait for every reply, and fail loudly on a missing or failed one."""
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    if len(replies) != len(messages):
        raise RuntimeError(f"{what}: {len(replies)} of {len(messages)} SuperNodes replied "
                           f"within {timeout:.0f} s.")
    for r in replies:
        if r.has_error():
            raise RuntimeError(f"{what}: SuperNode {r.metadata.src_node_id} failed: "
                               f"{r.error.reason}")
    return replies


def partitions_of(grid: Grid, nodes: list[int], num_clients: int, timeout: float) -> dict[int, int]:
    """Ask every node which partition it holds: ``{partition_id: node_id}``."""
    msgs = [Message(RecordDict({"config": ConfigRecord({})}), node, MessageType.QUERY)
            for node in nodes]
    infos = [(r.content["info"], r.metadata.src_node_id)
             for r in _replies(grid, msgs, timeout, "asking the nodes which data they hold")]
    held = {int(info["partition-id"]): node for info, node in infos}
    check_partitions(held, {int(info["num-partitions"]) for info, _ in infos}, num_clients)
    return held


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = experiment_config(context.run_config)
    result_path = Path(str(context.run_config["result-path"]))
    round_timeout = float(context.run_config["round-timeout"])
    with private_keras_seeds(config.seed):  # the initial global model and the test set
        sim = Simulation(config)
    node_of = partitions_of(grid, wait_for_nodes(grid, config.num_clients,
                                                 float(context.run_config["node-timeout"])),
                            config.num_clients, round_timeout)
    weights = sim.model.get_weights()  # round 1 broadcasts the pretrained initial model
    history = History(meta={"config": config.to_dict(), "describe": sim.describe(),
                            "dataset": sim.data_source, "weights": config.weights or "random init",
                            "runtime": "flower", "run_id": context.run_id,
                            "nodes": {str(k): n for k, n in node_of.items()}})
    ev = sim.evaluate(weights)
    history.append(round=0, test_accuracy=ev["accuracy"], test_loss=ev["loss"], train_loss=None,
                   clients=[], bytes_up=0, bytes_down=0, seconds=0.0)
    for rnd in range(1, config.rounds + 1):
        t0 = time.perf_counter()
        chosen = sample_clients(config.num_clients, config.clients_per_round, config.seed, rnd)
        msgs = [Message(RecordDict({"arrays": to_record(weights),
                                    "config": ConfigRecord({"round": rnd})}),
                        node_of[k], MessageType.TRAIN, group_id=str(rnd)) for k in chosen]
        replies = _replies(grid, msgs, round_timeout, f"round {rnd}")
        # Aggregate in partition order, as the simulation does (float sums depend on order).
        replies.sort(key=lambda r: int(r.content["metrics"]["partition-id"]))
        deltas = [from_record(r.content["delta"]) for r in replies]
        counts = [int(r.content["metrics"]["num-examples"]) if config.aggregator == "fedavg" else 1
                  for r in replies]
        weights = server_update(weights, sim.mask, aggregation.fedavg(deltas, counts),
                                config.server_lr)
        ev = sim.evaluate(weights)
        history.append(round=rnd, test_accuracy=ev["accuracy"], test_loss=ev["loss"],
                       train_loss=float(np.mean([r.content["metrics"]["train-loss"] for r in replies])),
                       clients=chosen, bytes_up=sum(compression.dense_nbytes(d) for d in deltas),
                       bytes_down=compression.dense_nbytes(weights) * len(chosen),
                       seconds=time.perf_counter() - t0)
        print(f"round {rnd}: test accuracy {ev['accuracy']:.4f} ({sim.describe()})", flush=True)
    result = {"status": "completed", "final_test_accuracy": history.final_accuracy,
              "history": history.to_dict()}
    atomic_write_text(result_path, json.dumps(result, indent=1))

"""The ServerApp: the simulation's round, with the clients on other machines.

Chapter: "From simulation to deployment". The round is ``round.run_round`` itself, with
``FlowerClients`` as its clients: the server samples, ``round.broadcast`` makes each chosen
client's payload (the same one the simulation counts as ``bytes_down``), a ``Message(TRAIN)``
carries it to the SuperNode, which runs the client side (``round.client_side`` in the
ClientApp: client update, clip, attack, encode) and sends its encoded update back; the server
decodes, aggregates, steps, evaluates and records as in simulation. Both apps build their
stages with ``stages.build_stages`` from the same config, so the History is the simulation's;
what the deployment cannot run is refused before anything is built (``task.check_deployable``).
With ``checkpoint-dir`` in the run config the server saves its ``ServerState`` after every
round and ``resume = true`` continues from it (the nodes then get the whole model again).

The server builds the initial global model (``weights`` of the config, e.g. the built-in
pretrained backbone) and sends it in round 1; it evaluates on the held-out test set, as
``run_federated`` does, and writes the result JSON atomically when the last round is done.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedtl_deploy.task import (
    check_deployable,
    check_partitions,
    deployment_security,
    encoded_from_records,
    experiment_config,
    to_record,
)
from fedtl_helpers.core.storage import atomic_write_text
from fedtl_helpers.federation.round import ClientMessage, run_rounds
from fedtl_helpers.federation.server import finish_history, new_history, saver, start
from fedtl_helpers.federation.simulation import Simulation
from fedtl_helpers.federation.stages import build_stages

app = ServerApp()


@contextmanager
def private_keras_seeds(seed: int):
    """Does nothing any more; kept only because ``tests/test_deploy.py`` imports it.

    Flower's heartbeat thread draws from Python's global ``random`` while the ServerApp builds
    its model. This used to swap Keras' private ``seed_generator.python_random``; now
    ``build_model`` gives every initialiser it creates an explicit seed
    (``models.initializer_seeds``), so no thread can change the initial model.
    """
    yield


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


REPLY_POLL = 0.05  # seconds between asking the SuperLink for replies


def send_and_receive(grid: Grid, messages: list[Message], timeout: float) -> list[Message]:
    """Push ``messages`` and pull their replies every ``REPLY_POLL`` s until all came or ``timeout``.

    Flower's ``Grid.send_and_receive`` does the same but sleeps 3 s between pulls (hard-coded
    in flwr 1.42), which adds 1.5 s to every round on average; ``push_messages`` and
    ``pull_messages`` are the public Grid calls it is made of. A grid that is not Flower's
    (the in-process one of ``tests/test_conformance.py``) answers at once through its own
    ``send_and_receive``.
    """
    if not isinstance(grid, Grid):
        return list(grid.send_and_receive(messages, timeout=timeout))
    waiting = set(grid.push_messages(messages))
    deadline = time.monotonic() + timeout
    replies: list[Message] = []
    while waiting and time.monotonic() < deadline:
        got = list(grid.pull_messages(waiting))
        replies += got
        waiting -= {r.metadata.reply_to_message_id for r in got}
        if waiting:
            time.sleep(REPLY_POLL)
    return replies


def _replies(grid: Grid, messages: list[Message], timeout: float, what: str) -> list[Message]:
    """Send, wait for every reply, and fail loudly on a missing or failed one."""
    replies = send_and_receive(grid, messages, timeout)
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


class FlowerClients:
    """The deployment's ``round.Clients``: each payload travels in a ``Message(TRAIN)`` to the
    SuperNode holding that client's partition, which runs the client side (``client_app.train``)
    and replies with its encoded update. The server's model ``sim`` evaluates, as in simulation.
    """

    def __init__(self, grid: Grid, node_of: dict[int, int], sim: Simulation, timeout: float):
        self.grid, self.node_of, self.sim, self.timeout = grid, node_of, sim, timeout
        self.waited = self.busy = 0.0  # the last round's wait for replies, its slowest client

    @property
    def mask(self) -> list[bool]:
        return self.sim.mask

    @property
    def variances(self) -> list[bool]:
        return self.sim.variances

    def start_round(self, rnd: int) -> None:
        self.sim.start_round(rnd)
        self.waited = self.busy = 0.0  # a Poisson round may send nothing

    def train(self, payloads, streams, uplink):
        """``uplink`` is unused: each node keeps its own residual in its ``context.state``."""
        t0 = time.perf_counter()
        rnd = streams.round
        msgs = [Message(RecordDict({"arrays": to_record(p.arrays),
                                    "config": ConfigRecord({"round": rnd, "trained-only": p.trained_only})}),
                        self.node_of[p.client], MessageType.TRAIN, group_id=str(rnd))
                for p in payloads]
        replies = _replies(self.grid, msgs, self.timeout, f"round {rnd}")
        self.waited = time.perf_counter() - t0
        # Of the wait, the slowest client worked `busy` s; the rest is transport and Flower's
        # polling (a SuperNode asks for messages every 3 s when it has none).
        self.busy = max(float(r.content["metrics"]["client-seconds"]) for r in replies)
        # In the order of the payloads (sorted partitions), as the simulation (float sums depend on it).
        replies.sort(key=lambda r: int(r.content["metrics"]["partition-id"]))
        return [ClientMessage(int(r.content["metrics"]["partition-id"]),
                              encoded_from_records(r.content["update"], r.content["encoding"]),
                              int(r.content["metrics"]["num-examples"]),
                              float(r.content["metrics"]["train-loss"])) for r in replies]

    def evaluate(self, weights):
        return self.sim.evaluate(weights)

    def state(self) -> dict:
        return {}  # the nodes keep their own (residuals, frozen tensors)

    def load_state(self, arrays: dict) -> None:
        pass


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = experiment_config(context.run_config)
    check_deployable(config)  # before any data, model or node: nothing is silently ignored
    stages = build_stages(config)
    result_path = Path(str(context.run_config["result-path"]))
    round_timeout = float(context.run_config["round-timeout"])
    checkpoint_dir = str(context.run_config.get("checkpoint-dir", "")) or None
    resume = bool(context.run_config.get("resume", False))
    sim = Simulation(config)  # its initialisers are seeded explicitly: threads cannot change it
    node_of = partitions_of(grid, wait_for_nodes(grid, config.num_clients,
                                                 float(context.run_config["node-timeout"])),
                            config.num_clients, round_timeout)
    clients = FlowerClients(grid, node_of, sim, round_timeout)
    security = deployment_security()  # what the SuperLink was started with (transport, node auth)
    print(f"transport: {security['transport']}; node authentication: "
          f"{security['node_authentication']}", flush=True)
    history = new_history(config, sim, stages, runtime="flower", run_id=context.run_id,
                          nodes={str(k): n for k, n in node_of.items()}, security=security)
    # Round 1 broadcasts the pretrained initial model.
    state = start(config, stages, clients, sim.model.get_weights(), history, checkpoint_dir, resume)
    if state.round:  # resumed: the nodes may be new ones, holding no frozen tensors yet
        state.seen.clear()

    def report(row: dict) -> None:
        print(f"round {row['round']}: test accuracy {row['test_accuracy']:.4f} ({sim.describe()}); "
              f"replies after {clients.waited:.2f} s, slowest client worked {clients.busy:.2f} s",
              flush=True)

    run_rounds(state, stages, clients, config.rounds, report=report,
               checkpoint=saver(config, clients, checkpoint_dir))
    history = state.history
    finish_history(history, config, stages)  # the final privacy spent, as run_federated records it
    result = {"status": "completed", "final_test_accuracy": history.final_accuracy,
              "security": security, "history": history.to_dict()}
    atomic_write_text(result_path, json.dumps(result, indent=1))

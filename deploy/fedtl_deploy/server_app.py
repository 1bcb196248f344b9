"""The ServerApp: the simulation's round, with the clients on other machines.

Chapter: "From simulation to deployment". The round is ``round.run_round`` itself, with
``FlowerClients`` as its clients: the server samples, ``round.broadcast`` makes each chosen
client's payload (the same one the simulation counts as ``bytes_down``), a ``Message(TRAIN)``
carries it to the SuperNode, which runs the client side (``round.client_side`` in the
ClientApp: client update, clip, attack, encode) and sends its encoded update back; the server
decodes, aggregates, steps, evaluates and records as in simulation. Both apps build their
stages with ``stages.build_stages`` from the same config, so the History is the simulation's;
what the deployment cannot run is refused before anything is built (``task.check_deployable``).
With ``secure_aggregation=True`` the payloads travel inside Flower's SecAgg+ protocol
(``FlowerClients.train_summed``) and the round gets only the unmasked weighted mean
(``round.Summed``), never one node's update.
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
from types import SimpleNamespace

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.common import FitIns, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.server import LegacyContext
from flwr.server.strategy import Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
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
from fedtl_helpers.federation.round import ClientMessage, Summed, run_rounds
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


def _value_bytes(value) -> int:
    if isinstance(value, list):
        return sum(map(_value_bytes, value))
    if isinstance(value, (str, bytes)):
        return len(value)
    return 1 if isinstance(value, bool) else 8  # numbers travel as 64 bits


def record_bytes(content: RecordDict, skip: str | None = None) -> int:
    """Bytes of a message's records, leaving out record ``skip``: arrays as Flower counts them
    (``ArrayRecord.count_bytes``), config and metric values as ``ConfigRecord.count_bytes`` does
    (keys included) but also for an empty string, on which flwr 1.42's raises."""
    total = 0
    for name, record in content.items():
        if name == skip:
            continue
        if isinstance(record, ArrayRecord):
            total += record.count_bytes()
        else:
            total += sum(len(k) + _value_bytes(v) for k, v in record.items())
    return total


def last_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[-1] if lines else "(no reason given)"


class CountingGrid:
    """What ``SecAggPlusWorkflow`` sends and receives through: our ``send_and_receive`` (its
    0.05 s polling) with each stage's bytes counted, up and down, per node."""

    def __init__(self, grid: Grid):
        self.grid = grid
        self.bytes: dict[str, list[int]] = {}  # stage -> [up, down], all nodes together
        self.seconds: dict[str, float] = {}  # stage -> seconds from sending to the last reply
        self.payload_bytes = 0  # the broadcast weights inside the stage-2 messages (``bytes_down``)
        self.errors: list[str] = []  # what the nodes that failed a stage said
        self.replied: dict[str, set[int]] = {}  # stage -> nodes that answered it (even with an error)

    def send_and_receive(self, messages: list[Message], timeout: float | None = None) -> list[Message]:
        stage = str(messages[0].content.config_records[RECORD_KEY_CONFIGS][Key.STAGE]) if messages else ""
        down = sum(record_bytes(m.content, skip=FITINS_PARAMETERS) for m in messages)
        self.payload_bytes += sum(m.content.array_records[FITINS_PARAMETERS].count_bytes()
                                  for m in messages if FITINS_PARAMETERS in m.content.array_records)
        t0 = time.perf_counter()
        replies = send_and_receive(self.grid, messages, timeout or 0.0)
        self.replied.setdefault(stage, set()).update(r.metadata.src_node_id for r in replies)
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0
        up = sum(record_bytes(r.content) for r in replies if not r.has_error())
        self.errors += [f"node {r.metadata.src_node_id} at {stage}: {last_line(r.error.reason)}"
                        for r in replies if r.has_error()]
        got = self.bytes.setdefault(stage, [0, 0])
        got[0], got[1] = got[0] + up, got[1] + down
        return replies


class RoundStrategy(Strategy):
    """The two questions ``SecAggPlusWorkflow`` asks a (legacy) ``Strategy``, answered by the
    course's round: whom to train with what (the round's payloads, already sampled and made by
    ``round.broadcast``), and what to do with the unmasked weighted mean (keep it; the round
    takes it as the aggregate). Nothing else of Flower's legacy round runs."""

    def __init__(self, fitins: dict[int, FitIns]):
        self.fitins = fitins
        self.results: list | None = None  # set when the protocol got through all four stages
        self.failures: list = []

    def configure_fit(self, server_round, parameters, client_manager):
        return [(SimpleNamespace(node_id=node), ins) for node, ins in self.fitins.items()]

    def aggregate_fit(self, server_round, results, failures):
        self.results, self.failures = results, failures
        return (results[0][1].parameters if results else None), {}

    def initialize_parameters(self, client_manager):
        return None

    def configure_evaluate(self, server_round, parameters, client_manager):
        return []

    def aggregate_evaluate(self, server_round, results, failures):
        return None, {}

    def evaluate(self, server_round, parameters):
        return None


def secagg_workflow(config, num_clients: int, timeout: float, max_examples: int) -> SecAggPlusWorkflow:
    """Flower's SecAgg+ for ``config``: every sampled node shares its keys with all the others
    (``num_shares=1.0``), ``secagg_threshold`` shares (default: a majority) rebuild a secret;
    values clipped to ``[-secagg_clip, secagg_clip]`` (after weighting) in ``2**22`` levels.

    ``max_weight`` is ``max_examples``, the training set's size (no node holds more): each
    node's weight is ``n_k / max_examples <= 1``, so weighting never pushes a value the clip let
    through out of range, and with every node in the round the weights add up to 1 (the
    quantisation error on the mean is smallest). The plain mean weighs every node 1.
    """
    t = config.secagg_threshold or num_clients // 2 + 1
    weighted = config.aggregator == "fedavg"
    return SecAggPlusWorkflow(num_shares=1.0, reconstruction_threshold=int(t),
                              max_weight=float(max_examples) if weighted else 1.0,
                              clipping_range=float(config.secagg_clip), timeout=timeout)


FITINS_PARAMETERS = "fitins.parameters"  # the legacy record that carries the weights


class FlowerClients:
    """The deployment's ``round.Clients``: each payload travels in a ``Message(TRAIN)`` to the
    SuperNode holding that client's partition, which runs the client side (``client_app.train``)
    and replies with its encoded update. The server's model ``sim`` evaluates, as in simulation.

    With ``secure`` (the config, when ``secure_aggregation=True``) the payloads travel inside
    Flower's SecAgg+ protocol instead (``train_summed``) and the server gets only their
    weighted mean.
    """

    def __init__(self, grid: Grid, node_of: dict[int, int], sim: Simulation, timeout: float,
                 secure=None):
        self.grid, self.node_of, self.sim, self.timeout = grid, node_of, sim, timeout
        self.secure = secure
        self.waited = self.busy = 0.0  # the last round's wait for replies, its slowest client
        self.protocol_bytes: dict[str, list[int]] = {}  # the last SecAgg+ round's, per stage
        self.stage_seconds: dict[str, float] = {}  # the last SecAgg+ round's wait per stage

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
        if self.secure is not None:
            return self.train_summed(payloads, streams)
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

    def train_summed(self, payloads, streams) -> Summed:
        """One round of Flower's SecAgg+ (setup, share keys, masked input, unmask): the payloads
        go out with the masked-input stage, the server gets the unmasked weighted mean.

        Raises
        ------
        RuntimeError
            Fewer nodes than the threshold got through a stage (each stage waits at most the
            round timeout): the sum cannot be unmasked and the run stops, naming them.
        """
        t0 = time.perf_counter()
        rnd = streams.round
        partition_of = {self.node_of[p.client]: p.client for p in payloads}
        weighted = self.secure.aggregator == "fedavg"
        fitins = {self.node_of[p.client]: FitIns(ndarrays_to_parameters(p.arrays),
                                                 {"round": rnd, "trained-only": p.trained_only,
                                                  "weighted": weighted}) for p in payloads}
        strategy = RoundStrategy(fitins)
        state = RecordDict({MAIN_CONFIGS_RECORD: ConfigRecord({WorkflowKey.CURRENT_ROUND: rnd}),
                            MAIN_PARAMS_RECORD: ArrayRecord()})
        context = LegacyContext(Context(run_id=0, node_id=0, node_config={}, state=state, run_config={}),
                                strategy=strategy)
        grid = CountingGrid(self.grid)
        # The training set's size bounds every node's n_k (the benchmark passes no Simulation).
        examples = len(self.sim.y_train) if self.sim is not None else self.secure.n_train
        workflow = secagg_workflow(self.secure, len(payloads), self.timeout, examples)
        workflow(grid, context)
        self.waited, self.protocol_bytes = time.perf_counter() - t0, grid.bytes
        self.stage_seconds = grid.seconds
        if strategy.results is None:
            reasons = "; ".join(grid.errors)
            raise RuntimeError(
                f"round {rnd}: secure aggregation stopped: fewer than the threshold "
                f"({workflow.reconstruction_threshold}) of the {len(payloads)} sampled nodes got "
                f"through a stage of SecAgg+ within {self.timeout:.0f} s, so the sum cannot be "
                f"unmasked{'; ' + reasons if reasons else ''}.")
        results = sorted(strategy.results, key=lambda r: int(r[1].metrics["partition-id"]))
        mean = parameters_to_ndarrays(results[0][1].parameters)
        clients = [int(res.metrics["partition-id"]) for _, res in results]
        self.busy = max(float(res.metrics["client-seconds"]) for _, res in results)
        up = sum(u for u, _ in grid.bytes.values())
        down = sum(d for _, d in grid.bytes.values())
        answered = grid.replied.get(Stage.COLLECT_MASKED_VECTORS, set())
        return Summed(mean=[m.astype(np.float32) for m in mean], clients=clients,
                      dropped=sorted(set(partition_of.values()) - set(clients)),
                      num_examples=[int(res.metrics["num-examples"]) for _, res in results],
                      train_losses=[float(res.metrics["train-loss"]) for _, res in results],
                      bytes_up=up, bytes_down=down,
                      # the nodes that answered the masked-input stage got the payload with it
                      received=sorted(partition_of[n] for n in answered if n in partition_of))

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
    clients = FlowerClients(grid, node_of, sim, round_timeout,
                            secure=config if config.secure_aggregation else None)
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
        stage_times = json.dumps({k: round(v, 2) for k, v in clients.stage_seconds.items()})
        print(f"round {row['round']}: test accuracy {row['test_accuracy']:.4f} ({sim.describe()}); "
              f"replies after {clients.waited:.2f} s, slowest client worked {clients.busy:.2f} s"
              + (f"; SecAgg+ stages (s): {stage_times}" if clients.secure is not None else ""),
              flush=True)

    run_rounds(state, stages, clients, config.rounds, report=report,
               checkpoint=saver(config, clients, checkpoint_dir))
    history = state.history
    finish_history(history, config, stages)  # the final privacy spent, as run_federated records it
    result = {"status": "completed", "final_test_accuracy": history.final_accuracy,
              "security": security, "history": history.to_dict()}
    atomic_write_text(result_path, json.dumps(result, indent=1))

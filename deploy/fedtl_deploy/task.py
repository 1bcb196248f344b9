"""What the ServerApp and the ClientApp share: the config, weights on the wire, a node's data.

Chapter: "From simulation to deployment". Nothing here re-implements the simulation: the
experiment is the same frozen ``ExperimentConfig`` (sent as JSON in the run config), both apps
build the round's stages from it with ``stages.build_stages``, weights and encoded updates
travel as Flower ``ArrayRecord`` (numpy arrays, bit for bit), and a node's data is its
partition of the same dataset that ``Simulation`` builds. ``check_deployable`` refuses, before
anything starts, what the deployment cannot run.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord

from fedtl_helpers.transforms.aggregation import Weights

if TYPE_CHECKING:
    from fedtl_helpers.core.config import ExperimentConfig
    from fedtl_helpers.transforms.compression import Encoded

# Under Flower's default isolation a fresh ClientApp process starts for every message, so this
# module imports fedtl_helpers (and with it TensorFlow, seconds of start-up) only where it is
# needed: a `query` answers without it.


def experiment_config(run_config: dict[str, Any]) -> ExperimentConfig:
    """The ``ExperimentConfig`` named by the run config's ``experiment`` JSON (validated)."""
    from fedtl_helpers.core.config import ExperimentConfig

    text = run_config.get("experiment", "{}")
    try:
        values = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"run config 'experiment' is not valid JSON ({e}): {text!r}") from None
    return ExperimentConfig.from_dict(values)


def run_config_for(config: ExperimentConfig) -> str:
    """The ``experiment`` run-config value for ``config``: only fields that differ from defaults."""
    from fedtl_helpers.core.config import ExperimentConfig

    default = ExperimentConfig().to_dict()
    return json.dumps({k: v for k, v in config.to_dict().items() if v != default[k]}, sort_keys=True)


def check_deployable(config: ExperimentConfig) -> None:
    """Raise ``ValueError`` naming the field if the deployment cannot run ``config``.

    Called by ``run_local.py`` before it starts any process and by the ServerApp before it
    loads any data, so nothing is silently ignored.
    """
    from fedtl_helpers.federation.stages import DEPLOYMENT, check_supported

    check_supported(config, DEPLOYMENT)


def to_record(weights: Weights) -> ArrayRecord:
    return ArrayRecord(list(weights))


def from_record(record: ArrayRecord) -> Weights:
    return record.to_numpy_ndarrays()


def encoded_to_records(encoded: Encoded) -> tuple[ArrayRecord, ConfigRecord]:
    """An encoded update on the wire: its payload arrays, and what ``decode`` needs besides them.

    A payload is one array (dense, float16) or a tuple (quantised: levels, min, scale; sparse:
    indices, values); the tuples are flattened and their lengths kept in ``parts``.
    """
    arrays, parts = [], []
    for payload in encoded.payloads:
        items = payload if isinstance(payload, tuple) else (payload,)
        arrays += [np.asarray(a) for a in items]
        parts.append(len(items) if isinstance(payload, tuple) else 0)
    header = {"kind": encoded.kind, "shapes": [list(s) for s in encoded.shapes],
              "nbytes": encoded.nbytes, "meta": encoded.meta, "parts": parts}
    return ArrayRecord(arrays), ConfigRecord({"encoded": json.dumps(header)})


def encoded_from_records(arrays: ArrayRecord, header: ConfigRecord) -> Encoded:
    """The ``Encoded`` message ``encoded_to_records`` sent, bit for bit."""
    from fedtl_helpers.transforms.compression import Encoded

    h = json.loads(str(header["encoded"]))
    flat = iter(arrays.to_numpy_ndarrays())
    payloads = []
    for n in h["parts"]:
        if n == 0:
            payloads.append(next(flat))
        else:  # 0-d arrays (a quantised tensor's min and scale) back to numpy scalars
            payloads.append(tuple(a[()] if a.ndim == 0 else a for a in (next(flat) for _ in range(n))))
    return Encoded(h["kind"], tuple(payloads), tuple(tuple(s) for s in h["shapes"]), int(h["nbytes"]),
                   h["meta"])


def node_partition(node_config: dict[str, Any]) -> tuple[int, int]:
    """``(partition-id, num-partitions)`` from a SuperNode's node config: which data it holds.

    Raises
    ------
    ValueError
        The node was started without ``--node-config 'partition-id=K num-partitions=N'``.
    """
    try:
        return int(node_config["partition-id"]), int(node_config["num-partitions"])
    except KeyError as e:
        raise ValueError(f"SuperNode started without node config {e.args[0]!r}: start it with "
                         "--node-config 'partition-id=K num-partitions=N'") from None


def check_partitions(held: dict[int, int], num_partitions: set[int], num_clients: int) -> None:
    """Every partition ``0..num_clients-1`` is held by exactly one node, all of the same split.

    ``held`` maps partition id to node id; ``num_partitions`` are the nodes' ``num-partitions``.
    """
    if num_partitions != {num_clients} or sorted(held) != list(range(num_clients)):
        raise ValueError(
            f"the SuperNodes hold partitions {sorted(held)} of {sorted(num_partitions)}, but the "
            f"experiment has num_clients={num_clients}: start one SuperNode per client with "
            f"--node-config 'partition-id=K num-partitions={num_clients}', K = 0..{num_clients - 1}.")


SECURITY_ENV = "FEDTL_DEPLOY_SECURITY"  # set by deploy/launch.py and local_federation.py


def deployment_security() -> dict[str, str]:
    """The transport and authentication the SuperLink was started with, as its launcher wrote
    them into the environment that Flower's SuperExec and this ServerApp inherit. A SuperLink
    started by hand (plain ``flower-superlink``) is recorded as unknown, never guessed."""
    import os

    text = os.environ.get(SECURITY_ENV)
    if not text:
        return {"transport": "unknown", "node_authentication": "unknown",
                "note": "SuperLink not started by deploy/launch.py or run_local.py"}
    return dict(json.loads(text))

"""fedtl_helpers: the mechanics behind the fedtl book (``import fedtl_helpers as fl``).

Each module holds one concept and its docstring names the chapter that explains it.

Names are imported on first use (PEP 562 module ``__getattr__``): ``fl.run_federated`` works
as before, but ``python -m fedtl_helpers --help`` and the command line's input checks answer
without waiting seconds for TensorFlow, which only the modules that train import. Code imports
a module by its real path, ``fedtl_helpers.<layer>.<module>`` (no import hook: an editor and a
type checker follow it).
"""

from __future__ import annotations

import importlib
from typing import Any

# One folder per layer (see the README's module table). Modules are imported by their real
# path (``from fedtl_helpers.federation.round import run_round``); ``fl.<module>`` (and
# ``from fedtl_helpers import plotting``) still works as an attribute of the package, below.
LAYERS = {
    "core": ("config", "randomness", "history", "storage", "figures"),
    "inputs": ("data", "shapes", "digits", "partitioning"),
    "modeling": ("models", "features", "model_compression"),
    "transforms": ("aggregation", "compression", "privacy", "robust", "secure_agg", "shamir",
                   "server_opt"),
    "federation": ("client", "simulation", "round", "stages", "server", "personalization",
                   "evaluation"),
    "workflow": ("cli", "preflight", "experiments", "cluster", "tuning", "provenance", "results"),
    "teaching": ("notebook", "plotting", "verdict", "transfer", "local_optimizer", "peft"),
}
_MODULES = {m: f"{layer}.{m}" for layer, mods in LAYERS.items() for m in mods}  # "round": "federation.round"

# public name -> the submodule that defines it ("" for a submodule exported under its own name)
_EXPORTS = {
    "check": "", "privacy": "",
    **dict.fromkeys(("Weights", "fedavg", "mean"), "aggregation"),
    **dict.fromkeys(("ClientResult", "LocalTrainer", "client_update"), "client"),
    "ExperimentConfig": "config",
    **dict.fromkeys(("DATASETS", "class_names", "describe", "load_cifar10", "load_dataset"), "data"),
    "History": "history",
    **dict.fromkeys(("build_backbone", "build_head", "build_model", "set_strategy", "updatable_mask"),
                    "models"),
    **dict.fromkeys(("SCHEMES", "label_skew", "partition", "partition_stats"), "partitioning"),
    **dict.fromkeys(("finetune_clients", "interpolate", "run_fedper"), "personalization"),
    **dict.fromkeys(("clip_update", "dp_epsilon", "noise_multiplier_for_epsilon"), "privacy"),
    **dict.fromkeys(("coordinate_median", "krum", "trimmed_mean"), "robust"),
    **dict.fromkeys(("RoundStreams", "ServerState", "Stages", "run_round", "run_rounds"), "round"),
    "build_stages": "stages",
    "secure_aggregate": "secure_agg",
    **dict.fromkeys(("FederatedResult", "Simulation", "run_federated"), "server"),
    **dict.fromkeys(("ServerAdam", "ServerMomentum", "ServerSGD", "make_server_optimizer",
                     "server_update"), "server_opt"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        # Every module stays reachable as ``fl.<module>`` (``fl.plotting``, ``fl.features``),
        # as are the layers and ``check``.
        if name in _MODULES or name in LAYERS or name == "check":
            module = ""
        else:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = importlib.import_module(f".{_MODULES.get(module or name, module or name)}", __name__)
    if module:
        value = getattr(value, name)
    globals()[name] = value  # cached: the next access is a plain attribute lookup
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

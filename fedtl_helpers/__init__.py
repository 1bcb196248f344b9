"""fedtl_helpers: the mechanics behind the fedtl book (``import fedtl_helpers as fl``).

Each module holds one concept and its docstring names the chapter that explains it.

Names are imported on first use (PEP 562 module ``__getattr__``): ``fl.run_federated`` works
as before, but ``python -m fedtl_helpers --help`` and the command line's input checks answer
without waiting seconds for TensorFlow, which only the modules that train import.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any

# One folder per layer (see the README's module table); each module keeps its flat name too,
# ``fedtl_helpers.<module>``, so notebooks, the deployment and users' code are unchanged.
LAYERS = {
    "core": ("config", "randomness", "history", "storage"),
    "inputs": ("data", "shapes", "partitioning"),
    "modeling": ("models", "features", "model_compression"),
    "transforms": ("aggregation", "compression", "privacy", "robust", "secure_agg", "shamir",
                   "server_opt"),
    "federation": ("client", "simulation", "round", "stages", "server", "personalization",
                   "evaluation"),
    "workflow": ("cli", "preflight", "experiments", "cluster", "tuning", "provenance", "results"),
    "teaching": ("notebook", "plotting"),
}
_REAL = {f"{__name__}.{m}": f"{__name__}.{layer}.{m}" for layer, mods in LAYERS.items() for m in mods}


class _FlatNames(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Import ``fedtl_helpers.round`` as the very module ``fedtl_helpers.federation.round``.

    One module object under two names (not a copy): a monkeypatch or a class identity seen
    through either name is the same.
    """

    def find_spec(self, fullname, path=None, target=None):
        if fullname in _REAL:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(_REAL[spec.name])

    def exec_module(self, module):
        pass  # already executed under its real name


if not any(isinstance(f, _FlatNames) for f in sys.meta_path):
    sys.meta_path.insert(0, _FlatNames())

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
    **dict.fromkeys(("RoundStreams", "ServerState", "Stages", "run_round"), "round"),
    "build_stages": "stages",
    "secure_aggregate": "secure_agg",
    **dict.fromkeys(("FederatedResult", "Simulation", "run_federated", "sample_clients"), "server"),
    **dict.fromkeys(("ServerAdam", "ServerMomentum", "ServerSGD", "make_server_optimizer",
                     "server_update"), "server_opt"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        # Every submodule stays reachable as ``fl.<module>`` (``fl.plotting``, ``fl.features``),
        # as when this file imported them all.
        if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
            module = ""
        else:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = importlib.import_module(f".{module or name}", __name__)
    if module:
        value = getattr(value, name)
    globals()[name] = value  # cached: the next access is a plain attribute lookup
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

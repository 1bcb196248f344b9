"""fedtl_helpers: the mechanics behind the fedtl book (``import fedtl_helpers as fl``).

Each module holds one concept and its docstring names the chapter that explains it.
"""

from . import check, privacy
from .aggregation import Weights, add_scaled, fedavg, mean, nbytes, subtract
from .client import ClientResult, LocalTrainer, client_update
from .config import ExperimentConfig
from .data import DATASETS, class_names, describe, load_cifar10, load_dataset
from .history import History
from .models import build_backbone, build_head, build_model, set_strategy, updatable_mask
from .partitioning import SCHEMES, label_skew, partition, partition_stats
from .personalization import finetune_clients, interpolate, run_fedper
from .privacy import clip_update, dp_epsilon, noise_multiplier_for_epsilon
from .robust import coordinate_median, krum, trimmed_mean
from .secure_agg import secure_aggregate
from .server import FederatedResult, Simulation, run_federated, sample_clients
from .server_opt import ServerAdam, ServerMomentum, ServerSGD, make_server_optimizer, server_update

__all__ = [
    "DATASETS", "SCHEMES", "ClientResult", "ExperimentConfig", "FederatedResult", "History",
    "LocalTrainer", "ServerAdam", "ServerMomentum", "ServerSGD", "Simulation", "Weights",
    "add_scaled", "build_backbone", "build_head", "build_model", "check", "class_names",
    "client_update", "clip_update", "coordinate_median", "describe", "dp_epsilon", "fedavg",
    "finetune_clients", "interpolate", "krum", "label_skew", "load_cifar10", "load_dataset",
    "make_server_optimizer", "mean", "nbytes", "noise_multiplier_for_epsilon", "partition",
    "partition_stats", "privacy", "run_federated", "run_fedper", "sample_clients",
    "secure_aggregate", "server_update", "set_strategy", "subtract", "trimmed_mean",
    "updatable_mask",
]

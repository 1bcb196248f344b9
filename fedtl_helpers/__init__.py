"""fedtl_helpers: the mechanics behind the fedtl book (``import fedtl_helpers as fl``).

Each module holds one concept and its docstring names the chapter that explains it.
"""

from . import check, privacy
from .aggregation import Weights, fedavg, mean
from .client import ClientResult, LocalTrainer, client_update
from .config import ExperimentConfig
from .data import DATASETS, class_names, describe, load_cifar10, load_dataset
from .history import History
from .models import build_backbone, build_head, build_model, set_strategy, updatable_mask
from .partitioning import SCHEMES, label_skew, partition, partition_stats
from .personalization import finetune_clients, interpolate, run_fedper
from .privacy import clip_update, dp_epsilon, noise_multiplier_for_epsilon
from .robust import coordinate_median, krum, trimmed_mean
from .round import RoundStreams, ServerState, Stages, run_round
from .secure_agg import secure_aggregate
from .server import FederatedResult, Simulation, run_federated, sample_clients
from .server_opt import ServerAdam, ServerMomentum, ServerSGD, make_server_optimizer, server_update
from .stages import build_stages

__all__ = [
    "DATASETS", "SCHEMES", "ClientResult", "ExperimentConfig", "FederatedResult", "History",
    "LocalTrainer", "RoundStreams", "ServerAdam", "ServerMomentum", "ServerSGD", "ServerState",
    "Simulation", "Stages", "Weights", "build_backbone", "build_head", "build_model",
    "build_stages", "check", "class_names", "client_update", "clip_update", "coordinate_median",
    "describe", "dp_epsilon", "fedavg", "finetune_clients", "interpolate", "krum", "label_skew",
    "load_cifar10", "load_dataset", "make_server_optimizer", "mean", "noise_multiplier_for_epsilon",
    "partition", "partition_stats", "privacy", "run_federated", "run_fedper", "run_round",
    "sample_clients", "secure_aggregate", "server_update", "set_strategy", "trimmed_mean",
    "updatable_mask",
]

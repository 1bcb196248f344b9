"""Experiment configuration: one frozen dataclass, validated before anything runs.

Chapter: "Federated learning overview" (the knobs of a round) and "Client fine-tuning"
(backbone, weights, strategy).

Every invalid value raises ``ValueError`` naming the field, the value and what is allowed,
*before* any data is loaded or any model is built, so a typo in a papermill grid fails in
milliseconds instead of after an hour of training.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

DATASET_NAMES = ("shapes", "digits", "cifar10")  # mirrors data.DATASETS; kept here so config needs no TF
FIXED_SPLIT_SIZES = {"digits": (1_297, 500)}  # mirrors digits.N_TRAIN, N_TEST: sizes checked up front
PARTITION_SCHEMES = ("iid", "strided", "dirichlet", "shards")  # mirrors partitioning.SCHEMES
BACKBONES = ("builtin_cnn", "resnet50", "mobilenet_v2")
NAMED_WEIGHTS = ("builtin", "imagenet")
STRATEGIES = ("head", "partial", "full")
# Parameter-efficient strategies (chapter "Parameter-efficient federated fine-tuning"):
# low-rank adapters, biases + normalisation, and head-then-fine-tune (LP-FT).
STRATEGIES += ("lora", "bitfit", "lpft")
STRATEGIES += ("ffa_lora",)  # LoRA with A frozen: only B trains and is averaged (exact aggregation)
LPFT_THEN = ("partial", "full")  # what LP-FT trains after its head-only rounds
OPTIMIZERS = ("adam", "sgd", "sgd_momentum")  # mirrors client._make_optimizer; momentum 0.9
AGGREGATORS = ("fedavg", "mean")  # mean: every client counts the same, whatever its size
AGGREGATORS += ("median", "trimmed_mean", "krum")  # robust rules, mirrors robust.RULES
ATTACKS = ("none", "sign_flip", "scale", "nan")  # mirrors robust.ATTACKS
COMPRESSIONS = ("none", "float16", "quantize", "topk", "prune")  # mirrors compression.METHODS
CLIENT_SAMPLINGS = ("fixed", "poisson")  # mirrors privacy.SAMPLINGS
DP_ACCOUNTANTS = ("rdp", "pld")  # mirrors privacy.ACCOUNTANTS
SERVER_OPTIMIZERS = ("sgd", "momentum", "adam")  # mirrors server_opt.make_server_optimizer
RANDOMNESS_MODES = ("simulation", "secure")  # mirrors randomness.MODES


def _fail(field: str, value: Any, allowed: str) -> None:
    raise ValueError(f"ExperimentConfig.{field}={value!r} is invalid: allowed {allowed}.")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(name, value, f"an integer >= {minimum}")


def _check_positive(name: str, value: Any) -> None:
    # ``0 < value < inf`` is False for NaN too: an infinite learning rate or concentration
    # would pass ``value > 0`` and surface rounds later as a NaN loss.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        _fail(name, value, "a number > 0 (finite)")


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        _fail(name, value, f"one of {', '.join(map(repr, choices))}")


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything a federated transfer-learning run depends on (with the seed).

    Classroom defaults run in about a minute on 2 CPU cores. Full-size values (the article's
    case study): ``dataset="cifar10", n_train=None, n_test=None, num_clients=5,
    partition="strided", rounds=10, local_epochs=5, backbone="resnet50", weights="imagenet",
    input_size=96``.

    Parameters
    ----------
    dataset, data_dir, n_train, n_test
        Which data (``"shapes"`` is the embedded offline default; ``"digits"`` real handwritten
        digits, offline, 1,297 / 500 images) and how much of it; ``None`` sizes mean the
        dataset's own default (all of CIFAR-10 or of the digits).
    num_clients, partition, alpha, shards_per_client
        How the training set is split across clients (see ``partitioning.partition``).
    rounds, client_fraction, local_epochs, batch_size, learning_rate, client_optimizer
        The federated schedule and each client's local training. ``client_optimizer`` is
        ``"adam"`` (the default, chosen by ``benchmarks/bench_optimizer.py``, chapter "FedAvg"),
        ``"sgd"`` or ``"sgd_momentum"`` (momentum 0.9); its state is reset at the start of every
        client's local training in every round.
    server_lr
        Server learning rate applied to the aggregated delta; 1.0 is plain FedAvg.
    aggregator
        ``"fedavg"`` (weighted by example counts, the article's rule), ``"mean"`` (unweighted), or
        a robust rule against malicious clients: ``"median"``, ``"trimmed_mean"``, ``"krum"``.
    holdout_fraction
        Share of each client's data kept aside (never trained on) to evaluate the global model
        per client; 0 keeps none.
    backbone, weights, strategy, unfreeze_blocks, partial_lr_scale, input_size
        The model: backbone name, its initial weights (``"builtin"``, ``"imagenet"``, a path
        to a ``.weights.h5`` file, or ``None`` for random init), which part clients train,
        and an optional input resize for ImageNet backbones.
    feature_cache
        With ``strategy="head"``, compute each client's frozen-backbone features once and
        train only the head on them (same model, much faster).
    compression, quantize_bits, stochastic_rounding, sparsity, error_feedback, sparse_value_bits
        How each client encodes its update for the uplink (see ``compression.Uplink``):
        ``"none"`` (float32), ``"float16"``, ``"quantize"`` (``quantize_bits`` per value, with
        unbiased stochastic rounding), ``"topk"`` (keep the ``sparsity`` fraction of largest
        values; ``sparse_value_bits=8`` quantises the kept values) or ``"prune"`` (keep the
        ``sparsity`` fraction, forget the rest). ``error_feedback`` is top-k's memory of the
        unsent rest: ``None`` (default) means on for ``"topk"``, ``False`` turns it off, and
        ``True`` with any other compression is refused (nothing else has a rest to remember;
        ``uses_error_feedback`` says what runs).
    dp_clip, dp_noise_multiplier, dp_delta, client_sampling, dp_accountant
        Client-level differential privacy (DP-FedAvg, see ``privacy``): ``dp_clip=None`` is
        off; else each client's update is clipped to L2 norm ``dp_clip``, Gaussian noise of std
        ``dp_noise_multiplier * dp_clip`` is added to the sum, which is divided by the expected
        number of clients (needs ``aggregator="mean"`` and ``compression="none"``). Epsilon at
        ``dp_delta`` is reported per round by ``dp_accountant`` (``"rdp"`` or ``"pld"``).
        ``client_sampling``: ``"fixed"`` (``clients_per_round`` without replacement) or
        ``"poisson"`` (each client independently with probability ``client_fraction``).
        ``dp_delta`` must be below ``1 / num_clients`` (else "release one client's data
        outright" would satisfy the guarantee).
    randomness
        Where DP noise, client sampling, shuffling and stochastic rounding come from (see
        ``randomness``): ``"simulation"`` (derived from ``seed``: reproducible, and **no
        privacy**, since the seed is published with the results) or ``"secure"`` (fresh OS
        randomness: not reproducible; the only mode a deployment accepts).
    quantity_alpha
        Quantity skew for ``partition="iid"``: client sizes drawn from ``Dirichlet(quantity_alpha)``
        (small: a few large clients and many small ones); ``None`` gives near-equal sizes.
    prox_mu
        FedProx's proximal weight: each client minimises ``loss + prox_mu/2 * ||w - w_global||^2``;
        0 is plain FedAvg.
    server_optimizer, server_momentum, server_beta1, server_beta2, server_tau
        How the aggregate moves the global model (see ``server_opt``): ``"sgd"`` (FedAvg,
        ``server_lr``), ``"momentum"`` (FedAvgM) or ``"adam"`` (FedAdam, Reddi et al. 2021;
        ``server_tau`` is its epsilon; use a small ``server_lr`` such as 0.01 to 0.1).
    secure_aggregation, secagg_threshold, secagg_clip
        Aggregate through the secure aggregation protocol (``secure_agg``): the server learns
        only the (weighted) sum, quantised to 32-bit fixed point after clipping every value to
        ``[-secagg_clip, secagg_clip]``; ``secagg_threshold`` shares (default: a majority of the
        clients per round) rebuild a dropped client's masks.
    trim_fraction, krum_byzantine, krum_multi
        Parameters of the robust aggregators ``"trimmed_mean"`` (fraction trimmed at each end)
        and ``"krum"`` (assumed number of byzantine clients; ``krum_multi > 1`` is multi-Krum).
    attack, malicious_fraction, attack_scale
        The malicious-clients experiment: a fixed, seeded ``malicious_fraction`` of the clients
        send ``-attack_scale * delta`` (``"sign_flip"``), ``attack_scale * delta``
        (``"scale"``) or NaN (``"nan"``: the round drops such an update and records it in the
        row's ``dropped``) instead of their delta.
    bn_recalibration
        Before every evaluation, the clients recompute the BatchNorm statistics of the new
        global weights on their training data and the server pools them
        (``models.recalibrate_batchnorm_federated``; only layers that train). The model is
        evaluated with statistics that describe its weights instead of moving averages that
        lag them (chapter "Pretrained initialisation of the global model"). Training is
        unchanged; simulation only.
    seed
        Seeds data generation, partitioning, client sampling, shuffling and initialisation.
    """

    dataset: str = "shapes"
    data_dir: str | None = None
    n_train: int | None = 5_000
    n_test: int | None = 2_000
    num_clients: int = 5
    partition: str = "iid"
    alpha: float | None = None
    shards_per_client: int = 2
    rounds: int = 5
    client_fraction: float = 1.0
    local_epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 1e-3
    client_optimizer: str = "adam"
    server_lr: float = 1.0
    aggregator: str = "fedavg"
    holdout_fraction: float = 0.0
    backbone: str = "builtin_cnn"
    weights: str | None = "builtin"
    strategy: str = "full"
    unfreeze_blocks: int = 1
    partial_lr_scale: float = 0.1
    input_size: int | None = None
    feature_cache: bool = True
    # --- communication efficiency (chapter "Communication efficiency")
    compression: str = "none"
    quantize_bits: int = 8
    stochastic_rounding: bool = True
    sparsity: float = 0.01
    error_feedback: bool | None = None  # None: on for compression="topk" (uses_error_feedback)
    sparse_value_bits: int = 32
    # --- differential privacy (chapter "Differential privacy")
    dp_clip: float | None = None  # None: no DP; else clip each client's update to this L2 norm
    dp_noise_multiplier: float = 1.0
    dp_delta: float = 1e-5
    client_sampling: str = "fixed"
    dp_accountant: str = "rdp"
    randomness: str = "simulation"  # "secure": OS randomness for noise and sampling (no seed)
    # --- non-IID data and personalisation (chapter "Non-IID data and personalisation")
    quantity_alpha: float | None = None  # Dirichlet concentration of client sizes (partition="iid")
    prox_mu: float = 0.0  # FedProx: mu/2 * ||w - w_global||^2 added to every client's loss
    server_optimizer: str = "sgd"  # "sgd" (FedAvg), "momentum" (FedAvgM), "adam" (FedAdam)
    server_momentum: float = 0.9
    server_beta1: float = 0.9
    server_beta2: float = 0.99
    server_tau: float = 1e-3
    # --- secure aggregation and robustness (chapter "Secure aggregation and robustness")
    secure_aggregation: bool = False
    secagg_threshold: int | None = None
    secagg_clip: float = 1.0
    trim_fraction: float = 0.2
    krum_byzantine: int = 1
    krum_multi: int = 1
    attack: str = "none"
    malicious_fraction: float = 0.0
    attack_scale: float = 10.0
    # --- parameter-efficient fine-tuning (chapter "Parameter-efficient federated fine-tuning")
    lora_rank: int = 4
    lpft_switch_round: int = 2  # LP-FT: rounds 1..lpft_switch_round train the head only
    lpft_then: str = "full"
    feature_skew: bool = False  # each client sees its images through its own style transform
    # --- BatchNorm statistics (chapter "Pretrained initialisation of the global model")
    bn_recalibration: bool = False
    # --- (other chapters add their fields below, each in its own block)
    seed: int = 0

    def __post_init__(self) -> None:
        _check_choice("dataset", self.dataset, DATASET_NAMES)
        if self.data_dir is not None and not isinstance(self.data_dir, str):
            _fail("data_dir", self.data_dir, "None or a path string")
        for name in ("n_train", "n_test"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), 1)
        for name, most in zip(("n_train", "n_test"), FIXED_SPLIT_SIZES.get(self.dataset, ()), strict=False):
            if getattr(self, name) is not None and getattr(self, name) > most:
                _fail(name, getattr(self, name), f"None (all) or an integer in [1, {most}] with "
                      f"dataset={self.dataset!r} (its fixed split)")
        _check_int("num_clients", self.num_clients, 1)
        if self.n_train is not None and self.num_clients > self.n_train:
            _fail("num_clients", self.num_clients, f"at most n_train={self.n_train} (one example each)")
        _check_choice("partition", self.partition, PARTITION_SCHEMES)
        if self.partition == "dirichlet":
            if self.alpha is None:
                _fail("alpha", self.alpha, "a number > 0 (required when partition='dirichlet')")
            _check_positive("alpha", self.alpha)
        elif self.alpha is not None:
            _fail("alpha", self.alpha, "None unless partition='dirichlet'")
        _check_int("shards_per_client", self.shards_per_client, 1)
        _check_int("rounds", self.rounds, 0)
        f = self.client_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1:
            _fail("client_fraction", f, "a number in (0, 1]")
        _check_int("local_epochs", self.local_epochs, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_positive("learning_rate", self.learning_rate)
        _check_choice("client_optimizer", self.client_optimizer, OPTIMIZERS)
        _check_positive("server_lr", self.server_lr)
        _check_choice("aggregator", self.aggregator, AGGREGATORS)
        h = self.holdout_fraction
        if isinstance(h, bool) or not isinstance(h, (int, float)) or not 0 <= h < 1:
            _fail("holdout_fraction", h, "a number in [0, 1)")
        _check_choice("backbone", self.backbone, BACKBONES)
        self._check_weights()
        _check_choice("strategy", self.strategy, STRATEGIES)
        _check_int("unfreeze_blocks", self.unfreeze_blocks, 1)
        s = self.partial_lr_scale
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < s <= 1:
            _fail("partial_lr_scale", s, "a number in (0, 1]")
        if self.input_size is not None:
            _check_int("input_size", self.input_size, 32)
        for name in ("feature_cache", "stochastic_rounding"):
            if not isinstance(getattr(self, name), bool):
                _fail(name, getattr(self, name), "True or False")
        # --- communication efficiency
        _check_choice("compression", self.compression, COMPRESSIONS)
        if self.error_feedback is not None and not isinstance(self.error_feedback, bool):
            _fail("error_feedback", self.error_feedback, "True, False or None (on for 'topk')")
        if self.error_feedback and self.compression != "topk":  # it would be silently ignored
            _fail("error_feedback", True, f"None or False with compression={self.compression!r} "
                  "(error feedback remembers what top-k left unsent; only compression='topk' "
                  "uses it, and None turns it on there)")
        _check_choice("quantize_bits", self.quantize_bits, (2, 4, 8))
        f = self.sparsity
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1:
            _fail("sparsity", f, "a fraction of values to keep in (0, 1]")
        _check_choice("sparse_value_bits", self.sparse_value_bits, (8, 16, 32))
        # --- differential privacy
        self._check_privacy()
        # --- non-IID data and personalisation
        self._check_noniid()
        # --- secure aggregation and robustness
        self._check_secure_and_robust()
        # --- parameter-efficient fine-tuning
        self._check_peft()
        # --- (other chapters validate their fields below, each in its own block)
        _check_int("seed", self.seed, 0)

    def _check_privacy(self) -> None:
        if self.dp_clip is not None:
            _check_positive("dp_clip", self.dp_clip)
        z = self.dp_noise_multiplier
        if isinstance(z, bool) or not isinstance(z, (int, float)) or not 0 <= z < float("inf"):
            _fail("dp_noise_multiplier", z, "a finite number >= 0")
        d = self.dp_delta
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 < d < 1:
            _fail("dp_delta", d, "a number in (0, 1), e.g. 1e-5 (well below 1 / num_clients)")
        _check_choice("client_sampling", self.client_sampling, CLIENT_SAMPLINGS)
        _check_choice("dp_accountant", self.dp_accountant, DP_ACCOUNTANTS)
        _check_choice("randomness", self.randomness, RANDOMNESS_MODES)
        if self.dp_clip is None:
            return
        # With delta >= 1/N, a mechanism that publishes one random client's data in full is
        # (0, delta)-DP: the guarantee would allow exactly what it is meant to prevent.
        if not d < 1 / self.num_clients:
            _fail("dp_delta", d, f"a number below 1 / num_clients = {1 / self.num_clients:.3g} when "
                  "dp_clip is set (usually much smaller, e.g. 1e-5)")
        # The sensitivity analysis needs an unweighted sum over a fixed denominator: weighting by
        # n_k lets one big client move the mean by more than dp_clip / expected clients.
        if self.aggregator != "mean":
            _fail("aggregator", self.aggregator, "'mean' when dp_clip is set (DP-FedAvg sums the "
                  "clipped updates unweighted over the expected number of clients; a weighted or "
                  "robust rule breaks the sensitivity bound the noise is calibrated to)")
        # What the server receives must be the clipped update: quantisation rounding or top-k's
        # error-feedback residuals can push its norm above dp_clip.
        if self.compression != "none":
            _fail("compression", self.compression, "'none' when dp_clip is set (a compressed "
                  "update may exceed the clip norm, which voids the privacy guarantee)")
        if self.dp_accountant == "pld" and self.client_sampling == "fixed":
            _fail("dp_accountant", self.dp_accountant, "'rdp' with client_sampling='fixed' "
                  "(dp-accounting's PLD accountant has no sampling-without-replacement event)")

    def _check_noniid(self) -> None:
        if self.quantity_alpha is not None:
            if self.partition != "iid":
                _fail("quantity_alpha", self.quantity_alpha,
                      "None unless partition='iid' (label-skewed partitions set their own sizes)")
            _check_positive("quantity_alpha", self.quantity_alpha)
        if (self.partition == "shards" and self.n_train is not None
                and self.num_clients * self.shards_per_client > self.n_train):
            _fail("shards_per_client", self.shards_per_client,
                  f"at most n_train / num_clients = {self.n_train // self.num_clients} "
                  f"(num_clients * shards_per_client shards of at least one example each)")
        m = self.prox_mu
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 <= m < float("inf"):
            _fail("prox_mu", m, "a finite number >= 0 (0 is FedAvg; FedProx uses 0.001 to 1)")
        _check_choice("server_optimizer", self.server_optimizer, SERVER_OPTIMIZERS)
        for name in ("server_momentum", "server_beta1", "server_beta2"):
            b = getattr(self, name)
            if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 <= b < 1:
                _fail(name, b, "a number in [0, 1)")
        _check_positive("server_tau", self.server_tau)

    def _check_secure_and_robust(self) -> None:
        m = self.clients_per_round
        if not isinstance(self.secure_aggregation, bool):
            _fail("secure_aggregation", self.secure_aggregation, "True or False")
        if self.secure_aggregation:
            if m < 2:
                _fail("secure_aggregation", True, f"False with {m} client per round (the sum of one update "
                      "is the update): raise num_clients or client_fraction")
            if self.aggregator not in ("fedavg", "mean"):
                _fail("aggregator", self.aggregator, "'fedavg' or 'mean' with secure_aggregation=True "
                      "(the server sees only the sum, so it cannot take a median or pick by distance)")
            if self.compression != "none":
                _fail("compression", self.compression, "'none' with secure_aggregation=True "
                      "(the masked updates are 32-bit integers)")
            if self.dp_clip is not None:
                _fail("secure_aggregation", True, "False when dp_clip is set (here the server adds "
                      "the DP noise to the sum it sees; with secure aggregation the clients would have "
                      "to add it, which is distributed DP, not implemented)")
            # Poisson rounds vary in size and can bring one client (whose "sum" is its update).
            if self.client_sampling != "fixed":
                _fail("client_sampling", self.client_sampling, "'fixed' with secure_aggregation=True "
                      "(a Poisson round can sample fewer than two clients, or fewer than the threshold)")
        t = self.secagg_threshold
        if t is not None:
            _check_int("secagg_threshold", t, 2)
            # A majority: below it the server can name t survivors, call the rest dropped, and
            # unmask a small subtotal (t=2 of 10: two clients' sum); above it, with each client
            # answering once, a round allows a single unmasking of a majority.
            if not m // 2 + 1 <= t <= m:
                _fail("secagg_threshold", t, f"None or an integer in [2, {m}] (the clients per round) "
                      f"that is a majority, > {m} / 2, i.e. in [{max(2, m // 2 + 1)}, {m}]")
        _check_positive("secagg_clip", self.secagg_clip)
        b = self.trim_fraction
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 <= b < 0.5:
            _fail("trim_fraction", b, "a number in [0, 0.5)")
        # Below 0.5 something is always left to average; but trimming nothing is the plain mean.
        if self.aggregator == "trimmed_mean" and int(b * m + 1e-9) == 0:
            _fail("trim_fraction", b, f"a number in [{1 / m:.3g}, 0.5) with {m} clients per round "
                  "(floor(trim_fraction * clients) values are trimmed at each end; 0 is the plain mean)")
        _check_int("krum_byzantine", self.krum_byzantine, 0)
        _check_int("krum_multi", self.krum_multi, 1)
        if self.aggregator == "krum":
            f = self.krum_byzantine
            if m <= 2 * f + 2:
                _fail("krum_byzantine", f, f"at most {(m - 3) // 2} with {m} clients per round "
                      "(Krum needs clients per round > 2 * krum_byzantine + 2)")
            if self.krum_multi > m:
                _fail("krum_multi", self.krum_multi, f"an integer in [1, {m}] (the clients per round)")
        _check_choice("attack", self.attack, ATTACKS)
        mf = self.malicious_fraction
        if isinstance(mf, bool) or not isinstance(mf, (int, float)) or not 0 <= mf < 1:
            _fail("malicious_fraction", mf, "a number in [0, 1)")
        if (self.attack == "none") != (round(mf * self.num_clients) == 0):
            _fail("malicious_fraction", mf, f"0 when attack='none', and > 0 with at least one malicious "
                  f"client (round(malicious_fraction * {self.num_clients}) >= 1) otherwise")
        _check_positive("attack_scale", self.attack_scale)

    def _check_peft(self) -> None:
        _check_int("lora_rank", self.lora_rank, 1)
        _check_int("lpft_switch_round", self.lpft_switch_round, 1)
        _check_choice("lpft_then", self.lpft_then, LPFT_THEN)
        if not isinstance(self.feature_skew, bool):
            _fail("feature_skew", self.feature_skew, "True or False")
        if not isinstance(self.bn_recalibration, bool):
            _fail("bn_recalibration", self.bn_recalibration, "True or False")
        if self.bn_recalibration and self.backbone != "builtin_cnn":
            _fail("bn_recalibration", self.bn_recalibration, "False with backbone="
                  f"{self.backbone!r} (recalibration supports builtin_cnn, whose BatchNorm layers "
                  "are the backbone's own)")
        if self.strategy != "lpft":
            return
        # LP-FT changes, at the switch round, which tensors clients send: state kept per sent
        # tensor across rounds would no longer fit the new update's shapes.
        if self.server_optimizer != "sgd":
            _fail("server_optimizer", self.server_optimizer, "'sgd' with strategy='lpft' (momentum "
                  "and Adam keep state per sent tensor, and LP-FT changes the sent tensors at "
                  "lpft_switch_round)")
        if self.uses_error_feedback:
            _fail("error_feedback", True, "False with strategy='lpft' and "
                  "compression='topk' (None, the default, turns it on for top-k; the residuals "
                  "are kept per sent tensor, and LP-FT changes the sent tensors at lpft_switch_round)")

    def _check_weights(self) -> None:
        w = self.weights
        if w is None:
            return
        if not isinstance(w, str) or not w:
            _fail("weights", w, "'builtin', 'imagenet', a path to a .weights.h5 file, or None")
        if w == "builtin" and self.backbone != "builtin_cnn":
            _fail("weights", w, f"'imagenet', a path or None for backbone={self.backbone!r} "
                  "('builtin' weights exist only for backbone='builtin_cnn')")
        if w == "imagenet" and self.backbone == "builtin_cnn":
            _fail("weights", w, "'builtin', a path or None for backbone='builtin_cnn' "
                  "(ImageNet weights exist only for Keras applications)")
        if w not in NAMED_WEIGHTS and not w.endswith(".weights.h5"):
            _fail("weights", w, "'builtin', 'imagenet', a path ending in .weights.h5, or None")

    @property
    def clients_per_round(self) -> int:
        """Number of clients sampled each round: ``max(1, round(fraction * num_clients))``."""
        return max(1, round(self.client_fraction * self.num_clients))

    def describe(self) -> str:
        """One line naming the data and weights, printed with every result."""
        weights = "random init" if self.weights is None else f"weights={self.weights}"
        return (f"dataset={self.dataset}, backbone={self.backbone} ({weights}), "
                f"strategy={self.strategy}, {self.num_clients} clients ({self.partition}), "
                f"seed={self.seed}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def uses_error_feedback(self) -> bool:
        """Whether the uplink runs top-k's error feedback (``error_feedback`` resolved)."""
        return self.compression == "topk" and self.error_feedback is not False

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ExperimentConfig:
        """Build from a dict, rejecting unknown keys by name (typos in grids fail loudly).

        A dict saved before ``error_feedback`` became ``None`` by default (a checkpoint's or a
        History's config) has ``error_feedback=True`` with every compression: with one other
        than ``"topk"`` it was ignored, and it loads as ``None``.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"ExperimentConfig has no field(s) {unknown}; known fields: {sorted(known)}")
        if values.get("error_feedback") is True and values.get("compression", "none") != "topk":
            values = {**values, "error_feedback": None}
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def comparable(values: dict[str, Any]) -> dict[str, Any]:
    """A config dict with ``error_feedback`` resolved to what runs (``True``/``False``).

    Two configs that run the same uplink compare equal, whichever way they spell it: ``None``
    and ``True`` with ``"topk"``, and the ``True`` an older checkpoint saved with another
    compression (where it was ignored) and today's ``None``. Used by ``storage.check_resume``.
    """
    if "error_feedback" not in values:
        return values
    return {**values, "error_feedback": values.get("compression", "none") == "topk"
            and values["error_feedback"] is not False}


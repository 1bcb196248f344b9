"""``build_stages(config)``: the one place that reads the config for the round.

Chapter: "Federated learning overview". Every concept module (privacy, robust, compression,
secure aggregation, server optimisers) takes plain arguments; this module picks, from the
flat ``ExperimentConfig``, which of them each stage of ``round.run_round`` calls and with what.
``refusals`` lists what the Flower deployment cannot run, naming the field; it needs neither
Keras nor dp-accounting, so the launcher answers in a fraction of a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from ..core import randomness
from ..core.config import ExperimentConfig
from ..transforms import aggregation, compression, robust, secure_agg
from ..transforms.aggregation import Weights
from ..transforms.compression import Uplink
from ..transforms.server_opt import make_server_optimizer

if TYPE_CHECKING:
    from .round import ClientMessage, RoundStreams, Stages, Summed

# ``privacy`` (dp-accounting, seconds) and ``round`` (Keras, through the client update) are
# imported where the round is built, not here: ``refusals`` answers the command lines'
# "can this path run it?" before anything heavy is loaded, as their fast start promises.


# ------------------------------------------------------------------ sample
def fixed_sample(rng: np.random.Generator, num_clients: int, k: int) -> list[int]:
    """``k`` distinct clients, sorted (sampling without replacement)."""
    return sorted(rng.choice(num_clients, size=k, replace=False).tolist())


@dataclass(frozen=True)
class FixedSample:
    """The sample stage: ``k`` of ``num_clients`` clients every round (``fixed_sample``)."""

    num_clients: int
    k: int

    def __call__(self, rng: np.random.Generator) -> list[int]:
        return fixed_sample(rng, self.num_clients, self.k)


@dataclass(frozen=True)
class PoissonSample:
    """The sample stage under DP's Poisson accounting: each client with probability ``rate``."""

    num_clients: int
    rate: float

    def __call__(self, rng: np.random.Generator) -> list[int]:
        from ..transforms import privacy

        return privacy.poisson_sample(rng, self.num_clients, self.rate)


# ------------------------------------------------------------------ client side
def _no_attack(client: int, delta: Weights) -> Weights:
    return delta


@dataclass(frozen=True)
class Attack:
    """The attack stage: the ``malicious`` clients send ``robust.poison(delta, kind, scale)``."""

    malicious: frozenset[int]
    kind: str
    scale: float

    def __call__(self, client: int, delta: Weights) -> Weights:
        return robust.poison(delta, self.kind, self.scale) if client in self.malicious else delta


@dataclass(frozen=True)
class Clip:
    """DP's client-side stage: the update scaled to L2 norm at most ``clip``."""

    clip: float

    def __call__(self, delta: Weights) -> Weights:
        from ..transforms import privacy

        return privacy.clip_update(delta, self.clip)


# ------------------------------------------------------------------ aggregate
# Each aggregate stage is called as ``aggregate(deltas, counts, like, streams)``: the decoded
# updates in the order of the sampled clients, their example counts, tensors shaped as one
# update (for a round nobody took part in) and the round's streams (its number and DP noise).
def _zeros(like: Weights) -> Weights:
    return [np.zeros_like(t) for t in like]


@dataclass(frozen=True)
class WeightedMean:
    """FedAvg (weighted by ``n_k``) or, ``weighted=False``, the plain mean; zeros when nobody
    took part."""

    weighted: bool

    def __call__(self, deltas: list[Weights], counts: list[int], like: Weights,
                 streams: RoundStreams) -> Weights:
        if not deltas:
            return _zeros(like)
        return aggregation.fedavg(deltas, counts if self.weighted else [1] * len(deltas))


@dataclass(frozen=True)
class SecureSum:
    """Secure aggregation in process (``Stages.secure``): the clients mask their updates with
    the course's protocol (``secure_agg.secure_aggregate``: masked 32-bit integers, keys bound
    to the round's number) and the server unmasks only their weighted mean, a ``round.Summed``,
    as the deployment's SecAgg+ gives it over the network.

    Each client refuses its own non-finite update before masking (a masked NaN would be
    invisible and spoil the sum): it shares its keys but sends no input, a dropout the others'
    shares recover from; if every update is non-finite the run stops as a diverged run does.
    """

    weighted: bool
    threshold: int | None
    clip: float

    def __call__(self, messages: list[ClientMessage], streams: RoundStreams) -> Summed:
        from .round import Summed, finite_updates

        deltas = [compression.decode(m.encoded) for m in messages]  # each client's own update
        _, _, refused = finite_updates(deltas, messages, streams.round)  # raises if all diverged
        gone = [i for i, m in enumerate(messages) if m.client in refused]
        inputs = [[np.zeros_like(t) for t in d] if i in gone else d for i, d in enumerate(deltas)]
        res = secure_agg.secure_aggregate(
            inputs, [m.num_examples if self.weighted else 1 for m in messages],
            threshold=self.threshold, clip=self.clip, round_id=streams.round, drop_before_upload=gone)
        kept = [messages[i] for i in res.survivors]
        return Summed(mean=res.mean, clients=[m.client for m in kept], dropped=refused,
                      num_examples=[m.num_examples for m in kept],
                      train_losses=[m.train_loss for m in kept],
                      bytes_up=res.nbytes(direction="up"), bytes_down=res.nbytes(direction="down"),
                      received=[m.client for m in messages])


@dataclass(frozen=True)
class RobustRule:
    """A robust rule (``robust.aggregate``); the counts are not used: an attacker could lie."""

    rule: str
    trim_fraction: float
    byzantine: int
    multi: int

    def __call__(self, deltas: list[Weights], counts: list[int], like: Weights,
                 streams: RoundStreams) -> Weights:
        if not deltas:
            return _zeros(like)
        return robust.aggregate(self.rule, deltas, trim_fraction=self.trim_fraction,
                                byzantine=self.byzantine, multi=self.multi)


@dataclass(frozen=True)
class DPNoisyMean:
    """DP-FedAvg: noisy sum of the clipped updates over the *expected* number of clients
    (``denominator``), with the round's noise stream; the counts are not used (unweighted)."""

    clip: float
    noise_multiplier: float
    denominator: float

    def __call__(self, deltas: list[Weights], counts: list[int], like: Weights,
                 streams: RoundStreams) -> Weights:
        from ..transforms import privacy

        return privacy.noisy_mean(deltas, like, self.clip, self.noise_multiplier, self.denominator,
                                  streams.noise())


def _no_privacy_columns(rounds: int) -> dict[str, float]:
    return {}


def _epsilon_column(rounds: int, **accounting) -> dict[str, float]:
    """The History column ``epsilon``: spent after ``rounds`` rounds, at the config's delta."""
    from ..transforms import privacy

    return {"epsilon": privacy.dp_epsilon(rounds=rounds, **accounting)}


# ------------------------------------------------------------------ build
def build_stages(config: ExperimentConfig) -> Stages:
    """The round's stages for ``config``; nothing else reads the config for the round.

    The config's cross-field rules (e.g. DP needs ``aggregator="mean"`` and no compression;
    secure aggregation only sums) make each choice below unambiguous.
    """
    from ..transforms import privacy
    from .round import ClientStages, Stages

    c = config
    if c.client_sampling == "poisson":
        sample = PoissonSample(c.num_clients, c.client_fraction)
    else:
        sample = FixedSample(c.num_clients, c.clients_per_round)

    attack = _no_attack
    if c.attack != "none":
        attack = Attack(robust.malicious_clients(c.num_clients, c.malicious_fraction, c.seed),
                        c.attack, c.attack_scale)
    clip = Clip(c.dp_clip) if c.dp_clip is not None else None
    client = ClientStages(clip=clip, attack=attack)

    weighted = c.aggregator == "fedavg"
    privacy_columns, privacy_meta = _no_privacy_columns, None
    if c.dp_clip is not None:
        aggregate = DPNoisyMean(c.dp_clip, c.dp_noise_multiplier,
                                privacy.expected_clients(c.num_clients, c.client_fraction,
                                                         c.client_sampling))
        privacy_columns = partial(_epsilon_column, noise_multiplier=c.dp_noise_multiplier,
                                  sampling_rate=c.client_fraction, delta=c.dp_delta,
                                  sampling=c.client_sampling, accountant=c.dp_accountant,
                                  num_clients=c.num_clients)
        privacy_meta = {"delta": c.dp_delta, "accountant": c.dp_accountant,
                        "sampling": c.client_sampling}
    elif c.aggregator in robust.RULES:
        aggregate = RobustRule(c.aggregator, c.trim_fraction, c.krum_byzantine, c.krum_multi)
    else:  # with secure aggregation, the protocol computes this mean from masked inputs
        aggregate = WeightedMean(weighted)
    secure = SecureSum(weighted, c.secagg_threshold, c.secagg_clip) if c.secure_aggregation else None

    return Stages(
        seed=c.seed, sample=sample, client=client, aggregate=aggregate,
        make_server_optimizer=partial(make_server_optimizer, c.server_optimizer, c.server_lr,
                                      momentum=c.server_momentum, beta1=c.server_beta1,
                                      beta2=c.server_beta2, tau=c.server_tau),
        make_uplink=partial(Uplink, c.compression, bits=c.quantize_bits,
                            stochastic=c.stochastic_rounding, fraction=c.sparsity,
                            error_feedback=c.uses_error_feedback, value_bits=c.sparse_value_bits),
        privacy_columns=privacy_columns, privacy_meta=privacy_meta,
        randomness=c.randomness, secure=secure)


# ------------------------------------------------------------------ what a path cannot run
DEPLOYMENT = "the Flower deployment"
PERSONAL_PATHS = ("FedPer", "FedBN")  # the personalised loops (personalization.py)
# SecAgg+ in the deployment: each survivor's update stays hidden by >= 2 pairwise 32-bit seeds
SECAGG_MIN_THRESHOLD = 3
PEFT_NOT_DEPLOYED = ("lora", "ffa_lora", "bitfit", "lpft")  # strategies only the simulation runs


def refusals(config: ExperimentConfig, path: str) -> list[str]:
    """Why ``path`` cannot run ``config``: one message per field it would otherwise ignore.

    The Flower deployment (``DEPLOYMENT``) refuses

    - ``randomness="simulation"``: real clients need ``"secure"`` (OS randomness for the
      client sample and the DP noise; a seed would let anyone regenerate them);
    - ``strategy`` in ``PEFT_NOT_DEPLOYED`` (``"lora"``, ``"ffa_lora"``, ``"bitfit"``, ``"lpft"``): the
      parameter-efficient strategies run only in simulation;
    - ``secure_aggregation=True`` with a reconstruction threshold (``secagg_threshold``, by
      default a majority of the clients per round) below ``SECAGG_MIN_THRESHOLD``: the
      deployment runs Flower's SecAgg+, whose masks are expanded from 32-bit seeds; once the
      self-masks and a dropped client's masks are removed, a survivor's update is hidden only
      by its masks with the other survivors (with two survivors, 2**32 guesses unmask it);
    - ``bn_recalibration=True``: the statistics round runs in the simulation only.

    FedPer and FedBN (``PERSONAL_PATHS``) refuse ``bn_recalibration=True`` (they evaluate
    personal models, not one global one) and ``strategy="lpft"``: the personal tensors are
    split off once, and LP-FT changes the sent ones at its switch round. (They also refuse, once
    the model is built, a split that leaves nothing to share, and FedBN a strategy that trains
    no normalisation layer: ``personalization``.)

    The simulation refuses nothing beyond the config's own rules.
    """
    if path in PERSONAL_PATHS:
        out = [f"strategy='lpft' is invalid for {path}: allowed 'head', 'partial', 'full', 'lora', "
               "'ffa_lora' or 'bitfit' (the personal tensors are split off once, and LP-FT changes "
               "the trained tensors at lpft_switch_round)."] if config.strategy == "lpft" else []
        if config.bn_recalibration:
            out.append(f"bn_recalibration=True is not supported by {path}: allowed False (it "
                       "recalibrates one global model; the personalised loops evaluate each client's own).")
        return out
    if path != DEPLOYMENT:
        return []
    out = []
    try:  # real clients: seeded noise and sampling would be reproducible by anyone with the seed
        randomness.require_secure(config.randomness, path="Flower deployment")
    except ValueError as e:
        out.append(f"ExperimentConfig.{e} Pass --randomness secure.")
    if config.strategy in PEFT_NOT_DEPLOYED:
        out.append(f"strategy={config.strategy!r} is not supported by {DEPLOYMENT}: allowed 'head', "
                   "'partial' or 'full' there (the parameter-efficient strategies run in simulation, "
                   "run_federated; the deployment is not tested with them, and LP-FT's switch of "
                   "the sent tensors needs the round number on both sides).")
    m = config.clients_per_round
    t = config.secagg_threshold or m // 2 + 1
    if config.secure_aggregation and t < SECAGG_MIN_THRESHOLD:
        out.append(f"secure_aggregation=True is not supported by {DEPLOYMENT} with a threshold of "
                   f"{t} ({m} clients per round): allowed secagg_threshold >= {SECAGG_MIN_THRESHOLD} "
                   "there (the default, a majority, is >= 3 from 4 clients per round). Flower's "
                   "SecAgg+ expands each mask from a 32-bit seed: with only 2 survivors, 2**32 "
                   "guesses unmask an update.")
    if config.bn_recalibration:
        out.append(f"bn_recalibration=True is not supported by {DEPLOYMENT}: allowed False there "
                   "(the statistics round runs in simulation, run_federated).")
    return out


def check_supported(config: ExperimentConfig, path: str) -> None:
    """Raise ``ValueError`` naming the field and the path if ``path`` cannot run ``config``.

    Called before any data is loaded or any model is built.
    """
    problems = refusals(config, path)
    if problems:
        raise ValueError(" ".join(problems))

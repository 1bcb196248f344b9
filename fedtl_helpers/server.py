"""``run_federated``: the simulation's loop over rounds, with checkpoints and resume.

Chapter: "Federated learning overview". The round itself is ``round.run_round`` (sample ->
broadcast -> client update -> clip | attack | encode -> decode -> aggregate -> server step ->
evaluate -> record), built once from the config by ``stages.build_stages``; this module only
repeats it, shows progress and saves the ``ServerState`` after every round.

Everything random is derived from ``config.seed`` and the round number (``round.RoundStreams``),
so a run resumed from its last checkpoint repeats the uninterrupted run exactly.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from tqdm import tqdm

from .aggregation import Weights
from .config import ExperimentConfig
from .history import History
from .round import RoundStreams, ServerState, initial_state, run_round
from .simulation import Dataset, Simulation, load_config_data
from .stages import build_stages, fixed_sample

__all__ = ["Dataset", "FederatedResult", "Simulation", "aggregate", "load_config_data",
           "run_federated", "sample_clients"]


@dataclass
class FederatedResult:
    history: History
    weights: Weights  # final global weights
    model: keras.Model  # the shared model, holding the final global weights


def sample_clients(num_clients: int, k: int, seed: int, round_: int) -> list[int]:
    """The ``k`` clients taking part in ``round_`` (sorted), a pure function of its inputs."""
    return fixed_sample(RoundStreams(seed, round_).sampling(), num_clients, k)


def aggregate(config: ExperimentConfig, deltas: list[Weights], num_examples: list[int],
              rng: np.random.Generator, *, like: Weights | None = None) -> Weights:
    """The aggregate stage ``config`` builds, applied to one round's decoded deltas.

    ``like`` (tensors shaped as one update) is needed when no client took part (Poisson
    sampling): the DP aggregate is then pure noise, the plain one all zeros.
    """
    return build_stages(config).aggregate(deltas, num_examples, rng,
                                          like if like is not None else deltas[0])


def run_federated(config: ExperimentConfig, *, dataset: Dataset | None = None,
                  checkpoint_dir: str | Path | None = None, resume: bool = False,
                  progress: bool = True, simulation: Simulation | None = None) -> FederatedResult:
    """Run ``config.rounds`` rounds of federated training and return the history.

    Parameters
    ----------
    config
        The experiment; validated when it was constructed.
    dataset
        Pre-loaded data (tests and notebooks pass small arrays); else loaded from ``config``.
    checkpoint_dir
        If given, the ``ServerState`` is saved there (atomically) after every round, and
        ``history.json`` / ``history.csv`` are written.
    resume
        Continue from the checkpoint in ``checkpoint_dir`` if there is one; the final weights
        equal those of an uninterrupted run with the same config. The checkpoint's config must
        equal ``config`` except for ``rounds`` (so a finished run can be extended).
    progress
        Show a progress bar over rounds (off in tests).
    simulation
        Reuse an existing ``Simulation`` (same config) instead of building one.

    Raises
    ------
    ValueError
        ``resume=True`` with a checkpoint written by a different config.
    """
    stages = build_stages(config)
    sim = simulation or Simulation(config, dataset)
    state = None
    if resume and checkpoint_dir:
        state = ServerState.load(checkpoint_dir, stages, config.to_dict())
    if state is None:
        history = History(meta={"config": config.to_dict(), "describe": sim.describe(),
                                "dataset": sim.data_source,
                                "weights": config.weights or "random init"})
        state = initial_state(stages, sim.model.get_weights(), history, sim.evaluate)
    bar = tqdm(range(state.round + 1, config.rounds + 1), desc="rounds", disable=not progress,
               file=sys.stderr, initial=state.round, total=config.rounds)
    for _ in bar:
        row = run_round(state, stages, sim)
        bar.set_postfix(acc=f"{row['test_accuracy']:.3f}")
        if checkpoint_dir is not None:
            state.save(checkpoint_dir, config.to_dict())
    history = state.history
    if stages.privacy_meta is not None:  # the final privacy spent, with what it was computed for
        history.meta["privacy"] = {"epsilon": history.rows[-1]["epsilon"], **stages.privacy_meta}
    if checkpoint_dir is not None:
        history.save(checkpoint_dir)
    sim.model.set_weights(state.weights)
    return FederatedResult(history, state.weights, sim.model)

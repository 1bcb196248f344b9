"""``run_federated``: the simulation's loop over rounds, with checkpoints and resume.

Chapter: "Federated learning overview". The round itself is ``round.run_round`` (sample ->
broadcast -> client update -> clip | attack | encode -> decode -> aggregate -> server step ->
evaluate -> record), built once from the config by ``stages.build_stages``; ``run_federated``
runs it with the in-process clients (``simulation.InProcessClients``) through
``round.run_rounds`` (progress, the non-finite stop, the ``ServerState`` saved after every
round). ``start`` (round 0 or the checkpoint) and ``saver`` (the checkpoint stage) are shared
with FedPer/FedBN and the Flower ServerApp, so every path resumes the same way.

Everything random comes from ``round.RoundStreams``: one stream per purpose (sampling, noise,
each client's shuffling and rounding), derived from ``config.seed``, the round and the client in
``config.randomness="simulation"`` mode, so a run resumed from its last checkpoint repeats the
uninterrupted run exactly; client sampling and DP noise come from the OS in ``"secure"`` mode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from ..core.config import ExperimentConfig
from ..core.history import DP_WITHHELD, History
from ..transforms.aggregation import Weights
from .round import Clients, ServerState, Stages, initial_state, run_rounds
from .simulation import Dataset, InProcessClients, Simulation, load_config_data
from .stages import build_stages

__all__ = ["Dataset", "FederatedResult", "Simulation", "finish_history", "load_config_data",
           "new_history", "run_federated", "saver", "start"]


@dataclass
class FederatedResult:
    history: History
    weights: Weights  # final global weights
    model: keras.Model  # the shared model, holding the final global weights


def new_history(config: ExperimentConfig, sim: Simulation, stages: Stages, **meta: Any) -> History:
    """An empty History whose ``meta`` says what ran: config, data, weights, randomness mode and,
    under DP, the columns withheld from release; ``meta`` adds path-specific entries."""
    return History(meta={"config": config.to_dict(), "describe": sim.describe(),
                         "dataset": sim.data_source, "weights": config.weights or "random init",
                         "randomness": config.randomness,
                         "withheld": [] if stages.privacy_meta is None else list(DP_WITHHELD), **meta})


def finish_history(history: History, config: ExperimentConfig, stages: Stages) -> None:
    """Under DP, record the final privacy spent with what it was computed for (and, for seeded
    noise, that it protects nothing)."""
    if stages.privacy_meta is None:
        return
    history.meta["privacy"] = {"epsilon": history.rows[-1]["epsilon"], **stages.privacy_meta,
                               "randomness": config.randomness}
    if config.randomness == "simulation":  # say it where the epsilon is read
        history.meta["privacy"]["warning"] = ("seeded noise (randomness='simulation'): anyone who "
                                              "knows the seed can remove it; no privacy")


def start(config: ExperimentConfig, stages: Stages, clients: Clients, weights: Weights,
          history: History, checkpoint_dir: str | Path | None, resume: bool) -> ServerState:
    """The state a path starts from: its checkpoint when resuming (``clients`` gets its part
    back), else round 0 (the initial global ``weights`` evaluated and recorded in ``history``)."""
    if resume and checkpoint_dir:
        state = ServerState.load(checkpoint_dir, stages, config.to_dict(), clients)
        if state is not None:
            return state
    return initial_state(stages, weights, history, clients.evaluate)


def saver(config: ExperimentConfig, clients: Clients,
          checkpoint_dir: str | Path | None) -> Callable[[ServerState], None] | None:
    """The checkpoint stage: save the ``ServerState`` and the runner's state after every round."""
    if checkpoint_dir is None:
        return None
    return lambda state: state.save(checkpoint_dir, config.to_dict(), clients)


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
    clients = InProcessClients(sim, stages.client)
    state = start(config, stages, clients, sim.model.get_weights(), new_history(config, sim, stages),
                  checkpoint_dir, resume)
    run_rounds(state, stages, clients, config.rounds, progress=progress,
               checkpoint=saver(config, clients, checkpoint_dir))
    history = state.history
    finish_history(history, config, stages)
    if checkpoint_dir is not None:
        history.save(checkpoint_dir)
    sim.model.set_weights(state.weights)
    return FederatedResult(history, state.weights, sim.model)

"""DP-FedAvg at epsilon <= 8 (delta 1e-5) against a tuned non-private run and a clipped control.

Chapter: "Differential privacy". Embedded shapes data, built-in pretrained backbone, head-only
training on cached features. Client-level DP needs many clients per round: the noise std z*C on
the sum is divided by the expected number of clients q*N, so we use many small clients with
Poisson sampling. The noise multiplier is the smallest that keeps epsilon <= the target after
all rounds (dp-accounting, RDP).

Three arms, compared fairly:

* ``nonprivate``: plain mean of the updates (no clipping, no noise);
* ``clipped``: every update clipped to norm ``--clip``, no noise (the control that separates
  what clipping does from what the noise does; epsilon is infinite);
* ``dp``: clipped and noised (DP-FedAvg).

Each arm gets its own client learning rate and server learning rate, chosen together on one
grid shared by all arms (``--grid`` x ``--server-grid``): each arm's search starts at
``START[arm]``, scores the 3 x 3 box around it and widens the box until its choice is interior
(``tuning.widen_box``; a clipped update's norm is at most C and an unclipped one's is not, so
the arms may settle in different places of the same grid). Every trial runs on a 20% validation
split of the training data (seed ``--seeds[0]``; never the test set) for as many rounds as the
run it chooses for (``--tune-rounds`` defaults to ``--rounds``) and is scored on the same tail
(the mean of the last ``--last`` rounds). Then every arm runs ``--rounds`` rounds for every seed.
Choosing the DP arm's settings on the private data itself would cost privacy that this
accounting does not include; a deployment tunes on public or proxy data (or accounts the
tuning).

    python benchmarks/bench_dp.py [--clients 500] [--per-client 40] [--rounds 20] [--seeds 0 1 2]
           [--out results/bench_dp.json]

Last line: one JSON object with, per arm, ``client_lr``, ``server_lr``, ``final_acc`` (mean over
seeds of the mean of the last ``--last`` rounds), ``final_acc_min``/``_max``; ``epsilon``,
``noise_multiplier``, ``acc_drop_points`` (non-private minus DP, mean over seeds, with ``_min``/
``_max``) and ``clip_effect_points`` (clipped minus non-private).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np  # noqa: E402
from _args import add_grid, check_grid, check_tuned_run  # noqa: E402  (benchmarks/ is the script's own folder)

SERVER_GRID = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)  # doubling steps
# where each arm's search starts: (client rate, server rate), the earlier 6-round choices
START = {"nonprivate": (1e-2, 0.5), "clipped": (1e-2, 2.0), "dp": (1e-2, 2.0)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=500)
    p.add_argument("--per-client", type=int, default=40)
    p.add_argument("--q", type=float, default=0.2)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--last", type=int, default=5, help="final accuracy = mean of the last rounds")
    p.add_argument("--clip", type=float, default=0.5)
    add_grid(p, "the one grid of clients' Adam learning rates every arm draws from")
    p.add_argument("--server-grid", type=float, nargs="+", default=list(SERVER_GRID),
                   help="the one grid of server learning rates every arm draws from")
    p.add_argument("--tune-rounds", type=int, help="rounds per tuning trial (default: --rounds)")
    p.add_argument("--target-epsilon", type=float, default=8.0)
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", type=Path, help="also write the JSON (curves, provenance) atomically")
    a = p.parse_args()
    check_tuned_run(p, a)
    check_grid(p, "--grid", a.grid, [c for c, _ in START.values()])
    check_grid(p, "--server-grid", a.server_grid, [s for _, s in START.values()])

    from fedtl_helpers.core.config import ExperimentConfig
    from fedtl_helpers.inputs import data
    from fedtl_helpers.transforms import privacy
    from fedtl_helpers.workflow.tuning import compare_arms

    t0 = time.perf_counter()
    z = privacy.noise_multiplier_for_epsilon(a.target_epsilon, a.q, a.rounds, a.delta, sampling="poisson")
    n_train = a.clients * a.per_client
    base = dict(n_train=n_train, n_test=a.n_test, num_clients=a.clients, rounds=a.rounds,
                client_fraction=a.q, client_sampling="poisson", aggregator="mean", strategy="head",
                feature_cache=True, local_epochs=1, batch_size=16, dp_delta=a.delta)
    arms = {"nonprivate": ExperimentConfig(**base),
            "clipped": ExperimentConfig(**base, dp_clip=a.clip, dp_noise_multiplier=0.0),
            "dp": ExperimentConfig(**base, dp_clip=a.clip, dp_noise_multiplier=z)}
    comp = compare_arms(arms, (a.grid, a.server_grid), start=START, seeds=a.seeds,
                        field=("learning_rate", "server_lr"), tune_rounds=a.tune_rounds, last=a.last,
                        load=lambda seed: data.load_dataset("shapes", n_train=n_train, n_test=a.n_test,
                                                            seed=seed),
                        log=lambda s: print(s, flush=True))
    summary = comp.summary(a.last)
    finals = {arm: comp.finals(arm, a.last) for arm in arms}

    def points(x, y):
        d = [100 * (u - v) for u, v in zip(finals[x], finals[y])]
        return round(float(np.mean(d)), 2), round(min(d), 2), round(max(d), 2)

    drop, clip_effect = points("nonprivate", "dp"), points("clipped", "nonprivate")
    result = {
        "dataset": "shapes (embedded)", "weights": "builtin", "strategy": "head",
        "clients": a.clients, "images_per_client": a.per_client, "q": a.q,
        "expected_clients_per_round": a.q * a.clients, "rounds": a.rounds, "last": a.last,
        "seeds": a.seeds, "grid": a.grid, "server_grid": a.server_grid, "tune_rounds": a.tune_rounds,
        "clip": a.clip, "noise_multiplier": round(z, 4), "delta": a.delta,
        "epsilon": round(comp.histories["dp"][0].rows[-1]["epsilon"], 4),
        "accountant": "rdp", "sampling": "poisson",
        "arms": {arm: {"client_lr": s["learning_rate"], "server_lr": s["server_lr"],
                       "final_acc": round(s["mean"], 4), "final_acc_min": round(s["min"], 4),
                       "final_acc_max": round(s["max"], 4),
                       "at_grid_edge": comp.tuned[arm].at_edge(),
                       "tuning_scores": {f"{lr}/{slr}": round(v, 4)
                                         for (lr, slr), v in comp.tuned[arm].scores.items()}}
                 for arm, s in summary.items()},
        "acc_drop_points": drop[0], "acc_drop_points_min": drop[1], "acc_drop_points_max": drop[2],
        "clip_effect_points": clip_effect[0], "clip_effect_points_min": clip_effect[1],
        "clip_effect_points_max": clip_effect[2],
        "configs": comp.configs(),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if a.out:
        from fedtl_helpers.workflow import results
        results.save(a.out, {**result, "curves": comp.curves()}, seconds=result["seconds"])
    print(json.dumps({k: v for k, v in result.items() if k != "configs"}))


if __name__ == "__main__":
    main()

"""Which local optimizer should FedAvg's clients run: Adam, SGD or SGD with momentum?

Chapter "FedAvg: weighted aggregation" states the algorithm the helpers run and shows this
record. McMahan et al.'s FedAvg runs plain SGD on the clients; the helpers' default is Adam
(``ExperimentConfig.client_optimizer``), with its state reset at the start of every client's
local training. This run decides between them fairly:

* every arm (``adam``, ``sgd``, ``sgd_momentum``: momentum 0.9) tunes its client learning rate
  on a 20% validation split of seed ``--seeds[0]``'s training data (never the test set), over
  the same ``--rounds`` it then runs;
* the candidates come from ONE log grid shared by the arms (``--grid``). Each arm starts on
  three neighbouring values around its usual rate (``START``) and the window is widened one grid
  step at a time on the side where the best value lies, until the chosen value is interior
  (a value on the grid's end is reported as ``at_grid_edge``);
* then every arm runs on every seed and is scored on the test set; ``teaching.verdict`` judges
  SGD and SGD+momentum against Adam (minimum detectable difference from the seeds' spread and the
  test-set size).

    python benchmarks/bench_optimizer.py [--rounds 10] [--seeds 0 1 2] [--out results/bench_optimizer.json]

Last line: one JSON object with, per arm, ``lr``, ``at_grid_edge``, ``final_acc`` (mean over
seeds of the mean of the last ``--last`` rounds), ``final_acc_min``/``_max``, ``acc_round1`` and
``tuning_scores``; and per SGD arm against Adam the verdict (``minus_adam_points``, ``mdd_points``,
``shown``, ``sentence``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _args import check_tuned_run  # noqa: E402  (benchmarks/ is the script's own folder)

from fedtl_helpers.workflow.tuning import LR_GRID, widen_until_interior  # noqa: E402  (numpy only)

ARMS = ("adam", "sgd", "sgd_momentum")
START = {"adam": 1e-3, "sgd": 1e-1, "sgd_momentum": 1e-2}  # the window's centre before widening


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with the parser's usage error before any data is loaded: the shared rounds/seeds
    check, then a grid of at least 3 increasing positive rates that holds every arm's start."""
    args.tune_rounds = args.rounds  # tuned over the same horizon it runs
    check_tuned_run(parser, args)
    g = args.grid
    if len(g) < 3 or any(not 0 < v < float("inf") for v in g) or list(g) != sorted(set(g)):
        parser.error(f"--grid {' '.join(map(str, g))} is invalid: allowed at least 3 increasing "
                     "positive learning rates")
    missing = [f"{a}={v:g}" for a, v in START.items() if v not in g]
    if missing:
        parser.error(f"--grid must contain every arm's starting rate ({', '.join(missing)})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--clients", type=int, default=5)
    p.add_argument("--per-client", type=int, default=300)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--grid", type=float, nargs="+", default=list(LR_GRID),
                   help="the one log grid of client learning rates all arms draw from")
    p.add_argument("--last", type=int, default=3, help="final accuracy = mean of the last rounds")
    p.add_argument("--out", type=Path, help="also write the JSON (per-round curves, provenance) atomically")
    args = p.parse_args()
    check_args(p, args)

    from fedtl_helpers.core.config import ExperimentConfig
    from fedtl_helpers.federation.server import run_federated
    from fedtl_helpers.inputs import data
    from fedtl_helpers.teaching.verdict import final_per_seed, verdict
    from fedtl_helpers.workflow.tuning import tune_federated

    n_train = args.clients * args.per_client
    t0 = time.perf_counter()
    log = lambda s: print(s, flush=True)  # noqa: E731
    load = lambda seed: data.load_dataset("shapes", n_train=n_train, n_test=args.n_test, seed=seed)  # noqa: E731
    arms = {a: ExperimentConfig(num_clients=args.clients, n_train=n_train, n_test=args.n_test,
                                rounds=args.rounds, strategy="full", weights="builtin",
                                client_optimizer=a, seed=args.seeds[0])
            for a in ARMS}
    first = load(args.seeds[0])
    tuned = {}
    for a, config in arms.items():
        def score(lr, config=config, arm=a):
            t = tune_federated(config, [lr], dataset=first, rounds=args.rounds, last=args.last)
            log(f"# tune {arm} lr={lr:g}: validation accuracy {t.scores[lr]:.4f} "
                f"({time.perf_counter() - t0:.0f} s)")
            return t.scores[lr]
        tuned[a] = widen_until_interior(args.grid, START[a], score)
        log(f"# {a}: chose lr={tuned[a][0]:g}" + (" (ON THE GRID'S EDGE)" if tuned[a][2] else ""))
    curves: dict[str, list[list[float]]] = {a: [] for a in ARMS}
    configs = {}
    first_rows = {}
    for seed in args.seeds:
        ds = first if seed == args.seeds[0] else load(seed)
        for a, config in arms.items():
            c = dataclasses.replace(config, seed=seed, learning_rate=tuned[a][0])
            h = run_federated(c, dataset=ds, progress=False).history
            curves[a].append([float(x) for x in h.column("test_accuracy")])
            if seed == args.seeds[0]:
                configs[a], first_rows[a] = h.meta["config"], h.meta["dataset"]
            log(f"# seed {seed} {a} (lr={tuned[a][0]:g}): "
                + " ".join(f"{x:.3f}" for x in curves[a][-1]) + f" ({time.perf_counter() - t0:.0f} s)")
    finals = {a: final_per_seed(curves[a], args.last) for a in ARMS}
    label = {"adam": "local Adam", "sgd": "local SGD", "sgd_momentum": "local SGD with momentum"}
    verdicts = {}
    for a in ("sgd", "sgd_momentum"):
        v = verdict(finals[a], finals["adam"], n_test=args.n_test, names=(label[a], label["adam"]))
        verdicts[f"{a}_vs_adam"] = {"minus_adam_points": round(v.difference_points, 2),
                                    "per_seed_points": [round(x, 2) for x in v.per_seed_points],
                                    "mdd_points": round(v.mdd_points, 2), "shown": v.shown,
                                    "sentence": v.sentence}
    result = {
        "data": f"{first_rows['adam']}; {args.clients} IID clients x {args.per_client} images, "
                f"{args.n_test} test images, 1 local epoch, full fine-tuning",
        "weights": "builtin",
        "seeds": args.seeds,
        "rounds": args.rounds,
        "last": args.last,
        "grid": list(args.grid),
        "arms": {
            a: {"lr": tuned[a][0], "at_grid_edge": tuned[a][2],
                "final_acc": round(float(np.mean(finals[a])), 4),
                "final_acc_min": round(min(finals[a]), 4),
                "final_acc_max": round(max(finals[a]), 4),
                "finals": [round(x, 4) for x in finals[a]],
                "acc_round1": round(float(np.mean([c[1] for c in curves[a]])), 4),
                "tuning_scores": {f"{k:g}": round(s, 4) for k, s in tuned[a][1].items()}}
            for a in ARMS},
        "verdicts": verdicts,
        "configs": configs,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if args.out:
        from fedtl_helpers.workflow import results
        results.save(args.out, {**result, "curves": curves}, seconds=result["seconds"])
    print(json.dumps({k: v for k, v in result.items() if k != "configs"}))


if __name__ == "__main__":
    main()

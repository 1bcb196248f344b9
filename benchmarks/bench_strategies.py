"""Client fine-tuning strategies (head, partial, full), each at its own tuned learning rate.

Chapter "Client fine-tuning" interprets the gap between the strategies; this run makes that gap
fair: each strategy's client learning rate comes from one log grid shared by all strategies
(``--grid``), its search starting at ``START[strategy]`` and widened until the choice is
interior, every trial on a validation split of the training data (never the test set) for as
many rounds as the run (``--tune-rounds`` defaults to ``--rounds``) and scored on the same tail.
Every strategy then runs ``--rounds`` rounds on the same clients for every seed, and the spread
over seeds is reported.

    python benchmarks/bench_strategies.py [--rounds 12] [--seeds 0 1 2] [--out results/bench_strategies.json]
    python benchmarks/bench_strategies.py --dataset digits --strategies head full

``--dataset digits``: the same comparison on scikit-learn's real handwritten digits, far from the
backbone's synthetic source domain (does a frozen backbone still serve?).

Last line: one JSON object with, per strategy, ``lr``, ``final_acc`` (mean over seeds of the mean
of the last 3 rounds), ``final_acc_min``/``final_acc_max`` (over seeds), ``acc_round1`` (mean)
and ``mb_up_per_client_round``; and ``full_minus_head_points`` (mean over seeds),
``full_minus_head_points_min``/``_max``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _args import add_dataset, add_grid, check_grid, check_tuned_run, dataset_sizes  # noqa: E402  (benchmarks/ is the script's own folder)

STRATEGIES = ("head", "partial", "full")
START = {"head": 3e-3, "partial": 3e-3, "full": 1e-3}  # where each search starts: the earlier choices


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--clients", type=int, default=5)
    add_dataset(p, per_client=1000, n_test=2000)
    p.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES),
                   help="which strategies to compare (head and full are required)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    add_grid(p, "the one log grid of client learning rates every strategy draws from")
    p.add_argument("--tune-rounds", type=int, help="rounds per tuning trial (default: --rounds)")
    p.add_argument("--last", type=int, default=3, help="final accuracy = mean of the last rounds")
    p.add_argument("--out", type=Path, help="also write the JSON (per-round curves, provenance) atomically")
    args = p.parse_args()
    check_tuned_run(p, args)
    check_grid(p, "--grid", args.grid, START.values())
    if not {"head", "full"} <= set(args.strategies):
        p.error("--strategies must include head and full (the gap reported is full minus head)")
    n_train, n_test = dataset_sizes(p, args)

    from fedtl_helpers.core.config import ExperimentConfig
    from fedtl_helpers.inputs import data
    from fedtl_helpers.workflow.tuning import compare_arms

    t0 = time.perf_counter()
    strategies = [s for s in STRATEGIES if s in args.strategies]
    arms = {s: ExperimentConfig(dataset=args.dataset, num_clients=args.clients, n_train=n_train,
                                n_test=n_test, rounds=args.rounds, strategy=s, weights="builtin")
            for s in strategies}
    comp = compare_arms(arms, args.grid, start={s: START[s] for s in strategies}, seeds=args.seeds,
                        tune_rounds=args.tune_rounds, last=args.last,
                        load=lambda seed: data.load_dataset(args.dataset, n_train=n_train,
                                                            n_test=n_test, seed=seed),
                        log=lambda s: print(s, flush=True))
    summary = comp.summary(args.last)
    gaps = [100 * (f - h) for f, h in zip(comp.finals("full", args.last), comp.finals("head", args.last))]
    first = {s: hs[0] for s, hs in comp.histories.items()}
    result = {
        "data": f"{first['head'].meta['dataset']}; {args.clients} IID clients x {args.per_client} "
                f"images, {n_test} test images, 1 local epoch",
        "dataset": args.dataset,
        "weights": "builtin",
        "seeds": args.seeds,
        "rounds": args.rounds,
        "tune_rounds": args.tune_rounds,
        "grid": args.grid,
        "last": args.last,
        "strategies": {
            s: {"lr": summary[s]["learning_rate"],
                "final_acc": round(summary[s]["mean"], 4),
                "final_acc_min": round(summary[s]["min"], 4),
                "final_acc_max": round(summary[s]["max"], 4),
                "acc_round1": round(float(np.mean([h.rows[1]["test_accuracy"]
                                                   for h in comp.histories[s]])), 4),
                "mb_up_per_client_round": round(first[s].rows[1]["bytes_up"]
                                                / len(first[s].rows[1]["clients"]) / 1e6, 4),
                "lr_at_grid_edge": comp.tuned[s].at_edge(),
                "tuning_scores": {str(k): round(v, 4) for k, v in comp.tuned[s].scores.items()}}
            for s in strategies},
        "full_minus_head_points": round(float(np.mean(gaps)), 2),
        "full_minus_head_points_min": round(min(gaps), 2),
        "full_minus_head_points_max": round(max(gaps), 2),
        "configs": comp.configs(),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if args.out:
        from fedtl_helpers.workflow import results
        results.save(args.out, {**result, "curves": comp.curves()}, seconds=result["seconds"])
    print(json.dumps({k: v for k, v in result.items() if k != "configs"}))


if __name__ == "__main__":
    main()

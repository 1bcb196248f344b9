"""Federated training from the built-in pretrained backbone vs from random initialisation.

Same clients, data, rounds and seeds; only the initial backbone weights differ. The pretrained
backbone was trained on 20 *other* shapes (``scripts/pretrain_backbone.py``), so this is a real
transfer experiment, offline. The comparison is made fair:

* each arm gets its own client learning rate from one log grid shared by both (``--grid``): the
  search starts at ``--start`` and widens until the choice is interior, every trial on a
  validation split of the training data (seed ``--seeds[0]``; never the test set) for as many
  rounds as the run (``--tune-rounds`` defaults to ``--rounds``); printed with the results;
* the random start runs until it has clearly learned (``--rounds``), with BatchNormalization's
  moving statistics matched to federated training (``models.FEDERATED_BN_MOMENTUM``), so its
  test accuracy shows what it has learned;
* every seed (a new partition, initialisation and shuffling) is reported, and the JSON names
  the worst seed.

    python benchmarks/bench_transfer.py [--rounds 30] [--target 0.6] [--seeds 0 1 2] [--bn-recalibration]
    python benchmarks/bench_transfer.py --dataset digits --rounds 15 --tune-score auc \
        --target 0.9 --targets 0.8 0.9 0.95 --bn-recalibration

``--dataset digits`` runs the same comparison on real handwritten digits (scikit-learn's UCI
digits; out of the backbone's domain), where the question is how much a *distant* source buys.
``--tune-score auc`` chooses each arm's rate by its mean validation accuracy over all tuning
rounds (the area under its learning curve: what "rounds to a target" rewards) instead of the
mean of the last 3 rounds.

Last line: one JSON object with ``seeds``, ``rounds_ratio_min`` (rounds the tuned random start
needs to reach ``--target`` divided by the pretrained start's, worst seed; a lower bound computed
with ``rounds + 1`` where random never reaches it), ``rounds_ratio_mean``,
``acc_round1_pretrained``, ``acc_round1_random``, ``random_final_acc`` (means over seeds),
``lr_pretrained``, ``lr_random`` (with ``lr_at_grid_edge`` per arm) and the per-seed figures;
with ``--targets``, ``rounds_to_targets``: per target, each arm's rounds per seed (``None``: not
reached in ``--rounds``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _args import add_dataset, add_grid, check_grid, dataset_sizes  # noqa: E402  (benchmarks/ is the script's own folder)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--clients", type=int, default=5)
    add_dataset(p, per_client=1000, n_test=2000)
    p.add_argument("--target", type=float, default=0.6, help="test accuracy to reach")
    p.add_argument("--targets", type=float, nargs="*", default=[],
                   help="more test accuracies: rounds to reach each are reported per seed")
    p.add_argument("--strategy", default="full")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    add_grid(p, "the one log grid of client learning rates both arms draw from")
    p.add_argument("--start", type=float, default=1e-3, help="where both arms' searches start on --grid")
    p.add_argument("--tune-rounds", type=int, help="rounds per tuning trial (default: --rounds)")
    p.add_argument("--tune-score", choices=("tail", "auc"), default="tail",
                   help="tail: mean validation accuracy of the last 3 tuning rounds; auc: of all")
    p.add_argument("--lr-pretrained", type=float, help="skip tuning: use this rate (with --lr-random), "
                   "e.g. the one an earlier run chose, to run more seeds in parallel processes")
    p.add_argument("--lr-random", type=float)
    p.add_argument("--bn-recalibration", action="store_true",
                   help="evaluate with BatchNorm statistics the clients recompute for each global model "
                        "(ExperimentConfig.bn_recalibration) instead of the moving averages, which lag "
                        "behind a random start's weights for the first rounds (chapter 04)")
    p.add_argument("--out", type=Path, help="also write the JSON (with per-round curves and its "
                   "provenance: command, commit, date, machine, seconds) to this file, atomically")
    args = p.parse_args()
    args.tune_rounds = args.rounds if args.tune_rounds is None else args.tune_rounds
    if args.rounds < 1 or args.tune_rounds < 3 or not args.seeds:
        p.error("--rounds must be >= 1, --tune-rounds >= 3 (trials are scored on their last 3 "
                "rounds at least), --seeds non-empty")
    check_grid(p, "--grid", args.grid, [args.start])
    if (args.lr_pretrained is None) != (args.lr_random is None):
        p.error("--lr-pretrained and --lr-random go together (both skip tuning)")
    if not all(0 < t <= 1 for t in (args.target, *args.targets)):
        p.error("--target and --targets must be accuracies in (0, 1]")
    n_train, n_test = dataset_sizes(p, args)

    from fedtl_helpers.core.config import ExperimentConfig
    from fedtl_helpers.federation.server import run_federated
    from fedtl_helpers.inputs import data
    from fedtl_helpers.workflow.tuning import Tuned, tune_federated

    arms = {"pretrained": "builtin", "random": None}
    t0 = time.perf_counter()

    def config(weights, seed, lr=1e-3):
        return ExperimentConfig(dataset=args.dataset, num_clients=args.clients, n_train=n_train,
                                n_test=n_test, rounds=args.rounds, strategy=args.strategy,
                                weights=weights, learning_rate=lr, seed=seed,
                                bn_recalibration=args.bn_recalibration)

    def load(seed):
        return data.load_dataset(args.dataset, n_train=n_train, n_test=n_test, seed=seed)

    tuned = {}
    if args.lr_pretrained is not None:  # chosen by an earlier run: no tuning here
        tuned = {"pretrained": Tuned("learning_rate", args.lr_pretrained, {}),
                 "random": Tuned("learning_rate", args.lr_random, {})}
    ds0 = None if tuned else load(args.seeds[0])
    last = args.tune_rounds if args.tune_score == "auc" else 3
    for arm, weights in ({} if tuned else arms).items():
        tuned[arm] = tune_federated(config(weights, args.seeds[0]), args.grid, dataset=ds0,
                                    rounds=args.tune_rounds, last=last, start=args.start)
        print(f"# {arm}: learning rate chosen on a 20% validation split of the training data, "
              f"{args.tune_rounds} rounds ({args.tune_score}), seed {args.seeds[0]}\n"
              f"{tuned[arm].table()}", flush=True)

    per_seed, described = [], ""
    for seed in args.seeds:
        ds = load(seed)
        hist = {arm: run_federated(config(w, seed, tuned[arm].best), dataset=ds, progress=False).history
                for arm, w in arms.items()}
        described = hist["pretrained"].meta["dataset"]
        print(f"# seed {seed}: {hist['pretrained'].meta['describe']} vs random init")
        print(f"{'round':>5} {'pretrained':>10} {'random':>8}")
        for a, b in zip(hist["pretrained"].rows, hist["random"].rows):
            print(f"{a['round']:>5} {a['test_accuracy']:>10.4f} {b['test_accuracy']:>8.4f}", flush=True)
        r_pre = hist["pretrained"].rounds_to_reach(args.target)
        r_rnd = hist["random"].rounds_to_reach(args.target)
        per_seed.append({
            "seed": seed,
            "acc_round1_pretrained": hist["pretrained"].rows[1]["test_accuracy"],
            "acc_round1_random": hist["random"].rows[1]["test_accuracy"],
            "final_acc_pretrained": hist["pretrained"].final_accuracy,
            "final_acc_random": hist["random"].final_accuracy,
            "rounds_to_target_pretrained": r_pre,
            "rounds_to_target_random": r_rnd,
            "rounds_ratio": (None if r_pre is None
                             else round((r_rnd or args.rounds + 1) / max(r_pre, 1), 2)),
            "rounds_to_targets": {str(t): {arm: h.rounds_to_reach(t) for arm, h in hist.items()}
                                  for t in args.targets},
            "curves": {arm: h.column("test_accuracy") for arm, h in hist.items()},
        })
    ratios = [s["rounds_ratio"] for s in per_seed]

    def mean(key):
        return round(float(np.mean([s[key] for s in per_seed])), 4)

    summary = {
        "data": f"{described}; {args.clients} IID clients x {args.per_client} images, "
                f"{n_test} test images, strategy={args.strategy}, 1 local epoch",
        "dataset": args.dataset,
        "weights": "builtin",
        "seeds": args.seeds,
        "target": args.target,
        "rounds": args.rounds,
        "lr_pretrained": tuned["pretrained"].best,
        "lr_random": tuned["random"].best,
        "lr_at_grid_edge": {arm: bool(t.scores) and bool(t.at_edge()) for arm, t in tuned.items()},
        "tune_rounds": args.tune_rounds,
        "grid": args.grid,
        "start": args.start,
        "tune_score": args.tune_score,
        "bn_recalibration": args.bn_recalibration,
        "rounds_to_targets": {str(t): {arm: [s["rounds_to_targets"][str(t)][arm] for s in per_seed]
                                       for arm in arms} for t in args.targets},
        "rounds_ratio_min": None if None in ratios else min(ratios),
        "rounds_ratio_mean": None if None in ratios else round(float(np.mean(ratios)), 2),
        "random_reached_target_every_seed": all(s["rounds_to_target_random"] is not None
                                                for s in per_seed),
        "acc_round1_pretrained": mean("acc_round1_pretrained"),
        "acc_round1_random": mean("acc_round1_random"),
        "pretrained_final_acc": mean("final_acc_pretrained"),
        "random_final_acc": mean("final_acc_random"),
        "per_seed": per_seed,
        "configs": {arm: config(w, args.seeds[0], tuned[arm].best).to_dict() for arm, w in arms.items()},
        "tuning_scores": {arm: {str(k): round(v, 4) for k, v in t.scores.items()}
                          for arm, t in tuned.items()},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if args.out:
        from fedtl_helpers.workflow import results
        results.save(args.out, summary, seconds=summary["seconds"])
    print(json.dumps({k: v for k, v in summary.items() if k != "per_seed"}
                     | {"per_seed": [{k: v for k, v in s.items() if k != "curves"} for s in per_seed]}))


if __name__ == "__main__":
    main()

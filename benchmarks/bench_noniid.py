"""Non-IID data: what label skew costs, what personalisation and pretraining give back.

Chapter: "Non-IID data and personalisation". Embedded data (``shapes``; ``--dataset digits`` for
scikit-learn's real handwritten digits), side by side (parts 1
and 2 for every seed of ``--seeds``, part 3 for every seed of ``--gap-seeds``):

1. alpha = 0.1 (Dirichlet label skew), head-only FedAvg on the built-in pretrained backbone:
   per-client held-out accuracy of the global model vs local fine-tuning, the interpolation
   chosen per client on a validation slice, and FedPer (local classifier layer); and the
   baseline without a federation: each client trains the same start on its own data alone for
   as many epochs as it trains in all;
2. FedAvg vs FedProx vs FedAvgM vs FedAdam at alpha = 0.1 (global test accuracy, mean of the
   last ``--algo-tail`` rounds), each with its own client and server learning rate chosen on a
   validation split;
3. full fine-tuning from the built-in pretrained backbone vs random init, IID vs alpha = 0.1:
   how much global test accuracy each start loses to label skew (Nguyen et al., ICLR 2023).
   Each of the four arms gets its own learning rate from one shared log grid (``--gap-grid``),
   chosen on a validation split (never the test set): the search starts at ``--gap-start`` and
   widens until the choice is interior, every trial as long as the run (``--gap-tune-rounds``
   defaults to ``--gap-rounds``) and scored on the same tail. Accuracy is the mean over the last
   ``--gap-tail`` rounds (the skewed runs swing by several points from round to round);
   ``--gap-seeds`` repeats the comparison on other partitions and initialisations, and the JSON
   gives every seed's figure.

Usage: ``python benchmarks/bench_noniid.py [--parts 1 2 3] [--rounds 10] [--gap-rounds 25]
[--gap-seeds 0 1 2] [--resume-dir runs/gap] [--out results/bench_noniid.json]``. Last line: JSON
with the figures of the parts that ran.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from _args import check_grid  # noqa: E402  (benchmarks/ is the script's own folder)

import fedtl_helpers as fl  # noqa: E402
from fedtl_helpers.federation import evaluation, personalization  # noqa: E402


def personal_part(args, data, common, skew) -> dict:
    """Part 1: personalisation, per client, on each client's held-out split."""
    cfg = fl.ExperimentConfig(**common, **skew, rounds=args.rounds, strategy="head", holdout_fraction=0.2)
    sim = fl.Simulation(cfg, data)
    start = sim.model.get_weights()  # the round-0 global model: pretrained backbone, new head
    fed = fl.run_federated(cfg, simulation=sim, progress=False)
    pers = personalization.finetune_clients(sim, fed.weights, args.finetune_epochs, seed=args.seed)
    # The baseline without a federation: each client trains the same start on its own data alone,
    # for as many epochs as it trains in all (every round, then fine-tuning), at the same rate.
    alone_epochs = args.rounds * cfg.local_epochs + args.finetune_epochs
    alone = personalization.finetune_clients(sim, start, alone_epochs, seed=args.seed).local_acc
    fedper = personalization.fedper_accuracy(sim, personalization.run_fedper(cfg, simulation=sim))
    rows = {"global (FedAvg)": pers.global_acc,
            f"local only, no federation ({alone_epochs} ep)": alone,
            f"local fine-tuning ({args.finetune_epochs} ep)": pers.local_acc,
            "interpolation (alpha per client)": pers.mixed_acc, "FedPer (local logits layer)": fedper}
    print(f"\n1. per-client held-out accuracy, weights=builtin, strategy=head, {args.rounds} rounds")
    print(f"{'model':36s} {'mean':>6s} {'worst':>6s} {'best':>6s} {'std':>6s}")
    for name, acc in rows.items():
        s = evaluation.spread(acc)
        print(f"{name:36s} {s['mean']:6.3f} {s['worst']:6.3f} {s['best']:6.3f} {s['std']:6.3f}")
    print("chosen alpha per client:", pers.chosen_alpha.tolist())
    g, loc = evaluation.spread(pers.global_acc), evaluation.spread(pers.local_acc)
    worst = int(np.argmin(pers.global_acc))
    return {
        "clients": args.clients, "seed": args.seed, "rounds": args.rounds,
        "global_mean": round(g["mean"], 4), "personal_mean": round(loc["mean"], 4),
        "personal_gain_points": round(100 * (loc["mean"] - g["mean"]), 1),
        # the worst client's accuracy, before vs after (possibly a different client), and the gain
        # of the very client the global model served worst
        "worst_client_gain_points": round(100 * (loc["worst"] - g["worst"]), 1),
        "worst_client": worst,
        "that_client_gain_points": round(100 * (pers.local_acc[worst] - pers.global_acc[worst]), 1),
        "worst_global": round(g["worst"], 4), "worst_personal": round(loc["worst"], 4),
        "local_only_mean": round(float(alone.mean()), 4), "local_only_epochs": alone_epochs,
        "personal_minus_local_only_points": round(100 * (loc["mean"] - float(alone.mean())), 1),
        "interpolation_mean": round(float(pers.mixed_acc.mean()), 4),
        "fedper_mean": round(float(fedper.mean()), 4),
    }


ALGORITHMS = {"FedAvg": {}, "FedProx mu=0.1": {"prox_mu": 0.1},
              "FedAvgM beta=0.9": {"server_optimizer": "momentum"}, "FedAdam": {"server_optimizer": "adam"}}


def algorithm_candidates(lrs: list[float]) -> dict[str, list[tuple[float, float]]]:
    """(client learning rate, server learning rate) tried for each algorithm: the server rate
    only where a server optimiser uses it (FedAvg and FedProx average with rate 1)."""
    return {"FedAvg": [(lr, 1.0) for lr in lrs], "FedProx mu=0.1": [(lr, 1.0) for lr in lrs],
            "FedAvgM beta=0.9": [(lr, s) for lr in lrs for s in (0.3, 1.0, 2.0)],
            "FedAdam": [(lr, s) for lr in lrs for s in (0.01, 0.03, 0.1)]}


def algorithm_part(args, skew) -> dict:
    """Part 2: client and server optimisers under the same skew (global test accuracy).

    Every algorithm gets its own client and server learning rate, chosen together on a
    validation split of seed ``seeds[0]``'s training data; then every seed runs.
    """
    from fedtl_helpers.workflow.tuning import compare_arms

    base = dict(dataset=args.dataset, n_train=args.n_train, n_test=args.n_test, num_clients=args.clients,
                rounds=args.rounds, strategy="head", **skew)
    arms = {name: fl.ExperimentConfig(**base, **kw) for name, kw in ALGORITHMS.items()}

    def load(seed):
        return fl.load_dataset(args.dataset, n_train=args.n_train, n_test=args.n_test, seed=seed)

    cmp = compare_arms(arms, algorithm_candidates(args.algo_lrs), seeds=args.seeds, load=load,
                       field=("learning_rate", "server_lr"), log=lambda line: print(line, flush=True))
    print(f"\n2. global test accuracy at alpha={args.alpha}, weights=builtin, strategy=head, "
          f"{args.rounds} rounds, mean of the last {args.algo_tail} rounds, seeds {args.seeds}; "
          "client and server learning rates tuned per algorithm on a validation split")
    out: dict = {"algorithm_tail": args.algo_tail, "algorithm_curves": cmp.curves(),
                 "algorithm_configs": cmp.configs(),
                 "algorithm_tuning_scores": {
                     a: {"/".join(map(str, k)): round(v, 4) for k, v in t.scores.items()}
                     for a, t in cmp.tuned.items()}}
    for name in ALGORITHMS:
        finals = cmp.finals(name, args.algo_tail)
        lr, server_lr = cmp.tuned[name].best
        out[f"algorithm {name}"] = round(float(np.mean(finals)), 4)
        out[f"algorithm {name}_min"] = round(min(finals), 4)
        out[f"algorithm {name}_max"] = round(max(finals), 4)
        out[f"algorithm {name}_lr"], out[f"algorithm {name}_server_lr"] = lr, server_lr
        out[f"algorithm {name}_at_grid_edge"] = cmp.tuned[name].at_edge()
        print(f"{name:20s} lr {lr:.0e} server lr {server_lr:<5g} {np.mean(finals):.3f} "
              f"[{min(finals):.3f}, {max(finals):.3f}]")
    return out


def gap_part(args, common, skew) -> dict:
    """Part 3: pretrained vs random start, IID vs skewed, full fine-tuning, over seeds.

    Four arms, each with its own learning rate chosen on a validation split of seed
    ``gap_seeds[0]``'s training data (``tuning.compare_arms``): a random start wants another
    rate than a pretrained one, and a skewed federation perhaps another than an IID one.
    """
    from fedtl_helpers.workflow.tuning import compare_arms

    base = dict(common, n_train=args.gap_n_train, num_clients=args.gap_clients, rounds=args.gap_rounds,
                strategy="full")
    starts = {"pretrained": "builtin", "random": None}
    arms = {f"{start} {part}": fl.ExperimentConfig(**base, weights=w, **(skew if part == "skew" else {}))
            for start, w in starts.items() for part in ("iid", "skew")}

    def load(seed):
        return fl.load_dataset(args.dataset, n_train=args.gap_n_train, n_test=args.n_test, seed=seed)

    from fedtl_helpers.workflow.tuning import ResumableRuns

    runs = ResumableRuns(args.resume_dir) if args.resume_dir else None
    cmp = compare_arms(arms, args.gap_grid, seeds=args.gap_seeds, load=load, start=args.gap_start,
                       tune_rounds=args.gap_tune_rounds, last=args.gap_tail, run=runs,
                       log=lambda line: print(line, flush=True))
    print(f"\n3. global test accuracy, data: {args.dataset}, strategy=full, {args.gap_rounds} rounds, "
          f"{args.gap_clients} clients, {args.gap_n_train} train, mean of the last {args.gap_tail} rounds, "
          f"seeds {args.gap_seeds}; learning rate tuned per arm on a validation split")
    print(f"{'start':12s} {'lr IID':>7s} {'lr skew':>8s} {'IID':>6s} {'alpha=' + str(args.alpha):>10s} "
          f"{'lost':>6s} {'lost per seed':>22s}")
    out: dict = {"gap_rounds": args.gap_rounds, "gap_tail": args.gap_tail, "gap_seeds": args.gap_seeds,
                 "gap_clients": args.gap_clients, "gap_n_train": args.gap_n_train,
                 "gap_grid": args.gap_grid, "gap_start": args.gap_start,
                 "gap_tune_rounds": args.gap_tune_rounds, "gap_resumed_runs": runs.resumed if runs else 0,
                 "gap_curves": cmp.curves(), "gap_configs": cmp.configs(),
                 "gap_tuning_scores": {arm: {str(k): round(v, 4) for k, v in t.scores.items()}
                                       for arm, t in cmp.tuned.items()}}
    lost_per_seed = {}

    def r4(x) -> float:
        return round(float(x), 4)

    for start in starts:
        iid = np.asarray(cmp.finals(f"{start} iid", args.gap_tail))
        sk = np.asarray(cmp.finals(f"{start} skew", args.gap_tail))
        lost = iid - sk
        lost_per_seed[start] = lost
        lr_iid, lr_skew = (cmp.tuned[f"{start} {p}"].best for p in ("iid", "skew"))
        print(f"{start:12s} {lr_iid:7.0e} {lr_skew:8.0e} {iid.mean():6.3f} {sk.mean():10.3f} "
              f"{lost.mean():6.3f} {' '.join(f'{x:+.3f}' for x in lost):>22s}")
        out.update({f"iid_{start}": r4(iid.mean()), f"skew_{start}": r4(sk.mean()),
                    f"iid_{start}_per_seed": [r4(x) for x in iid],
                    f"skew_{start}_per_seed": [r4(x) for x in sk],
                    f"gap_{start}": r4(lost.mean()),
                    f"gap_{start}_min": r4(lost.min()), f"gap_{start}_max": r4(lost.max()),
                    f"gap_{start}_per_seed": [r4(x) for x in lost],
                    f"relative_gap_{start}": r4((lost / iid).mean()),
                    f"lr_{start}_iid": lr_iid, f"lr_{start}_skew": lr_skew})
        edge = {p: cmp.tuned[f"{start} {p}"].at_edge() for p in ("iid", "skew")}
        out[f"lr_{start}_at_grid_edge"] = [p for p, e in edge.items() if e]
    diff = lost_per_seed["random"] - lost_per_seed["pretrained"]
    out.update(gap_difference=r4(diff.mean()), gap_difference_min=r4(diff.min()),
               gap_difference_max=r4(diff.max()), seeds_where_pretrained_loses_less=int(np.sum(diff > 0)))
    per_seed = ", ".join(f"{x:+.3f}" for x in diff)
    print(f"random loses {diff.mean():+.3f} more than pretrained (per seed {per_seed})")
    return out


def summarise(per_seed: list[dict]) -> dict:
    """Every numeric figure: its mean over seeds, and its min and max as ``_min`` / ``_max``."""
    out = {}
    for key, value in per_seed[0].items():
        if isinstance(value, float) and key not in ("seed",):
            values = [fig[key] for fig in per_seed]
            out[key] = round(float(np.mean(values)), 4)
            out[key + "_min"], out[key + "_max"] = min(values), max(values)
    return out


def main() -> None:
    from fedtl_helpers.workflow.tuning import LR_GRID

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=("shapes", "digits"), default="shapes",
                    help="shapes (embedded synthetic) or digits (real handwritten digits: pass "
                         "--n-train <= 1297 --n-test <= 500 --gap-n-train <= 1297)")
    ap.add_argument("--n-train", type=int, default=3000)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--rounds", type=int, default=10, help="head-only rounds (parts 1 and 2)")
    ap.add_argument("--finetune-epochs", type=int, default=5)
    ap.add_argument("--parts", type=int, nargs="+", default=[1, 2, 3], choices=[1, 2, 3],
                    help="which parts to run (3 is the long one: about 40 min for 3 seeds on 2 cores)")
    ap.add_argument("--gap-rounds", type=int, default=25, help="full fine-tuning rounds (part 3)")
    ap.add_argument("--gap-tail", type=int, default=5,
                    help="part 3 accuracy = mean over this many last rounds")
    ap.add_argument("--gap-seeds", type=int, nargs="+", default=[0, 1, 2],
                    help="part 3 seeds (partition, initialisation, client order)")
    ap.add_argument("--gap-grid", type=float, nargs="+", default=list(LR_GRID),
                    help="part 3: the one log grid of client learning rates every arm draws from")
    ap.add_argument("--gap-start", type=float, default=1e-3,
                    help="part 3: where every arm's search starts on --gap-grid (it widens until interior)")
    ap.add_argument("--gap-tune-rounds", type=int,
                    help="part 3 rounds per tuning trial (default: --gap-rounds, the horizon it runs)")
    ap.add_argument("--resume-dir", type=Path,
                    help="part 3: checkpoint every trial and run here; the same command started again "
                         "after a kill continues where it stopped, with the same results")
    ap.add_argument("--gap-n-train", type=int, default=5000,
                    help="part 3 uses more data per client, so random init learns at all (as in "
                         "bench_transfer.py: 5 clients x 1000 images)")
    ap.add_argument("--gap-clients", type=int, default=5)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                    help="parts 1 and 2: one run per seed; the JSON gives each figure's mean, and "
                         "its min and max over seeds as <name>_min / <name>_max")
    ap.add_argument("--algo-lrs", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2, 3e-2, 1e-1],
                    help="part 2 client learning rates tried (with server rates for FedAvgM, FedAdam)")
    ap.add_argument("--algo-tail", type=int, default=3,
                    help="part 2 accuracy = mean of this many last rounds")
    ap.add_argument("--out", type=Path, help="also write the JSON (with its provenance) atomically")
    args = ap.parse_args()
    if not 1 <= args.gap_tail <= args.gap_rounds:
        ap.error(f"--gap-tail {args.gap_tail} is invalid: allowed 1 to --gap-rounds ({args.gap_rounds})")
    if args.gap_tune_rounds is None:
        args.gap_tune_rounds = args.gap_rounds
    if args.gap_tune_rounds < args.gap_tail:
        ap.error(f"--gap-tune-rounds {args.gap_tune_rounds} is invalid: allowed >= --gap-tail "
                 f"({args.gap_tail}), so trials are scored on the tail the runs report")
    check_grid(ap, "--gap-grid", args.gap_grid, [args.gap_start])
    if args.resume_dir:
        from fedtl_helpers.core.storage import UserError, check_output_dir

        try:
            check_output_dir(args.resume_dir, "--resume-dir")
        except UserError as err:
            ap.error(str(err))
    sizes = [args.n_train] + ([args.gap_n_train] if 3 in args.parts else [])
    if args.dataset == "digits" and (max(sizes) > 1297 or args.n_test > 500):
        ap.error("--dataset digits has 1297 training and 500 test images: allowed --n-train and "
                 "--gap-n-train <= 1297, --n-test <= 500")
    t_all = time.perf_counter()
    skew = dict(partition="dirichlet", alpha=args.alpha)
    out: dict = {"dataset": args.dataset, "data": fl.describe(args.dataset),
                 "weights": "builtin vs random init", "alpha": args.alpha, "parts": args.parts}
    per_seed = []
    for seed in args.seeds if 1 in args.parts else []:  # parts 2 and 3 load their own data per seed
        args.seed = seed
        common = dict(dataset=args.dataset, n_train=args.n_train, n_test=args.n_test,
                      num_clients=args.clients, seed=seed)
        data = fl.load_dataset(args.dataset, n_train=args.n_train, n_test=args.n_test, seed=seed)
        print(f"\ndata: {fl.describe(args.dataset)}, {args.n_train} train / {args.n_test} test, "
              f"{args.clients} clients, Dirichlet alpha={args.alpha}, seed={seed}")
        fig: dict = {}
        if 1 in args.parts:
            fig.update(personal_part(args, data, common, skew))
        per_seed.append(fig)
    if per_seed:
        out.update(summarise(per_seed), seeds=args.seeds, per_seed=per_seed)
    if 2 in args.parts:
        out.update(algorithm_part(args, skew), seeds=args.seeds)
    if 3 in args.parts:
        out.update(gap_part(args, dict(dataset=args.dataset, n_test=args.n_test), skew))
    out["seconds"] = round(time.perf_counter() - t_all, 1)
    if args.out:
        from fedtl_helpers.workflow import results
        results.save(args.out, out, seconds=out["seconds"])
    bulky = ("per_seed", "algorithm_curves", "algorithm_configs", "gap_curves", "gap_configs")
    print(json.dumps({k: v for k, v in out.items() if k not in bulky}))  # the file keeps them all


if __name__ == "__main__":
    main()

"""Non-IID data: what label skew costs, what personalisation and pretraining give back.

Chapter: "Non-IID data and personalisation". Embedded data (``shapes``), side by side (parts 1
and 2 for every seed of ``--seeds``, part 3 for every seed of ``--gap-seeds``):

1. alpha = 0.1 (Dirichlet label skew), head-only FedAvg on the built-in pretrained backbone:
   per-client held-out accuracy of the global model vs local fine-tuning, the interpolation
   chosen per client on a validation slice, and FedPer (local classifier layer);
2. FedAvg vs FedProx vs FedAvgM vs FedAdam at alpha = 0.1 (same setting, global test accuracy);
3. full fine-tuning from the built-in pretrained backbone vs random init, IID vs alpha = 0.1:
   how much global test accuracy each start loses to label skew (Nguyen et al., ICLR 2023).
   Accuracy is the mean over the last ``--gap-tail`` rounds (the skewed runs swing by several
   points from round to round), the final round is reported beside it, and ``--gap-seeds``
   repeats the comparison on other partitions and initialisations.

Usage: ``python benchmarks/bench_noniid.py [--parts 1 2 3] [--rounds 10] [--gap-rounds 60]
[--gap-seeds 0 1 2] [--out results/bench_noniid.json]``. Last line: JSON with the figures of the
parts that ran.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import fedtl_helpers as fl  # noqa: E402
from fedtl_helpers import evaluation, personalization  # noqa: E402


def personal_part(args, data, common, skew) -> dict:
    """Part 1: personalisation, per client, on each client's held-out split."""
    cfg = fl.ExperimentConfig(**common, **skew, rounds=args.rounds, strategy="head", holdout_fraction=0.2)
    sim = fl.Simulation(cfg, data)
    fed = fl.run_federated(cfg, simulation=sim, progress=False)
    pers = personalization.finetune_clients(sim, fed.weights, args.finetune_epochs, seed=args.seed)
    fedper = personalization.fedper_accuracy(sim, personalization.run_fedper(cfg, simulation=sim))
    rows = {"global (FedAvg)": pers.global_acc,
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
        "interpolation_mean": round(float(pers.mixed_acc.mean()), 4),
        "fedper_mean": round(float(fedper.mean()), 4),
    }


def algorithm_part(args, data, common, skew) -> dict:
    """Part 2: client and server optimisers under the same skew (global test accuracy)."""
    algos = {"FedAvg": {}, "FedProx mu=0.1": {"prox_mu": 0.1},
             "FedAvgM beta=0.9": {"server_optimizer": "momentum", "server_lr": 1.0},
             "FedAdam lr=0.03": {"server_optimizer": "adam", "server_lr": 0.03}}
    algo_acc = {}
    for name, kw in algos.items():
        c = fl.ExperimentConfig(**common, **skew, rounds=args.rounds, strategy="head", **kw)
        algo_acc[name] = fl.run_federated(c, dataset=data, progress=False).history.column("test_accuracy")[-1]
    print(f"\n2. global test accuracy at alpha={args.alpha}, weights=builtin, strategy=head, "
          f"{args.rounds} rounds")
    for name, acc in algo_acc.items():
        print(f"{name:20s} {acc:.3f}")
    return {"algorithms": {k: round(v, 4) for k, v in algo_acc.items()}}


def gap_part(args, common, skew) -> dict:
    """Part 3: pretrained vs random start, IID vs skewed, full fine-tuning, over seeds."""
    starts = {"builtin": "pretrained (builtin)", None: "random init"}
    res = {w: {"iid": [], "skew": [], "iid_final": [], "skew_final": []} for w in starts}
    for seed in args.gap_seeds:
        gap_data = fl.load_dataset("shapes", n_train=args.gap_n_train, n_test=args.n_test, seed=seed)
        gap_common = dict(common, n_train=args.gap_n_train, num_clients=args.gap_clients, seed=seed)
        for weights in starts:
            for part in ("iid", "skew"):
                c = fl.ExperimentConfig(**gap_common, **(skew if part == "skew" else {}),
                                        rounds=args.gap_rounds, strategy="full", weights=weights)
                h = fl.run_federated(c, dataset=gap_data, progress=False).history
                res[weights][part].append(h.tail_accuracy(args.gap_tail))
                res[weights][part + "_final"].append(h.final_accuracy)
            r = res[weights]
            print(f"seed {seed} {starts[weights]:22s} IID {r['iid'][-1]:.3f} alpha={args.alpha} "
                  f"{r['skew'][-1]:.3f} (final round {r['iid_final'][-1]:.3f} / {r['skew_final'][-1]:.3f})",
                  flush=True)
    print(f"\n3. global test accuracy, data: shapes (embedded), strategy=full, {args.gap_rounds} rounds, "
          f"{args.gap_clients} clients, {args.gap_n_train} train, mean of the last {args.gap_tail} rounds, "
          f"seeds {args.gap_seeds}")
    print(f"{'start':22s} {'IID':>6s} {'alpha=' + str(args.alpha):>10s} {'lost':>6s} {'relative':>9s} "
          f"{'lost (final round)':>19s}")
    out: dict = {"gap_rounds": args.gap_rounds, "gap_tail": args.gap_tail, "gap_seeds": args.gap_seeds,
                 "gap_clients": args.gap_clients, "gap_n_train": args.gap_n_train}
    lost_per_seed = {}
    for weights, label in starts.items():
        r = {k: np.asarray(v) for k, v in res[weights].items()}
        lost, lost_final = r["iid"] - r["skew"], r["iid_final"] - r["skew_final"]
        lost_per_seed[weights] = lost
        print(f"{label:22s} {r['iid'].mean():6.3f} {r['skew'].mean():10.3f} {lost.mean():6.3f} "
              f"{(lost / r['iid']).mean():9.1%} {lost_final.mean():19.3f}")
        key = "pretrained" if weights else "random"
        out.update({f"iid_{key}": round(float(r["iid"].mean()), 4),
                    f"skew_{key}": round(float(r["skew"].mean()), 4),
                    f"gap_{key}": round(float(lost.mean()), 4),
                    f"gap_{key}_per_seed": [round(float(x), 4) for x in lost],
                    f"relative_gap_{key}": round(float((lost / r["iid"]).mean()), 4),
                    f"gap_{key}_final_round": round(float(lost_final.mean()), 4)})
    out["seeds_where_pretrained_loses_less"] = int(np.sum(lost_per_seed["builtin"] < lost_per_seed[None]))
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
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=3000)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--rounds", type=int, default=10, help="head-only rounds (parts 1 and 2)")
    ap.add_argument("--finetune-epochs", type=int, default=5)
    ap.add_argument("--parts", type=int, nargs="+", default=[1, 2, 3], choices=[1, 2, 3],
                    help="which parts to run (3 is the long one: about 35 min per seed on 2 cores)")
    ap.add_argument("--gap-rounds", type=int, default=60, help="full fine-tuning rounds (part 3)")
    ap.add_argument("--gap-tail", type=int, default=10,
                    help="part 3 accuracy = mean over this many last rounds")
    ap.add_argument("--gap-seeds", type=int, nargs="+", default=[0],
                    help="part 3 seeds (partition, initialisation, client order)")
    ap.add_argument("--gap-n-train", type=int, default=5000,
                    help="part 3 uses more data per client, so random init learns at all")
    ap.add_argument("--gap-clients", type=int, default=5)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                    help="parts 1 and 2: one run per seed; the JSON gives each figure's mean, and "
                         "its min and max over seeds as <name>_min / <name>_max")
    ap.add_argument("--out", type=Path, help="also write the JSON (with its provenance) atomically")
    args = ap.parse_args()
    if not 1 <= args.gap_tail <= args.gap_rounds:
        ap.error(f"--gap-tail {args.gap_tail} is invalid: allowed 1 to --gap-rounds ({args.gap_rounds})")
    t_all = time.perf_counter()
    skew = dict(partition="dirichlet", alpha=args.alpha)
    out: dict = {"dataset": "shapes", "weights": "builtin vs random init", "alpha": args.alpha,
                 "parts": args.parts}
    per_seed = []
    for seed in args.seeds if {1, 2} & set(args.parts) else []:  # part 3 has its own data and seeds
        args.seed = seed
        common = dict(n_train=args.n_train, n_test=args.n_test, num_clients=args.clients, seed=seed)
        data = fl.load_dataset("shapes", n_train=args.n_train, n_test=args.n_test, seed=seed)
        print(f"\ndata: shapes (embedded), {args.n_train} train / {args.n_test} test, {args.clients} "
              f"clients, Dirichlet alpha={args.alpha}, seed={seed}")
        fig: dict = {}
        if 1 in args.parts:
            fig.update(personal_part(args, data, common, skew))
        if 2 in args.parts:
            fig.update({f"algorithm {k}": v for k, v in algorithm_part(args, data, common, skew)
                        ["algorithms"].items()})
        per_seed.append(fig)
    if per_seed:
        out.update(summarise(per_seed), seeds=args.seeds, per_seed=per_seed)
    if 3 in args.parts:
        out.update(gap_part(args, dict(n_test=args.n_test), skew))
    out["seconds"] = round(time.perf_counter() - t_all, 1)
    if args.out:
        from fedtl_helpers import results

        results.save(args.out, out, seconds=out["seconds"])
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""Robust aggregation under attack: every rule x attack arm at its own tuned rate, three seeds.

Chapter: "Secure aggregation and robustness". A fixed, seeded fifth of the clients send
``-attack_scale * delta`` (``sign_flip``) or ``attack_scale * delta`` (``scale``); FedAvg,
coordinate-wise median, trimmed mean and Krum aggregate, each also without an attack (what a
robust rule costs when nobody lies). The chapter interprets the gaps, so every arm gets its own
client learning rate from one log grid shared by all arms (``--grid``): its search starts at
``--start`` and widens until the choice is interior (``tuning.compare_arms``). Each trial runs on
a validation split of the first seed's training data (the defender's clean held-out slice, never
the test set) for as many rounds as the run (``--tune-rounds`` defaults to ``--rounds``) and is
scored on the same tail. Every arm then runs on every seed of ``--seeds``; accuracy is the mean
of the last ``--last`` rounds.

    python benchmarks/bench_robust.py [--rounds 12] [--seeds 0 1 2] [--out results/bench_robust.json]

Last line: one JSON object; per arm (``"<rule>, <attack>"``) ``lr``, ``final_acc`` (mean over
seeds) with ``final_acc_min``/``_max``; ``chance``; and per rule ``cost_points`` (the rule without
attack minus FedAvg without attack, per seed: mean, ``_min``, ``_max``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _args import add_grid, check_grid, check_tuned_run  # noqa: E402  (benchmarks/ is the script's own folder)

ATTACKS = ("none", "sign_flip", "scale")


def rules(malicious_fraction: float, clients: int) -> dict[str, dict]:
    """The aggregation rules, set for the assumed share of attackers (as chapter 12 does)."""
    return {"FedAvg": {"aggregator": "fedavg"}, "median": {"aggregator": "median"},
            "trimmed mean": {"aggregator": "trimmed_mean", "trim_fraction": malicious_fraction},
            "Krum": {"aggregator": "krum", "krum_byzantine": max(1, round(malicious_fraction * clients))}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--per-client", type=int, default=300)
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument("--local-epochs", type=int, default=2)
    p.add_argument("--malicious-fraction", type=float, default=0.2)
    p.add_argument("--attack-scale", type=float, default=10.0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    add_grid(p, "the one log grid of client learning rates every arm draws from")
    p.add_argument("--start", type=float, default=3e-3, help="where every arm's search starts on --grid")
    p.add_argument("--tune-rounds", type=int, help="rounds per tuning trial (default: --rounds)")
    p.add_argument("--last", type=int, default=3, help="final accuracy = mean of the last rounds")
    p.add_argument("--out", type=Path, help="also write the JSON (per-round curves, provenance) atomically")
    args = p.parse_args()
    check_tuned_run(p, args)
    check_grid(p, "--grid", args.grid, [args.start])

    import numpy as np

    from fedtl_helpers.core.config import ExperimentConfig
    from fedtl_helpers.inputs import data
    from fedtl_helpers.workflow.tuning import compare_arms

    n_train = args.clients * args.per_client
    base = dict(num_clients=args.clients, n_train=n_train, n_test=args.n_test, rounds=args.rounds,
                local_epochs=args.local_epochs, strategy="head", weights="builtin")
    # config validation happens here, before any training
    arms = {f"{rule}, {attack}": ExperimentConfig(
                **base, **kw, **({} if attack == "none" else
                                 {"attack": attack, "malicious_fraction": args.malicious_fraction,
                                  "attack_scale": args.attack_scale}))
            for attack in ATTACKS for rule, kw in rules(args.malicious_fraction, args.clients).items()}
    t0 = time.perf_counter()
    comp = compare_arms(arms, args.grid, start=args.start, seeds=args.seeds, tune_rounds=args.tune_rounds,
                        last=args.last,
                        load=lambda seed: data.load_dataset("shapes", n_train=n_train, n_test=args.n_test,
                                                            seed=seed),
                        log=lambda s: print(s, file=sys.stderr, flush=True))
    summary = comp.summary(args.last)
    out_arms = {a: {"lr": summary[a]["learning_rate"], "final_acc": round(summary[a]["mean"], 4),
                    "final_acc_min": round(summary[a]["min"], 4),
                    "final_acc_max": round(summary[a]["max"], 4),
                    "at_grid_edge": comp.tuned[a].at_edge(),
                    "tuning_scores": {str(k): round(v, 4) for k, v in comp.tuned[a].scores.items()}}
                for a in arms}
    clean = comp.finals("FedAvg, none", args.last)
    cost = {}
    for rule in rules(args.malicious_fraction, args.clients):
        gaps = [100 * (r - c) for r, c in zip(comp.finals(f"{rule}, none", args.last), clean)]
        cost[rule] = {"cost_points": round(float(np.mean(gaps)), 2), "cost_points_min": round(min(gaps), 2),
                      "cost_points_max": round(max(gaps), 2)}
    first = comp.histories["FedAvg, none"][0]
    result = {
        "data": f"{first.meta['dataset']}; {args.clients} IID clients x {args.per_client} images, "
                f"{args.n_test} test images, {args.local_epochs} local epochs, head on the built-in backbone",
        "weights": "builtin", "seeds": args.seeds, "rounds": args.rounds, "last": args.last,
        "grid": args.grid, "tune_rounds": args.tune_rounds,
        "malicious_fraction": args.malicious_fraction, "attack_scale": args.attack_scale,
        "chance": 1 / len(data.class_names("shapes")),
        "arms": out_arms, "rule_cost": cost, "configs": comp.configs(),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(f"# {first.meta['describe']}; {args.rounds} rounds, seeds {args.seeds}, mean of the last "
          f"{args.last} rounds; learning rate tuned per arm on a validation split, "
          f"{args.tune_rounds}-round trials")
    print(f"{'rule':14} " + " ".join(f"{a:>24}" for a in ATTACKS))
    for rule in rules(args.malicious_fraction, args.clients):
        cells = [out_arms[f"{rule}, {a}"] for a in ATTACKS]
        print(f"{rule:14} " + " ".join(f"{c['final_acc']:.3f} [{c['final_acc_min']:.3f}, "
                                       f"{c['final_acc_max']:.3f}] {c['lr']:<6g}" for c in cells))
    if args.out:
        from fedtl_helpers.workflow import results
        results.save(args.out, {**result, "curves": comp.curves()}, seconds=result["seconds"])
    print(json.dumps({k: v for k, v in result.items() if k != "configs"}))


if __name__ == "__main__":
    main()

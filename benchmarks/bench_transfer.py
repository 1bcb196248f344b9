"""Federated training from the built-in pretrained backbone vs from random initialisation.

Same clients, data, rounds and seed; only the initial backbone weights differ. The
pretrained backbone was trained on 20 *other* shapes (``scripts/pretrain_backbone.py``), so
this is a real transfer experiment, offline.

    python benchmarks/bench_transfer.py [--rounds 30] [--target 0.6]

Last line: one JSON object with ``acc_round1_pretrained``, ``acc_round1_random`` and
``rounds_ratio`` (rounds random init needs to reach ``--target`` / rounds pretrained needs; if
random never reaches it, the ratio is a lower bound computed with ``rounds + 1`` and
``random_reached_target`` is false).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--clients", type=int, default=5)
    p.add_argument("--per-client", type=int, default=1000)
    p.add_argument("--target", type=float, default=0.6, help="test accuracy to reach")
    p.add_argument("--strategy", default="full")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    from fedtl_helpers.config import ExperimentConfig
    from fedtl_helpers.server import run_federated

    hist = {}
    for weights in ("builtin", None):
        cfg = ExperimentConfig(num_clients=args.clients, n_train=args.clients * args.per_client,
                               n_test=2000, rounds=args.rounds, strategy=args.strategy,
                               weights=weights, seed=args.seed)
        hist[weights] = run_federated(cfg, progress=False).history
    print(f"# {hist['builtin'].meta['describe']} vs weights=None (random init)")
    print(f"{'round':>5} {'pretrained':>10} {'random':>8}")
    for a, b in zip(hist["builtin"].rows, hist[None].rows):
        print(f"{a['round']:>5} {a['test_accuracy']:>10.4f} {b['test_accuracy']:>8.4f}")
    r_pre = hist["builtin"].rounds_to_reach(args.target)
    r_rnd = hist[None].rounds_to_reach(args.target)
    summary = {
        "acc_round1_pretrained": hist["builtin"].rows[1]["test_accuracy"],
        "acc_round1_random": hist[None].rows[1]["test_accuracy"],
        "final_acc_pretrained": hist["builtin"].final_accuracy,
        "final_acc_random": hist[None].final_accuracy,
        "target": args.target,
        "rounds_to_target_pretrained": r_pre,
        "rounds_to_target_random": r_rnd,
        "random_reached_target": r_rnd is not None,
        "rounds_ratio": (None if r_pre is None
                         else round((r_rnd or args.rounds + 1) / max(r_pre, 1), 2)),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

"""Head-only federated training with and without feature caching, side by side.

With a frozen backbone (``strategy="head"``) the backbone is a fixed function. Without the
cache every client runs it on its images in every epoch of every round; with the cache each
client runs it once and trains the head on the stored features. Same config, seed and data;
the two runs must also end at the same accuracy (they are the same model).

    python benchmarks/bench_feature_cache.py [--rounds 5] [--per-client 1000]

Last line: one JSON object with ``speedup`` (uncached seconds per round / cached, rounds after
the first) and ``speedup_incl_first_round`` (including the round that computes the features).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--clients", type=int, default=5)
    p.add_argument("--per-client", type=int, default=1000)
    p.add_argument("--local-epochs", type=int, default=2)
    args = p.parse_args()

    from fedtl_helpers.core.config import ExperimentConfig
    from fedtl_helpers.federation.server import run_federated

    runs = {}
    for cache in (False, True):
        cfg = ExperimentConfig(num_clients=args.clients, n_train=args.clients * args.per_client,
                               n_test=2000, rounds=args.rounds, local_epochs=args.local_epochs,
                               strategy="head", weights="builtin", feature_cache=cache)
        runs[cache] = run_federated(cfg, progress=False).history
    print(f"# {runs[True].meta['describe']}; {args.local_epochs} local epochs")
    print(f"{'round':>5} {'s uncached':>10} {'s cached':>9} {'acc uncached':>12} {'acc cached':>10}")
    for a, b in zip(runs[False].rows[1:], runs[True].rows[1:]):
        print(f"{a['round']:>5} {a['seconds']:>10.3f} {b['seconds']:>9.3f} "
              f"{a['test_accuracy']:>12.4f} {b['test_accuracy']:>10.4f}")

    def mean_s(h, skip_first):
        s = h.column("seconds")[2 if skip_first else 1:]
        return sum(s) / len(s)

    summary = {
        "speedup": round(mean_s(runs[False], True) / mean_s(runs[True], True), 1),
        "speedup_incl_first_round": round(mean_s(runs[False], False) / mean_s(runs[True], False), 1),
        "sec_per_round_uncached": round(mean_s(runs[False], True), 3),
        "sec_per_round_cached": round(mean_s(runs[True], True), 4),
        "final_acc_uncached": runs[False].final_accuracy,
        "final_acc_cached": runs[True].final_accuracy,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

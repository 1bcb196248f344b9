"""Update compression and model compression, side by side, same data, seed and rounds.

Part 1 (communication): one federated run per uplink encoding; bytes uploaded (as counted by
the server, headers and indices included) and final test accuracy, each against plain float32
FedAvg. Part 2 (storage): the model of the float32 run as a float32 TFLite file and as a full
int8 TFLite file; size on disk, accuracy and single-image CPU latency.

    python benchmarks/bench_compression.py [--strategy head] [--rounds 30] [--per-client 1000]

The default trains the head on the frozen pretrained backbone (the course's classroom setting);
``--strategy full`` sends the whole model every round (slower; top-k then needs more rounds).

Last line: one JSON object; per method ``bytes_ratio`` (float32 bytes up / method's bytes up)
and ``acc_drop`` (accuracy points lost against float32, negative = gained); for the TFLite
model ``size_ratio`` and ``acc_drop``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

METHODS = {
    "float32": {},
    "float16": {"compression": "float16"},
    "q8": {"compression": "quantize", "quantize_bits": 8},
    "q4": {"compression": "quantize", "quantize_bits": 4},
    "prune_1pct": {"compression": "prune", "sparsity": 0.01},
    "topk_ef_1pct": {"compression": "topk", "sparsity": 0.01},
    "topk_ef_1pct_q8": {"compression": "topk", "sparsity": 0.01, "sparse_value_bits": 8},
    "topk_ef_2pct_q8": {"compression": "topk", "sparsity": 0.02, "sparse_value_bits": 8},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--strategy", default="head", choices=("head", "partial", "full"))
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--clients", type=int, default=5)
    p.add_argument("--per-client", type=int, default=1000)
    p.add_argument("--methods", default=",".join(METHODS),
                   help="comma-separated subset of " + ", ".join(METHODS))
    args = p.parse_args()
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or "float32" not in methods:
        p.error(f"--methods: unknown {unknown}; allowed {list(METHODS)}, "
                "and float32 (the baseline) is required")

    import numpy as np

    from fedtl_helpers import model_compression as mc
    from fedtl_helpers.config import ExperimentConfig
    from fedtl_helpers.data import load_dataset
    from fedtl_helpers.server import run_federated

    data = load_dataset("shapes", n_train=args.clients * args.per_client, n_test=2000, seed=0)
    results, base_model = {}, None
    for name in methods:
        cfg = ExperimentConfig(num_clients=args.clients, n_train=args.clients * args.per_client, n_test=2000,
                               rounds=args.rounds, strategy=args.strategy, weights="builtin", seed=0,
                               **METHODS[name])
        res = run_federated(cfg, dataset=data, progress=False)
        results[name] = res.history
        if name == "float32":
            base_model = res.model
            describe = res.history.meta["describe"]
            # Now: the next runs reuse nothing, but the shared model would hold their weights.
            rows = mc.compare(base_model, data[0], data[1], sparsity=0.5)
        up = sum(res.history.column("bytes_up")) / 1e6
        print(f"{name:<16} acc {res.history.final_accuracy:.4f}  up {up:9.3f} MB", file=sys.stderr,
              flush=True)

    base = results["float32"]
    base_up = sum(base.column("bytes_up"))
    print(f"# {describe}; {args.rounds} rounds, {args.per_client} images per client")
    print(f"{'method':<16} {'MB up':>9} {'x fewer':>8} {'final acc':>9} {'drop (pts)':>10}")
    summary: dict = {"strategy": args.strategy, "rounds": args.rounds, "clients": args.clients,
                     "per_client": args.per_client, "dataset": "shapes", "weights": "builtin"}
    for name, h in results.items():
        up = sum(h.column("bytes_up"))
        drop = 100 * (base.final_accuracy - h.final_accuracy)
        print(f"{name:<16} {up / 1e6:>9.3f} {base_up / up:>8.1f} {h.final_accuracy:>9.4f} {drop:>10.2f}")
        summary[name] = {"bytes_ratio": round(base_up / up, 2), "acc_drop": round(drop, 2),
                         "final_acc": h.final_accuracy}
    print()
    print(mc.table(rows))
    f32, i8 = rows[0], rows[1]
    summary["tflite_int8"] = {"size_ratio": round(f32.bytes / i8.bytes, 2),
                              "acc_drop": round(100 * (f32.accuracy - i8.accuracy), 2),
                              "latency_ratio": round(f32.latency_ms / i8.latency_ms, 2),
                              "bytes_float32": f32.bytes, "bytes_int8": i8.bytes}
    pruned = rows[3]
    summary["tflite_pruned50_int8"] = {"gzip_size_ratio": round(f32.gzip_bytes / pruned.gzip_bytes, 2),
                                       "acc_drop": round(100 * (f32.accuracy - pruned.accuracy), 2)}
    keras_pred = mc.keras_predictor(base_model)
    summary["keras_eager_latency_ms"] = round(mc.latency_ms(keras_pred, data[1][0]), 3)  # not a graph
    summary["keras_acc"] = float(np.round(mc.accuracy(keras_pred, *data[1]), 4))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

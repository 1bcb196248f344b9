"""Update compression and model compression, side by side: every encoding at its own tuned rate.

Chapter: "Communication efficiency" (and "Compute and storage limits" for part 2).

Part 1 (communication): one federated run per uplink encoding on the same clients; bytes
uploaded (as counted by the server, headers and indices included) and test accuracy, each
against plain float32 FedAvg. The chapter interprets the accuracy gaps, so the comparison is
fair: every encoding gets its own client learning rate, chosen among ``--lrs`` on a validation
split of the first seed's training data (never the test set; ``tuning.compare_arms``), and every
encoding runs on every seed of ``--seeds`` (a new data draw, partition, initialisation and
shuffling each); accuracy is the mean of the last ``--last`` rounds.

Part 2 (storage): the float32 run's model (first seed) as a float32 TFLite file and as a full
int8 TFLite file; size on disk, accuracy and single-image CPU latency.

    python benchmarks/bench_compression.py [--strategy head] [--rounds 30] [--seeds 0 1 2]
        [--out results/bench_compression.json]

The default trains the head on the frozen pretrained backbone (the course's classroom setting);
``--strategy full`` sends the whole model every round (slower; top-k then needs more rounds).

Last line: one JSON object; per method ``lr``, ``final_acc`` (mean over seeds) with
``final_acc_min``/``_max``, ``bytes_ratio`` (float32 bytes up / method's bytes up) and
``change_points`` (accuracy points against float32 in the same seed, mean, ``_min``, ``_max``;
negative = lost); for the TFLite model ``size_ratio`` and ``acc_drop``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _args import check_tuned_run  # noqa: E402  (benchmarks/ is the script's own folder)

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


def communication_part(args, data_for_seed) -> tuple[dict, dict]:
    """Part 1: every encoding tuned and run on every seed; returns (summary, curves)."""
    import numpy as np

    from fedtl_helpers.core.config import ExperimentConfig
    from fedtl_helpers.workflow.tuning import compare_arms

    arms = {name: ExperimentConfig(num_clients=args.clients, n_train=args.clients * args.per_client,
                                   n_test=args.n_test, rounds=args.rounds, strategy=args.strategy,
                                   weights="builtin", **METHODS[name])
            for name in args.methods}
    comp = compare_arms(arms, args.lrs, seeds=args.seeds, load=data_for_seed, tune_rounds=args.tune_rounds,
                        log=lambda s: print(s, file=sys.stderr, flush=True))
    summary = comp.summary(args.last)
    base_finals = comp.finals("float32", args.last)
    base_up = sum(comp.histories["float32"][0].column("bytes_up"))
    methods = {}
    for name in args.methods:
        first = comp.histories[name][0]
        up = sum(first.column("bytes_up"))
        change = [100 * (f - b) for f, b in zip(comp.finals(name, args.last), base_finals)]
        methods[name] = {
            "lr": summary[name]["learning_rate"],
            "final_acc": round(summary[name]["mean"], 4),
            "final_acc_min": round(summary[name]["min"], 4),
            "final_acc_max": round(summary[name]["max"], 4),
            "mb_up": round(up / 1e6, 4), "bytes_ratio": round(base_up / up, 2),
            "change_points": round(float(np.mean(change)), 2),
            "change_points_min": round(min(change), 2), "change_points_max": round(max(change), 2),
            "at_grid_edge": comp.tuned[name].at_edge(),
            "tuning_scores": {str(k): round(v, 4) for k, v in comp.tuned[name].scores.items()},
        }
    print(f"# {comp.histories['float32'][0].meta['describe']}; {args.rounds} rounds, "
          f"{args.per_client} images per client, seeds {args.seeds}, mean of the last {args.last} rounds")
    print(f"{'method':<16} {'lr':>6} {'MB up':>9} {'x fewer':>8} {'acc mean [min, max]':>24} "
          f"{'change (pts) [min, max]':>26}")
    for name, m in methods.items():
        print(f"{name:<16} {m['lr']:>6g} {m['mb_up']:>9.3f} {m['bytes_ratio']:>8.1f} "
              f"{m['final_acc']:>8.4f} [{m['final_acc_min']:.3f}, {m['final_acc_max']:.3f}] "
              f"{m['change_points']:>+8.2f} [{m['change_points_min']:+.2f}, {m['change_points_max']:+.2f}]")
    summary_out = {"methods": methods, "configs": comp.configs(), "tune_rounds": args.tune_rounds,
                   "bytes_up": {n: comp.histories[n][0].column("bytes_up") for n in args.methods}}
    return summary_out, comp.curves()


def storage_part(float32_config, data) -> dict:
    """Part 2: the float32 run's model of the first seed, as TFLite float32, int8 and pruned int8."""
    import numpy as np

    from fedtl_helpers.federation.server import run_federated
    from fedtl_helpers.modeling import model_compression as mc

    model = run_federated(float32_config, dataset=data, progress=False).model
    rows = mc.compare(model, data[0], data[1], sparsity=0.5)
    print()
    print(mc.table(rows))
    f32, i8, pruned = rows[0], rows[1], rows[3]
    keras_pred = mc.keras_predictor(model)
    return {
        "tflite_int8": {"size_ratio": round(f32.bytes / i8.bytes, 2),
                        "acc_drop": round(100 * (f32.accuracy - i8.accuracy), 2),
                        "latency_ratio": round(f32.latency_ms / i8.latency_ms, 2),
                        "bytes_float32": f32.bytes, "bytes_int8": i8.bytes},
        "tflite_pruned50_int8": {"gzip_size_ratio": round(f32.gzip_bytes / pruned.gzip_bytes, 2),
                                 "acc_drop": round(100 * (f32.accuracy - pruned.accuracy), 2)},
        "keras_eager_latency_ms": round(mc.latency_ms(keras_pred, data[1][0]), 3),  # not a graph
        "keras_acc": float(np.round(mc.accuracy(keras_pred, *data[1]), 4)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--strategy", default="head", choices=("head", "partial", "full"))
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--clients", type=int, default=5)
    p.add_argument("--per-client", type=int, default=1000)
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2, 3e-2, 1e-1],
                   help="client learning rates tried for each encoding on the validation split")
    p.add_argument("--tune-rounds", type=int, default=30,
                   help="rounds per tuning trial (default: as many as the runs, so a rate is chosen for "
                        "the horizon it runs; shorter trials favour rates that start fast)")
    p.add_argument("--last", type=int, default=3, help="final accuracy = mean of the last rounds")
    p.add_argument("--methods", default=",".join(METHODS),
                   help="comma-separated subset of " + ", ".join(METHODS))
    p.add_argument("--no-storage", action="store_true", help="skip part 2 (the TFLite model)")
    p.add_argument("--out", type=Path, help="also write the JSON (per-round curves, provenance) atomically")
    args = p.parse_args()
    args.methods = args.methods.split(",")
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown or "float32" not in args.methods:
        p.error(f"--methods: unknown {unknown}; allowed {list(METHODS)}, "
                "and float32 (the baseline) is required")
    check_tuned_run(p, args)

    from fedtl_helpers.core.config import ExperimentConfig
    from fedtl_helpers.inputs.data import load_dataset

    t0 = time.perf_counter()

    def data_for_seed(seed):
        return load_dataset("shapes", n_train=args.clients * args.per_client, n_test=args.n_test, seed=seed)

    part1, curves = communication_part(args, data_for_seed)
    result: dict = {"strategy": args.strategy, "rounds": args.rounds, "last": args.last, "seeds": args.seeds,
                    "clients": args.clients, "per_client": args.per_client, "n_test": args.n_test,
                    "dataset": "shapes", "weights": "builtin", **part1}
    if not args.no_storage:
        # the recorded config of the first seed (configs() holds the first seed's runs)
        result.update(storage_part(ExperimentConfig.from_dict(part1["configs"]["float32"]),
                                   data_for_seed(args.seeds[0])))
    result["seconds"] = round(time.perf_counter() - t0, 1)
    if args.out:
        from fedtl_helpers.workflow import results
        results.save(args.out, {**result, "curves": curves}, seconds=result["seconds"])
    print(json.dumps({k: v for k, v in result.items() if k not in ("configs", "bytes_up")}))


if __name__ == "__main__":
    main()

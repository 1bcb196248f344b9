"""Parameter-efficient federated fine-tuning: every strategy on the same clients, and FedBN.

Strategies ``head``, ``full``, ``lora``, ``ffa_lora`` (LoRA with ``A`` frozen: only ``B`` is trained
and averaged, exact aggregation; Sun et al., ICLR 2024), ``bitfit`` and ``lpft`` (head-only, then
full at ``--switch-round``), run on the same IID clients (embedded data, built-in pretrained
backbone), the same rounds and seeds. Fair comparison: each strategy's client learning rate is
chosen among ``--lrs`` on a 20% validation split of the training data (seed ``--seeds[0]``,
``--tune-rounds`` rounds; never the test set) unless ``--no-tune``. Then, under feature skew (every
client sees all classes through its own colour, contrast or blur transform), FedAvg against FedBN,
each scored by the mean accuracy over clients on their own held-out images; and the same under label
skew (Dirichlet ``--label-alpha``, no style), where FedBN has no style to keep apart. Also measured:
how far averaging LoRA's factors ``A`` and ``B`` separately is from averaging their product (one
extra round of client updates from the final LoRA model), and ResNet50's parameter ratio (built at
96 px with ``weights=None``: counted, not trained).

    python benchmarks/bench_peft.py [--rounds 6] [--seeds 0 1 2] [--out results/bench_peft.json]

About 330 s of CPU (user + system) with the defaults, 13 min wall on 2 cores shared with four
other jobs (load 15); ``results/bench_peft.json`` holds that run, made before ``ffa_lora`` was
added (the record has no ``ffa_lora`` arm until it is run again).

Last line: one JSON object with, per strategy, ``bytes_up_per_round`` (all clients, mean over
rounds) and ``final_acc`` (mean over seeds), and ``lora_bytes_ratio``, ``lora_acc_gap_points``,
``ffa_lora_acc_gap_points``, ``ffa_lora_bytes_ratio``,
``lpft_dip_points``, ``fedbn_gain_points`` (feature skew), ``fedbn_gain_points_label_skew``,
``lora_param_ratio_resnet50``.
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

STRATEGIES = ("head", "full", "lora", "ffa_lora", "bitfit", "lpft")


def lpft_dip(curve: list[float]) -> float:
    """Points LP-FT's test accuracy falls below its round-1 value at its worst later round (0 if never)."""
    return max(0.0, 100 * (curve[1] - min(curve[1:])))


def resnet50_param_ratio(rank: int) -> dict[str, float]:
    """Full fine-tuning's trainable values over LoRA's (adapters + head), ResNet50 at 96 px."""
    from fedtl_helpers.modeling import models
    model = models.build_model("resnet50", None, input_size=96)
    models.set_strategy(model, "resnet50", "full")
    full = models.trainable_count(model)
    models.set_strategy(model, "resnet50", "lora", lora_rank=rank)
    lora = models.trainable_count(model)
    return {"full": full, "lora": lora, "ratio": round(full / lora, 2)}


def factor_vs_product(config, result, sim) -> dict[str, float]:
    """One more round of client updates from the final LoRA model, aggregated two ways."""
    from fedtl_helpers.federation.client import client_update
    from fedtl_helpers.modeling import models

    triples = models.lora_pairs(sim.model)
    glob = result.weights
    clients, counts = [], []
    for k in range(config.num_clients):
        x, y = sim.client_data(k)
        res = client_update(sim.trainer, glob, k, x, y, epochs=config.local_epochs, seed=(config.seed, 99, k))
        it = iter(res.delta)
        clients.append([g + next(it) if m else g for g, m in zip(glob, sim.mask)])
        counts.append(res.num_examples)
    gaps = [models.lora_factor_gap([c[ia] for c in clients], [c[ib] for c in clients], counts)
            for _, ia, ib in triples]
    w = np.asarray(counts, float) / sum(counts)
    factors = [sum(wi * c[i] for wi, c in zip(w, clients)).astype(g.dtype) for i, g in enumerate(glob)]
    product = models.average_lora_products(glob, clients, counts, triples)
    return {"factor_gap_mean": round(float(np.mean(gaps)), 4), "factor_gap_max": round(float(max(gaps)), 4),
            "acc_factor_average": sim.evaluate(factors)["accuracy"],
            "acc_product_average": sim.evaluate(product)["accuracy"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--per-client", type=int, default=200)
    p.add_argument("--n-test", type=int, default=500)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--lora-rank", type=int, default=4)
    p.add_argument("--switch-round", type=int, default=2, help="LP-FT: last head-only round")
    p.add_argument("--lrs", type=float, nargs="+", default=[3e-4, 1e-3, 3e-3, 1e-2, 3e-2],
                   help="client learning rates tried for each strategy on the validation split")
    p.add_argument("--tune-rounds", type=int, help="rounds per tuning trial (default --rounds: 2 rounds "
                   "chose 3e-3 for full fine-tuning, which then oscillates; LP-FT: at least "
                   "--switch-round + 1)")
    p.add_argument("--no-tune", action="store_true", help="use --lrs[0] for every strategy")
    p.add_argument("--tuning-scores", type=Path, help="skip tuning: a JSON file {strategy: {lr: validation "
                   "accuracy}} that an earlier run of this script printed; each strategy takes its best")
    p.add_argument("--fedbn-rounds", type=int, help="rounds of the FedAvg/FedBN runs (default --rounds)")
    p.add_argument("--label-alpha", type=float, default=0.1,
                   help="Dirichlet alpha of the label-skew FedAvg/FedBN comparison")
    p.add_argument("--out", type=Path, help="also write the JSON (with curves and provenance) here")
    args = p.parse_args()
    args.tune_rounds = args.rounds if args.tune_rounds is None else args.tune_rounds
    if args.rounds < 2 or args.tune_rounds < 1 or not args.seeds or args.switch_round >= args.rounds:
        p.error("--rounds >= 2 and > --switch-round, --tune-rounds >= 1, --seeds non-empty")

    import tensorflow as tf

    from fedtl_helpers.core.config import ExperimentConfig
    from fedtl_helpers.federation import personalization
    from fedtl_helpers.federation.server import run_federated
    from fedtl_helpers.federation.simulation import Simulation
    from fedtl_helpers.inputs import data
    from fedtl_helpers.workflow.tuning import Tuned, tune_federated

    tf.get_logger().setLevel("ERROR")  # each strategy's new trainer is traced once: expected, not a bug
    t0 = time.perf_counter()
    n_train = args.clients * args.per_client

    def config(strategy, seed, lr, **kw):
        return ExperimentConfig(num_clients=args.clients, n_train=n_train, n_test=args.n_test,
                                rounds=args.rounds, strategy=strategy, weights="builtin",
                                learning_rate=lr, lora_rank=args.lora_rank,
                                lpft_switch_round=args.switch_round, seed=seed, **kw)

    def fedavg_vs_fedbn(cfg, ds):
        """Per-client held-out accuracy of FedAvg's global model and of FedBN's personal models."""
        sim = Simulation(cfg, ds)
        fedavg = sim.per_client_accuracy(run_federated(cfg, simulation=sim, progress=False).weights)
        sim = Simulation(cfg, ds)
        return fedavg, personalization.fedper_accuracy(sim, personalization.run_fedbn(cfg, simulation=sim))

    ds0 = data.load_dataset("shapes", n_train=n_train, n_test=args.n_test, seed=args.seeds[0])
    tuned = {}
    earlier = json.loads(args.tuning_scores.read_text()) if args.tuning_scores else {}
    for s in STRATEGIES:
        if s in earlier:  # chosen by an earlier run on the same validation split
            scores = {float(k): v for k, v in earlier[s].items()}
            tuned[s] = Tuned("learning_rate", max(scores, key=lambda c: (scores[c], -list(scores).index(c))),
                             scores)
            print(f"# {s}: learning rate from {args.tuning_scores}\n{tuned[s].table()}", flush=True)
            continue
        if args.no_tune:
            tuned[s] = Tuned("learning_rate", args.lrs[0], {})
            continue
        tuned[s] = tune_federated(config(s, args.seeds[0], args.lrs[0]), args.lrs, dataset=ds0,
                                  rounds=max(args.tune_rounds, args.switch_round + 1 if s == "lpft" else 1))
        print(f"# {s}: learning rate on a 20% validation split, seed {args.seeds[0]}\n{tuned[s].table()}",
              flush=True)

    per_seed, described, lora_measure = [], "", None
    for seed in args.seeds:
        ds = ds0 if seed == args.seeds[0] else data.load_dataset(
            "shapes", n_train=n_train, n_test=args.n_test, seed=seed)
        hist = {}
        for s in STRATEGIES:
            cfg = config(s, seed, tuned[s].best)
            sim = Simulation(cfg, ds)
            res = run_federated(cfg, simulation=sim, progress=False)
            hist[s] = res.history
            if s == "lora" and lora_measure is None:
                lora_measure = factor_vs_product(cfg, res, sim)
        described = hist["full"].meta["dataset"]
        print(f"# seed {seed}: {hist['full'].meta['describe']}")
        print(f"{'round':>5} " + " ".join(f"{s:>8}" for s in STRATEGIES))
        for r in range(args.rounds + 1):
            print(f"{r:>5} " + " ".join(f"{hist[s].rows[r]['test_accuracy']:>8.4f}" for s in STRATEGIES),
                  flush=True)
        # FedAvg vs FedBN under feature skew, per-client held-out accuracy (full fine-tuning).
        skew = dataclasses.replace(config("full", seed, tuned["full"].best), feature_skew=True,
                                   holdout_fraction=0.2, rounds=args.fedbn_rounds or args.rounds)
        fedavg, fedbn = fedavg_vs_fedbn(skew, ds)
        print(f"# feature skew, per-client held-out accuracy: FedAvg {np.round(fedavg, 3).tolist()} "
              f"FedBN {np.round(fedbn, 3).tolist()}", flush=True)
        # The same under label skew (Dirichlet alpha, no style): FedBN is meant for feature skew.
        label = dataclasses.replace(skew, feature_skew=False, partition="dirichlet", alpha=args.label_alpha)
        fedavg_label, fedbn_label = fedavg_vs_fedbn(label, ds)
        print(f"# label skew (alpha={args.label_alpha}), per-client held-out accuracy: FedAvg "
              f"{np.round(fedavg_label, 3).tolist()} FedBN {np.round(fedbn_label, 3).tolist()}", flush=True)
        per_seed.append({
            "seed": seed,
            "curves": {s: h.column("test_accuracy") for s, h in hist.items()},
            "bytes_up": {s: h.column("bytes_up")[1:] for s, h in hist.items()},
            "fedavg_client_acc": fedavg.tolist(), "fedbn_client_acc": fedbn.tolist(),
            "fedavg_client_acc_label_skew": fedavg_label.tolist(),
            "fedbn_client_acc_label_skew": fedbn_label.tolist(),
        })

    def mean(values):
        return round(float(np.mean(values)), 4)

    strategies = {s: {"bytes_up_per_round": int(np.mean(per_seed[0]["bytes_up"][s])),
                      "final_acc": mean([d["curves"][s][-1] for d in per_seed]),
                      "lr": tuned[s].best} for s in STRATEGIES}
    strategies["lpft"]["bytes_up_per_round_by_phase"] = sorted(set(per_seed[0]["bytes_up"]["lpft"]))
    resnet = resnet50_param_ratio(args.lora_rank)
    summary = {
        "data": f"{described}; {args.clients} IID clients x {args.per_client} images, {args.n_test} "
                f"test images, {args.rounds} rounds, 1 local epoch, LoRA rank {args.lora_rank}, "
                f"LP-FT head-only for rounds 1-{args.switch_round} then full (backbone at "
                f"partial_lr_scale x the learning rate)",
        "weights": "builtin",
        "seeds": args.seeds,
        "strategies": strategies,
        "lora_bytes_ratio": round(strategies["full"]["bytes_up_per_round"]
                                  / strategies["lora"]["bytes_up_per_round"], 2),
        "lora_acc_gap_points": round(100 * (strategies["full"]["final_acc"]
                                            - strategies["lora"]["final_acc"]), 2),
        "ffa_lora_acc_gap_points": round(100 * (strategies["full"]["final_acc"]
                                                - strategies["ffa_lora"]["final_acc"]), 2),
        "ffa_lora_bytes_ratio": round(strategies["full"]["bytes_up_per_round"]
                                      / strategies["ffa_lora"]["bytes_up_per_round"], 2),
        "lpft_dip_points": round(max(lpft_dip(d["curves"]["lpft"]) for d in per_seed), 2),
        "fedbn_gain_points": round(100 * float(np.mean([np.mean(d["fedbn_client_acc"])
                                                        - np.mean(d["fedavg_client_acc"])
                                                        for d in per_seed])), 2),
        "fedbn_gain_points_label_skew": round(100 * float(np.mean(
            [np.mean(d["fedbn_client_acc_label_skew"]) - np.mean(d["fedavg_client_acc_label_skew"])
             for d in per_seed])), 2),
        "fedbn_gain_points_per_seed": [round(100 * float(np.mean(d["fedbn_client_acc"])
                                                         - np.mean(d["fedavg_client_acc"])), 2)
                                       for d in per_seed],
        "fedbn_gain_points_label_skew_per_seed": [
            round(100 * float(np.mean(d["fedbn_client_acc_label_skew"])
                              - np.mean(d["fedavg_client_acc_label_skew"])), 2) for d in per_seed],
        "fedavg_client_acc_mean": mean([np.mean(d["fedavg_client_acc"]) for d in per_seed]),
        "fedbn_client_acc_mean": mean([np.mean(d["fedbn_client_acc"]) for d in per_seed]),
        "lora_param_ratio_resnet50": resnet["ratio"],
        "resnet50_trainable": {"full": resnet["full"], "lora": resnet["lora"]},
        "lora_factor_vs_product": lora_measure,
        "tuned": not args.no_tune,
        "tuning_scores": {s: {str(k): round(v, 4) for k, v in t.scores.items()} for s, t in tuned.items()},
        "per_seed": per_seed,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if args.out:
        from fedtl_helpers.workflow import results
        results.save(args.out, summary, seconds=summary["seconds"],
                     randomness=ExperimentConfig.randomness)  # every run used the default
    print(json.dumps({k: v for k, v in summary.items() if k != "per_seed"}))


if __name__ == "__main__":
    main()

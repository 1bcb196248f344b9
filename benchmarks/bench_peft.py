"""Parameter-efficient federated fine-tuning: every strategy on the same clients, and FedBN.

Strategies ``head``, ``full``, ``lora``, ``ffa_lora`` (LoRA with ``A`` frozen: only ``B`` is trained
and averaged, exact aggregation; Sun et al., ICLR 2024), ``bitfit`` and ``lpft`` (head-only, then
full after ``--switch-round``), run on the same IID clients (embedded data, built-in pretrained
backbone), the same rounds and seeds. The size (5 clients x 400 images, 12 rounds, 2,000 test
images) is chosen so that full fine-tuning has stopped rising: the record's
``full_last_rounds_rise_points`` says by how much its last rounds still move.

Fair comparison: each strategy's client learning rate comes from one log grid shared by all
strategies (``workflow.tuning.LR_GRID``), starting at three neighbouring rates around its usual
one and widened until the choice is interior (``widen_until_interior``), each trial scored on a
20% validation split of seed ``--seeds[0]``'s training data (never the test set) over the same
``--rounds`` it then runs. Final accuracy is the mean of the last ``--last`` rounds; every
strategy is judged against full fine-tuning by ``teaching.verdict``.

LP-FT's dip is measured against full fine-tuning in the same round (``lpft_minus_full_by_round``).
Averaging LoRA's factors against averaging their product is measured once per seed (one extra round
of client updates from each seed's final LoRA model).

FedBN: under feature skew (every client sees all classes through its own colour, contrast or blur
transform), FedAvg against FedBN, each scored on every client's own held-out images
(``--fedbn-holdout`` of them: 100 per client with the defaults, 1-point steps); and the control,
the same clients without the styles, where FedAvg works and FedBN has nothing to keep apart.
Also counted: ResNet50's parameter ratio (built at 96 px with ``weights=None``: counted, not trained).

    python benchmarks/bench_peft.py [--rounds 12] [--seeds 0 1 2] [--out results/bench_peft.json]

About 64 minutes on 2 cores shared with nbval runs (3,860 s for ``results/bench_peft.json``: 25 min
tuning, then about 15 min per seed, 5 of them FedAvg/FedBN).

Last line: one JSON object with, per strategy, ``lr``, ``bytes_up_per_round`` (all clients, mean
over rounds), ``final_acc`` (mean over seeds of the mean of the last ``--last`` rounds) and its
verdict against full fine-tuning; ``lora_bytes_ratio``, ``lora_acc_gap_points``,
``ffa_lora_acc_gap_points``, ``ffa_lora_bytes_ratio``, ``lpft_dip_points`` (the most LP-FT falls
below full fine-tuning in any round after the switch, mean of seeds, 0 if never),
``fedbn_gain_points`` (feature skew), ``fedbn_gain_points_control``, ``lora_param_ratio_resnet50``.
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
from _args import check_tuned_run  # noqa: E402  (benchmarks/ is the script's own folder)

from fedtl_helpers.workflow.tuning import LR_GRID, widen_until_interior  # noqa: E402  (numpy only)

STRATEGIES = ("head", "full", "lora", "ffa_lora", "bitfit", "lpft")
START = {"head": 3e-3, "full": 1e-3, "lora": 1e-2, "ffa_lora": 1e-2, "bitfit": 3e-3, "lpft": 3e-3}  # the
# rates the 6-round run chose: each strategy's window starts around its own


def lpft_minus_full(lpft: list[list[float]], full: list[list[float]], switch: int) -> list[float]:
    """LP-FT minus full fine-tuning, in points, for every round after the switch (mean of seeds)."""
    diff = 100 * (np.asarray(lpft, float) - np.asarray(full, float))
    return [round(float(v), 2) for v in diff.mean(axis=0)[switch + 1:]]


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
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--last", type=int, default=3, help="final accuracy = mean of the last rounds")
    p.add_argument("--clients", type=int, default=5)
    p.add_argument("--per-client", type=int, default=400)
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--lora-rank", type=int, default=4)
    p.add_argument("--switch-round", type=int, default=2, help="LP-FT: last head-only round")
    p.add_argument("--grid", type=float, nargs="+", default=list(LR_GRID),
                   help="the one log grid of client learning rates every strategy draws from")
    p.add_argument("--tuning-scores", type=Path,
                   help="skip tuning: a JSON file {strategy: {lr: validation accuracy}} that an "
                        "earlier run with the same settings printed; each strategy takes its best")
    p.add_argument("--fedbn-holdout", type=float, default=0.25,
                   help="share of each client's images held out to score FedAvg and FedBN on that client")
    p.add_argument("--out", type=Path, help="also write the JSON (with curves and provenance) here")
    args = p.parse_args()
    args.tune_rounds = args.rounds  # tuned over the horizon it runs
    check_tuned_run(p, args)
    if args.rounds < 2 * args.last:
        p.error(f"--rounds {args.rounds} is invalid: allowed at least 2 x --last ({2 * args.last}), to "
                "measure how much full fine-tuning still rises")
    if args.switch_round >= args.rounds - 1 or args.switch_round < 1:
        p.error(f"--switch-round {args.switch_round} is invalid: allowed 1 to --rounds - 2")
    if not 0 < args.fedbn_holdout < 1:
        p.error(f"--fedbn-holdout {args.fedbn_holdout} is invalid: allowed a fraction in (0, 1)")
    missing = [f"{s}={v:g}" for s, v in START.items() if v not in args.grid]
    if list(args.grid) != sorted(set(args.grid)) or missing:
        p.error(f"--grid must be increasing and contain every strategy's starting rate {missing}")

    import tensorflow as tf

    from fedtl_helpers.core.config import ExperimentConfig
    from fedtl_helpers.federation import personalization
    from fedtl_helpers.federation.server import run_federated
    from fedtl_helpers.federation.simulation import Simulation
    from fedtl_helpers.inputs import data
    from fedtl_helpers.teaching.verdict import final_per_seed, verdict
    from fedtl_helpers.workflow.tuning import tune_federated

    tf.get_logger().setLevel("ERROR")  # each strategy's new trainer is traced once: expected, not a bug
    t0 = time.perf_counter()
    n_train = args.clients * args.per_client
    log = lambda s: print(s, flush=True)  # noqa: E731

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
            best = max(scores, key=lambda c: (scores[c], -c))
            tuned[s] = (best, scores, best in (args.grid[0], args.grid[-1]))
            log(f"# {s}: learning rate {best:g} from {args.tuning_scores}")
            continue

        def score(lr, strategy=s):
            t = tune_federated(config(strategy, args.seeds[0], lr), [lr], dataset=ds0, rounds=args.rounds,
                               last=args.last)
            log(f"# tune {strategy} lr={lr:g}: validation accuracy {t.scores[lr]:.4f} "
                f"({time.perf_counter() - t0:.0f} s)")
            return t.scores[lr]
        tuned[s] = widen_until_interior(args.grid, START[s], score)
        log(f"# {s}: chose lr={tuned[s][0]:g}" + (" (ON THE GRID'S EDGE)" if tuned[s][2] else ""))

    per_seed, configs, described = [], {}, ""
    for seed in args.seeds:
        ds = ds0 if seed == args.seeds[0] else data.load_dataset(
            "shapes", n_train=n_train, n_test=args.n_test, seed=seed)
        hist, lora_measure = {}, None
        for s in STRATEGIES:
            cfg = config(s, seed, tuned[s][0])
            sim = Simulation(cfg, ds)
            res = run_federated(cfg, simulation=sim, progress=False)
            hist[s] = res.history
            if seed == args.seeds[0]:
                configs[s] = res.history.meta["config"]
            if s == "lora":
                lora_measure = factor_vs_product(cfg, res, sim)
        described = hist["full"].meta["dataset"]
        log(f"# seed {seed}: {hist['full'].meta['describe']} ({time.perf_counter() - t0:.0f} s)")
        log(f"{'round':>5} " + " ".join(f"{s:>8}" for s in STRATEGIES))
        for r in range(args.rounds + 1):
            log(f"{r:>5} " + " ".join(f"{hist[s].rows[r]['test_accuracy']:>8.4f}" for s in STRATEGIES))
        # FedAvg vs FedBN under feature skew, per-client held-out accuracy (full fine-tuning), and
        # the control: the same clients without the styles, where FedAvg works.
        skew = dataclasses.replace(config("full", seed, tuned["full"][0]), feature_skew=True,
                                   holdout_fraction=args.fedbn_holdout)
        fedavg, fedbn = fedavg_vs_fedbn(skew, ds)
        fedavg_iid, fedbn_iid = fedavg_vs_fedbn(dataclasses.replace(skew, feature_skew=False), ds)
        log(f"# per-client held-out accuracy, feature skew: FedAvg {np.round(fedavg, 3).tolist()} "
            f"FedBN {np.round(fedbn, 3).tolist()}; no skew (control): FedAvg "
            f"{np.round(fedavg_iid, 3).tolist()} FedBN {np.round(fedbn_iid, 3).tolist()} "
            f"({time.perf_counter() - t0:.0f} s)")
        per_seed.append({
            "seed": seed,
            "curves": {s: h.column("test_accuracy") for s, h in hist.items()},
            "bytes_up": {s: h.column("bytes_up")[1:] for s, h in hist.items()},
            "fedavg_client_acc": fedavg.tolist(), "fedbn_client_acc": fedbn.tolist(),
            "fedavg_client_acc_control": fedavg_iid.tolist(), "fedbn_client_acc_control": fedbn_iid.tolist(),
            "lora_factor_vs_product": lora_measure,
        })

    def mean(values):
        return round(float(np.mean(values)), 4)

    curves = {s: [d["curves"][s] for d in per_seed] for s in STRATEGIES}
    finals = {s: final_per_seed(curves[s], args.last) for s in STRATEGIES}
    strategies = {}
    for s in STRATEGIES:
        strategies[s] = {"lr": tuned[s][0], "at_grid_edge": tuned[s][2],
                         "bytes_up_per_round": int(np.mean(per_seed[0]["bytes_up"][s])),
                         "final_acc": mean(finals[s]), "final_acc_min": round(min(finals[s]), 4),
                         "final_acc_max": round(max(finals[s]), 4),
                         "finals": [round(x, 4) for x in finals[s]]}
        if s != "full":
            v = verdict(finals[s], finals["full"], n_test=args.n_test, names=(s, "full fine-tuning"))
            strategies[s]["vs_full"] = {"points": round(v.difference_points, 2),
                                        "mdd_points": round(v.mdd_points, 2), "shown": v.shown,
                                        "sentence": v.sentence}
    strategies["lpft"]["bytes_up_per_round_by_phase"] = sorted(set(per_seed[0]["bytes_up"]["lpft"]))
    by_round = lpft_minus_full(curves["lpft"], curves["full"], args.switch_round)
    rise = [100 * (np.mean(c[-args.last:]) - np.mean(c[-2 * args.last:-args.last])) for c in curves["full"]]
    resnet = resnet50_param_ratio(args.lora_rank)
    held_out = round(args.fedbn_holdout * args.per_client)

    def gain(key):
        return [round(100 * float(np.mean(d[f"fedbn_client_acc{key}"])
                                  - np.mean(d[f"fedavg_client_acc{key}"])), 2) for d in per_seed]

    factor = [d["lora_factor_vs_product"] for d in per_seed]
    summary = {
        "data": f"{described}; {args.clients} IID clients x {args.per_client} images, {args.n_test} "
                f"test images, {args.rounds} rounds, 1 local epoch, LoRA rank {args.lora_rank}, "
                f"LP-FT head-only for rounds 1-{args.switch_round} then full (backbone at "
                f"partial_lr_scale x the learning rate)",
        "weights": "builtin",
        "seeds": args.seeds,
        "rounds": args.rounds,
        "last": args.last,
        "n_test": args.n_test,
        "grid": list(args.grid),
        "strategies": strategies,
        "lora_bytes_ratio": round(strategies["full"]["bytes_up_per_round"]
                                  / strategies["lora"]["bytes_up_per_round"], 2),
        "lora_acc_gap_points": round(100 * (strategies["full"]["final_acc"]
                                            - strategies["lora"]["final_acc"]), 2),
        "ffa_lora_acc_gap_points": round(100 * (strategies["full"]["final_acc"]
                                                - strategies["ffa_lora"]["final_acc"]), 2),
        "ffa_lora_bytes_ratio": round(strategies["full"]["bytes_up_per_round"]
                                      / strategies["ffa_lora"]["bytes_up_per_round"], 2),
        "full_last_rounds_rise_points": round(float(np.mean(rise)), 2),
        "lpft_minus_full_by_round": by_round,
        "lpft_dip_points": round(max(0.0, -min(by_round)), 2),
        "fedbn_holdout_per_client": held_out,
        "fedbn_gain_points": round(float(np.mean(gain(""))), 2),
        "fedbn_gain_points_per_seed": gain(""),
        "fedbn_gain_points_control": round(float(np.mean(gain("_control"))), 2),
        "fedbn_gain_points_control_per_seed": gain("_control"),
        "fedavg_client_acc_mean": mean([np.mean(d["fedavg_client_acc"]) for d in per_seed]),
        "fedbn_client_acc_mean": mean([np.mean(d["fedbn_client_acc"]) for d in per_seed]),
        "lora_param_ratio_resnet50": resnet["ratio"],
        "resnet50_trainable": {"full": resnet["full"], "lora": resnet["lora"]},
        "lora_factor_vs_product": {
            "factor_gap_mean": mean([f["factor_gap_mean"] for f in factor]),
            "factor_gap_max": round(max(f["factor_gap_max"] for f in factor), 4),
            "acc_factor_average": [f["acc_factor_average"] for f in factor],
            "acc_product_average": [f["acc_product_average"] for f in factor]},
        "tuned": True,
        "tuning_scores": {s: {f"{k:g}": round(v, 4) for k, v in tuned[s][1].items()} for s in STRATEGIES},
        "configs": configs,
        "per_seed": per_seed,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if args.out:
        from fedtl_helpers.workflow import results
        results.save(args.out, summary, seconds=summary["seconds"],
                     randomness=ExperimentConfig.randomness)  # every run used the default
    print(json.dumps({k: v for k, v in summary.items() if k not in ("per_seed", "configs")}))


if __name__ == "__main__":
    main()

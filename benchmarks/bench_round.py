"""Seconds per round and peak memory: the article's recipe vs our federated core.

The article's recipe, minimally fixed so that it runs and is correct: every client holds its
own ``clone_model`` copy (now given the global weights each round: the broadcast the article
forgot), ``compile``s it every round and calls ``fit``; the server averages the copies' weights
by sample count. Ours: one shared model and one traced train step for all clients
(``fedtl_helpers.federation.server``). Same model, data, local epochs, batch size, optimizer and rounds.

Each measurement runs in its own process so peak memory (max RSS) is its own. Usage::

    python benchmarks/bench_round.py                  # 5 and 20 clients, 3 rounds
    python benchmarks/bench_round.py --per-client 200 --rounds 2   # quicker

The last line printed is one JSON object with ``speedup_5``, ``speedup_20`` (article seconds per
round / ours) and ``ours_mem_ratio_20_vs_5`` (our peak memory at 20 clients / at 5).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _config(num_clients: int, per_client: int, rounds: int):
    from fedtl_helpers.core.config import ExperimentConfig

    return ExperimentConfig(num_clients=num_clients, n_train=num_clients * per_client,
                            n_test=500, rounds=rounds, local_epochs=1, batch_size=32,
                            strategy="full", weights="builtin")


def run_ours(cfg) -> list[float]:
    from fedtl_helpers.federation.server import run_federated

    res = run_federated(cfg, progress=False)
    return res.history.column("seconds")[1:]


def run_article(cfg) -> list[float]:
    import keras

    from fedtl_helpers.federation.server import Simulation
    from fedtl_helpers.transforms import aggregation

    sim = Simulation(cfg)  # same data, partition and initial model as ours
    global_model = sim.model
    clients = [keras.models.clone_model(global_model) for _ in range(cfg.num_clients)]
    seconds = []
    for _ in range(cfg.rounds):
        t0 = time.perf_counter()
        for client, idx in zip(clients, sim.parts):
            client.set_weights(global_model.get_weights())  # the missing broadcast
            client.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate),
                           loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                           metrics=["accuracy"])
            client.fit(sim.x_train[idx], sim.y_train[idx], epochs=cfg.local_epochs,
                       batch_size=cfg.batch_size, verbose=0)
        new = aggregation.fedavg([c.get_weights() for c in clients],
                                 [len(idx) for idx in sim.parts])
        global_model.set_weights(new)
        global_model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                             metrics=["accuracy"])
        global_model.evaluate(sim.x_test, sim.y_test, verbose=0)
        seconds.append(time.perf_counter() - t0)
    return seconds


def child(method: str, num_clients: int, per_client: int, rounds: int) -> None:
    cfg = _config(num_clients, per_client, rounds)
    seconds = (run_ours if method == "ours" else run_article)(cfg)
    print(json.dumps({"seconds": seconds, "peak_rss_mb": _peak_rss_mb()}))


def measure(method: str, num_clients: int, args) -> dict:
    cmd = [sys.executable, __file__, "--child", method, str(num_clients),
           "--per-client", str(args.per_client), "--rounds", str(args.rounds)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["sec_per_round"] = sum(result["seconds"]) / len(result["seconds"])
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-client", type=int, default=500, help="training images per client")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--clients", type=int, nargs="+", default=[5, 20])
    p.add_argument("--child", nargs=2, metavar=("METHOD", "CLIENTS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.per_client, args.rounds)
        return
    print(f"data: shapes (embedded), weights: builtin, strategy=full, {args.per_client} images "
          f"per client, 1 local epoch, batch 32, {args.rounds} rounds (mean s/round incl. round 1)")
    print(f"{'clients':>7} {'method':>8} {'s/round':>8} {'peak MB':>8}")
    summary: dict = {}
    for n in args.clients:
        r = {m: measure(m, n, args) for m in ("article", "ours")}
        for m in ("article", "ours"):
            print(f"{n:>7} {m:>8} {r[m]['sec_per_round']:>8.2f} {r[m]['peak_rss_mb']:>8.0f}")
        summary[f"speedup_{n}"] = round(r["article"]["sec_per_round"] / r["ours"]["sec_per_round"], 2)
        summary[f"ours_sec_per_round_{n}"] = round(r["ours"]["sec_per_round"], 3)
        summary[f"article_sec_per_round_{n}"] = round(r["article"]["sec_per_round"], 3)
        summary[f"ours_peak_mb_{n}"] = round(r["ours"]["peak_rss_mb"])
        summary[f"article_peak_mb_{n}"] = round(r["article"]["peak_rss_mb"])
    lo, hi = min(args.clients), max(args.clients)
    summary[f"ours_mem_ratio_{hi}_vs_{lo}"] = round(summary[f"ours_peak_mb_{hi}"]
                                                   / summary[f"ours_peak_mb_{lo}"], 3)
    summary[f"article_mem_ratio_{hi}_vs_{lo}"] = round(summary[f"article_peak_mb_{hi}"]
                                                      / summary[f"article_peak_mb_{lo}"], 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

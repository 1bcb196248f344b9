"""DP-FedAvg at epsilon <= 8 (delta 1e-5) vs the same run without privacy, side by side.

Embedded shapes data, built-in pretrained backbone, head-only training on cached features.
Client-level DP needs many clients per round: the noise std z*C on the sum is divided by the
expected number of clients q*N, so we use many small clients with Poisson sampling. The noise
multiplier is the smallest that keeps epsilon <= the target after all rounds (dp-accounting).

Usage: python benchmarks/bench_dp.py [--clients 500] [--per-client 40] [--q 0.2] [--rounds 30]
       [--clip 0.5] [--lr 0.01] [--server-lr 2]
Last line: one JSON object with the figures and the settings.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import fedtl_helpers as fl  # noqa: E402
from fedtl_helpers import privacy  # noqa: E402
from fedtl_helpers.server import Simulation  # noqa: E402


def settings(clients: int, per_client: int, q: float, rounds: int, lr: float, server_lr: float,
             seed: int, target_epsilon: float, delta: float, n_test: int) -> tuple[dict, float]:
    """The shared config fields and the noise multiplier that reaches the target epsilon."""
    z = privacy.noise_multiplier_for_epsilon(target_epsilon, q, rounds, delta, sampling="poisson")
    base = dict(n_train=clients * per_client, n_test=n_test, num_clients=clients, rounds=rounds,
                client_fraction=q, client_sampling="poisson", aggregator="mean", strategy="head",
                feature_cache=True, local_epochs=1, batch_size=16, learning_rate=lr,
                server_lr=server_lr, seed=seed, dp_delta=delta)
    return base, z


def run_pair(base: dict, z: float, clip: float, nonprivate_server_lr: float | None = None):
    """Non-private and DP runs on one Simulation (same clients, same cached features)."""
    nonpriv_cfg = fl.ExperimentConfig(**{**base, "server_lr": nonprivate_server_lr or base["server_lr"]})
    dp_cfg = fl.ExperimentConfig(**base, dp_clip=clip, dp_noise_multiplier=z)
    sim = Simulation(nonpriv_cfg)
    start = sim.model.get_weights()
    t0 = time.perf_counter()
    nonpriv = fl.run_federated(nonpriv_cfg, simulation=sim, progress=False)
    t1 = time.perf_counter()
    sim.model.set_weights(start)
    private = fl.run_federated(dp_cfg, simulation=sim, progress=False)
    t2 = time.perf_counter()
    return sim, nonpriv, private, (t1 - t0, t2 - t1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=500)
    p.add_argument("--per-client", type=int, default=40)
    p.add_argument("--q", type=float, default=0.2)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--clip", type=float, default=0.5)
    p.add_argument("--lr", type=float, default=0.01, help="clients' Adam learning rate")
    p.add_argument("--server-lr", type=float, default=2.0)
    p.add_argument("--target-epsilon", type=float, default=8.0)
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    base, z = settings(a.clients, a.per_client, a.q, a.rounds, a.lr, a.server_lr, a.seed,
                       a.target_epsilon, a.delta, a.n_test)
    sim, nonpriv, private, secs = run_pair(base, z, a.clip, nonprivate_server_lr=1.0)
    eps = private.history.meta["privacy"]["epsilon"]
    acc_np, acc_p = nonpriv.history.final_accuracy, private.history.final_accuracy
    print(f"# {sim.describe()}")
    print(f"# {a.clients} clients x {a.per_client} images, Poisson q={a.q} "
          f"(expected {a.q * a.clients:.0f} clients/round), {a.rounds} rounds, clip C={a.clip}, "
          f"z={z:.3f}, client lr={a.lr}, server_lr={a.server_lr} (non-private: 1.0)")
    print(f"{'round':>5} {'acc_nonprivate':>14} {'acc_private':>11} {'epsilon':>8}")
    for r_np, r_p in zip(nonpriv.history.rows, private.history.rows):
        if r_p["round"] % max(1, a.rounds // 10) == 0 or r_p["round"] == a.rounds:
            print(f"{r_p['round']:>5} {r_np['test_accuracy']:>14.4f} {r_p['test_accuracy']:>11.4f} "
                  f"{r_p['epsilon']:>8.3f}")
    print(f"non-private {acc_np:.4f} ({secs[0]:.0f} s), DP {acc_p:.4f} at epsilon {eps:.2f} "
          f"({secs[1]:.0f} s): drop {100 * (acc_np - acc_p):.1f} points")
    print(json.dumps({
        "dataset": "shapes (embedded)", "weights": "builtin", "epsilon": round(eps, 4),
        "delta": a.delta, "acc_private": round(acc_p, 4), "acc_nonprivate": round(acc_np, 4),
        "acc_drop_points": round(100 * (acc_np - acc_p), 2), "noise_multiplier": round(z, 4),
        "clip": a.clip, "clients": a.clients, "images_per_client": a.per_client, "q": a.q,
        "expected_clients_per_round": a.q * a.clients, "rounds": a.rounds, "client_lr": a.lr,
        "server_lr_private": a.server_lr, "server_lr_nonprivate": 1.0,
        "strategy": "head", "accountant": "rdp", "sampling": "poisson",
        "seconds_nonprivate": round(secs[0], 1), "seconds_private": round(secs[1], 1)}))


if __name__ == "__main__":
    main()

"""The Flower deployment against the in-process simulation: seconds per round, whole run, accuracy.

Chapter "From simulation to deployment". One job (issue 22): 2 clients x 2,000 images of the
embedded shapes data, built-in pretrained weights, full fine-tuning, 1 local epoch, 4 rounds,
``randomness="secure"`` (the mode the deployment accepts). It runs twice, one after the other:

1. **in-process**: ``run_federated`` in a fresh Python process (timed from the process start,
   so TensorFlow's import and the model build count, as they do in the deployment);
2. **deployed**: ``deploy/run_local.py``'s ``run_local`` (a SuperLink, one SuperNode per
   client, the ServerApp and the ClientApps as real processes on 127.0.0.1; timed from the
   first process started to the last one stopped), with the launcher's SuperNode waits
   (0.1 s idle poll, 0.05 s reply poll: ``deploy/supernode.py``);
3. **deployed with Flower's waits** (3 s and 0.5 s, Flower's own ``flower-supernode``; skip
   with ``--no-flower-waits``): how much of the overhead is those two hard-coded sleeps.

Usage::

    python benchmarks/bench_deploy.py                       # the issue's job
    python benchmarks/bench_deploy.py --per-client 500 --rounds 3   # quicker
    python benchmarks/bench_deploy.py --secure              # the deployment with TLS + node auth

The last line printed is one JSON object: ``deploy_round_ratio`` (deployed over in-process
seconds per round, median of rounds 2 and later: round 1 also pays the ClientApps' start-up),
``deploy_overhead_s`` (the same medians as a difference, in seconds), ``deploy_total_ratio``
(whole deployed run over whole in-process run, start-up included) and ``accuracy_equal``
(per-round test accuracy identical, every round), and under ``flower_waits`` the same figures
for run 3 plus ``polling_s`` (its overhead minus run 2's: what the two sleeps cost per round).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "deploy"))


def make_config(per_client: int, rounds: int, n_test: int):
    from fedtl_helpers.core.config import ExperimentConfig

    return ExperimentConfig(num_clients=2, n_train=2 * per_client, n_test=n_test, rounds=rounds,
                            local_epochs=1, strategy="full", weights="builtin", randomness="secure")


def child(per_client: int, rounds: int, n_test: int) -> None:
    """The in-process run; prints its History rows as JSON."""
    from fedtl_helpers.federation.server import run_federated

    result = run_federated(make_config(per_client, rounds, n_test), progress=False)
    print(json.dumps(result.history.rows))


def in_process(args) -> tuple[list[dict], float]:
    cmd = [sys.executable, __file__, "--child", "--per-client", str(args.per_client),
           "--rounds", str(args.rounds), "--n-test", str(args.n_test)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1]), time.perf_counter() - t0


def deployed(args, out: Path, polls: tuple[float, float]) -> tuple[list[dict], float, list[float]]:
    import run_local

    options = {"idle_poll": polls[0], "reply_poll": polls[1], "secure": bool(args.secure)}
    if "persistent" in inspect.signature(run_local.run_local).parameters:
        options["persistent"] = not args.fresh_clientapps
    config = make_config(args.per_client, args.rounds, args.n_test)
    result = run_local.run_local(config, out, superlink_port=args.port, node_port=args.port + 1,
                                 **options)
    # Per round: the ServerApp's wait for the replies minus the slowest client's work = the
    # network's and Flower's share (the SuperNodes' 3 s polling above all).
    log = (out / "logs" / "serverapp.log").read_text()
    flower = [float(w) - float(b) for w, b in re.findall(
        r"replies after ([\d.]+) s, slowest client worked ([\d.]+) s", log)]
    return result["history"]["rows"], result["seconds"], flower


def summarise(local: list[dict], local_s: float, remote: list[dict], remote_s: float,
              flower: list[float] | None = None) -> dict:
    """The issue's four figures (and what they are made of) from both runs' History rows.

    ``flower``: per round, the seconds the ServerApp waited beyond the slowest client's work.
    """
    later = slice(2, None)  # rows are rounds 0..R: rounds 2 and later
    local_round = statistics.median(r["seconds"] for r in local[later])
    remote_round = statistics.median(r["seconds"] for r in remote[later])
    return {
        "deploy_round_ratio": round(remote_round / local_round, 2),
        "deploy_overhead_s": round(remote_round - local_round, 2),
        "deploy_total_ratio": round(remote_s / local_s, 2),
        "accuracy_equal": [r["test_accuracy"] for r in local] == [r["test_accuracy"] for r in remote],
        "in_process_round_s": round(local_round, 2), "deployed_round_s": round(remote_round, 2),
        "in_process_total_s": round(local_s, 1), "deployed_total_s": round(remote_s, 1),
        # rounds 2 and later; absent when the ServerApp does not report it (older deploy/)
        "transport_and_polling_s": (round(statistics.median(flower[1:]), 2)
                                    if flower and len(flower) > 1 else None),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-client", type=int, default=2000, help="training images per client")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--n-test", type=int, default=1000, help="server test images")
    p.add_argument("--port", type=int, default=9193, help="SuperLink port (SuperNodes: the next two)")
    p.add_argument("--secure", action="store_true", help="deploy with TLS and SuperNode authentication")
    p.add_argument("--fresh-clientapps", action="store_true",
                   help="Flower's default: a new ClientApp process for every message")
    p.add_argument("--no-flower-waits", action="store_true",
                   help="skip the third run (deployed with Flower's 3 s / 0.5 s SuperNode waits)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.rounds < 3:
        p.error("--rounds must be at least 3 (the medians use rounds 2 and later)")
    if args.child:
        child(args.per_client, args.rounds, args.n_test)
        return
    print(f"shapes (embedded), weights builtin, strategy=full, 2 clients x {args.per_client} images, "
          f"1 local epoch, {args.rounds} rounds, {args.n_test} test images; "
          f"{platform.machine()}, {os.cpu_count()} CPU cores, load {os.getloadavg()[0]:.1f}", flush=True)
    from local_federation import FLOWER_POLLS, LOOPBACK_POLLS

    local, local_s = in_process(args)
    arms = {"launcher's waits": LOOPBACK_POLLS}
    if not args.no_flower_waits:
        arms["Flower's waits"] = FLOWER_POLLS
    runs = {}
    for name, polls in arms.items():
        with tempfile.TemporaryDirectory(prefix="bench_deploy_") as tmp:
            runs[name] = deployed(args, Path(tmp), polls)
    print(f"{'round':>5} {'acc in-process':>14} " + " ".join(f"{'acc ' + n:>22}" for n in runs)
          + f" {'s in-process':>12} " + " ".join(f"{'s ' + n:>20}" for n in runs))
    for i, a in enumerate(local):
        accs = " ".join(f"{r[0][i]['test_accuracy']:>22.4f}" for r in runs.values())
        secs = " ".join(f"{r[0][i]['seconds'] or 0:>20.2f}" for r in runs.values())
        print(f"{a['round']:>5} {a['test_accuracy']:>14.4f} {accs} {a['seconds'] or 0:>12.2f} {secs}")
    totals = ", ".join(f"deployed ({n}) {r[1]:.1f} s" for n, r in runs.items())
    print(f"whole run: in-process {local_s:.1f} s, {totals} (load now {os.getloadavg()[0]:.1f})")
    for name, (_, _, flower) in runs.items():
        if flower:
            print(f"ServerApp's wait beyond the slowest client, per round ({name}): "
                  + ", ".join(f"{x:.2f} s" for x in flower))
    remote, remote_s, flower = runs["launcher's waits"]
    figures = summarise(local, local_s, remote, remote_s, flower)
    if "Flower's waits" in runs:
        slow = summarise(local, local_s, *runs["Flower's waits"])
        keys = ("deploy_round_ratio", "deploy_overhead_s", "deploy_total_ratio", "accuracy_equal",
                "transport_and_polling_s")
        polling = slow["deploy_overhead_s"] - figures["deploy_overhead_s"]
        figures["flower_waits"] = {**{k: slow[k] for k in keys}, "polling_s": round(polling, 2)}
    print(json.dumps(figures))

if __name__ == "__main__":
    main()

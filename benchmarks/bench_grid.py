"""The same 8-run grid sequentially and on a local Dask cluster; how much the cluster buys here.

The grid: the course's pretrained-vs-random comparison on the embedded data (weights builtin vs
random init x strategy head vs full x 2 seeds), each run kept small (1 round, 300 images) so the
whole benchmark takes minutes. Both ways run the same notebook through the same runner
(``experiments.run_grid``); the parallel time includes starting the cluster.

Then one grid point is run four more times: oneDNN on/off (``TF_ENABLE_ONEDNN_OPTS``) x 1/2
threads. Their spread is how far two correct runs of one seed may differ on this machine; the
tolerance that ``results_equal`` uses is written below next to the spread it was set from.

This machine is shared (other people's jobs run on the same 2 cores): the load average is recorded
before and after, and the times are only as good as it was quiet. Usage::

    python benchmarks/bench_grid.py                  # 8 runs twice + 4 probe runs
    python benchmarks/bench_grid.py --no-probe       # without the tolerance probe

The last line is one JSON object: ``sequential_s``, ``parallel_s``, ``speedup``, ``results_equal``,
``per_run`` (seconds of each run, both ways), ``computed_makespan_s`` (workers -> seconds, computed
from the sequential per-run times, not measured), ``probe_spread``, ``loadavg_before/after``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedtl_helpers.workflow import cluster  # noqa: E402
from fedtl_helpers.workflow import experiments as ex  # noqa: E402

# Largest |difference| allowed between two runs of one grid point (final and per-round test
# accuracy and loss). Measured 2026-12-06 on this 2-core machine with the probe below (oneDNN on/off
# x 1/2 threads, plus the sequential and the parallel run of the same point: 1 round, 300 images):
# spread 1.8e-5 (in the test loss; accuracies identical), and sequential vs 2 workers differed by
# at most 2.4e-7 over all 8 runs. Tolerance 1e-4: 5.7x the spread; one test image in 200 moves the
# accuracy by 0.005, so a different result cannot pass as equal. probe_spread is printed each time.
TOLERANCE = 1e-4

NOTEBOOK = ROOT / "notebooks" / "13_case_study.ipynb"


def grid_spec(n_train: int, rounds: int) -> dict:
    return {"name": "bench_grid", "notebook": str(NOTEBOOK),
            "description": "pretrained vs random init x head vs full x 2 seeds, embedded data, small",
            "fixed": {"dataset": "shapes", "n_train": n_train, "n_test": 200, "num_clients": 5,
                      "partition": "iid", "rounds": rounds},
            "grid": {"weights": ["builtin", None], "strategy": ["head", "full"], "seed": [0, 1]}}


def numbers(record: dict) -> dict[str, float]:
    """The numeric results of one run: final metrics and every round's, by name."""
    out = {f"final.{k}": float(v) for k, v in record["final"].items()
           if isinstance(v, int | float) and not isinstance(v, bool)}
    for row in record["per_round"]:
        out.update({f"round{row.get('round')}.{k}": float(v) for k, v in row.items()
                    if k != "round" and isinstance(v, int | float) and not isinstance(v, bool)
                    and "second" not in k and "time" not in k})
    return out


def max_difference(a: dict, b: dict) -> float:
    if set(a) != set(b):
        return math.inf
    return max((abs(a[k] - b[k]) for k in a), default=0.0)


def probe(params: dict, folder: Path) -> dict:
    """One grid point under oneDNN on/off x 1/2 threads: numbers of each variant."""
    results = {}
    for onednn in ("1", "0"):
        for threads in (1, 2):
            rid = f"probe_onednn{onednn}_threads{threads}"
            env = {**cluster.thread_env(threads), "TF_ENABLE_ONEDNN_OPTS": onednn}
            record = ex._run_one(NOTEBOOK, params, folder, rid, "python3", env=env)
            results[rid] = numbers(record)
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--n-train", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--no-probe", action="store_true")
    parser.add_argument("--out", default=None, help="keep the run folders here (default: a temp folder)")
    args = parser.parse_args(argv)
    load_before = [round(x, 2) for x in os.getloadavg()]
    tmp = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench_grid_"))
    tmp.mkdir(parents=True, exist_ok=True)
    grid = tmp / "grid.yaml"
    grid.write_text(yaml.safe_dump(grid_spec(args.n_train, args.rounds)))

    failed = []

    def timed(out_root: Path, **kw):
        start = time.perf_counter()
        try:
            ex.run_grid(grid, out_root=out_root, progress=lambda line: print(line, file=sys.stderr), **kw)
        except RuntimeError as e:  # some runs failed: reported, and results_equal will say False
            failed.append(f"{out_root.name}: {e}")
        seconds = time.perf_counter() - start
        return seconds, {r["run_id"]: r for r in ex.collect(out_root / "bench_grid")}

    sequential_s, seq = timed(out_root=tmp / "sequential")
    parallel_s, par = timed(out_root=tmp / "parallel", workers=args.workers)
    differences = {rid: max_difference(numbers(seq[rid]), numbers(par.get(rid, seq[rid])) if rid in par
                                       else {}) for rid in seq}
    results_equal = len(seq) == len(par) == 8 and max(differences.values()) <= TOLERANCE

    spread = None
    if not args.no_probe:
        point = next(r for r in seq.values() if r["params"]["weights"] == "builtin"
                     and r["params"]["strategy"] == "full" and r["params"]["seed"] == 0)
        variants = probe(point["params"], tmp / "probe")
        variants["sequential"], variants["parallel"] = numbers(point), numbers(par[point["run_id"]])
        spread = max(max_difference(a, b) for a in variants.values() for b in variants.values())

    seq_times = [r["seconds"] for r in seq.values()]
    table = {w: round(cluster.makespan(seq_times, w), 1) for w in (1, 2, 4, 8, 16)}
    print("workers -> makespan (s), COMPUTED from the measured sequential per-run times:", file=sys.stderr)
    for w, s in table.items():
        print(f"  {w:>3} -> {s}", file=sys.stderr)
    result = {
        "sequential_s": round(sequential_s, 1), "parallel_s": round(parallel_s, 1),
        "speedup": round(sequential_s / parallel_s, 2), "results_equal": results_equal,
        "max_difference": max(differences.values()),
        "failed": failed, "tolerance": TOLERANCE, "probe_spread": spread,
        "workers": args.workers, "cores": os.cpu_count(), "threads_per_run_parallel":
            cluster.threads_per_run(os.cpu_count() or 1, args.workers),
        "per_run": {rid: {"sequential_s": seq[rid]["seconds"], "parallel_s": par.get(rid, {}).get("seconds"),
                          "params": {k: seq[rid]["params"][k] for k in ("weights", "strategy", "seed")}}
                    for rid in sorted(seq)},
        "computed_makespan_s": table,
        "loadavg_before": load_before, "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "note": "shared 2-core machine: other jobs ran at the same time (see loadavg)",
        "run_folders": str(tmp),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

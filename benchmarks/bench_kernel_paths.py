"""How far a seeded run moves when the CPU's math kernels change: the tolerance of the records' tests.

Seeded runs repeat bit for bit on one machine, not across machines: TensorFlow's oneDNN picks
its kernels (and so the order of floating-point sums) per CPU, and thread counts split sums
differently. ``tests/test_results.py`` re-runs the start of every committed record
(``fl.results.RERUNS``) and compares it with the record; this benchmark runs the same starts on
several kernel paths of *this* machine, as stand-ins for other CPUs:

- ``onednn-off``: ``TF_ENABLE_ONEDNN_OPTS=0`` (TensorFlow's Eigen kernels);
- ``onednn-on``: ``TF_ENABLE_ONEDNN_OPTS=1`` (oneDNN's kernels);
- ``...-1-thread``: the same with one intra- and one inter-op thread (``TF_NUM_*_THREADS``,
  ``OMP_NUM_THREADS``), so sums are split differently.

Which of the two is TensorFlow's default depends on the CPU: oneDNN is on by default only where
the CPU has AVX-512 VNNI/BF16 or AMX (recent Intel Xeons), off elsewhere (the project's AMD EPYC
machines). The JSON says which one this machine uses (``default_path``).

Each path runs in a fresh process. The table gives, per re-run, the largest difference from the
record in test images; the tolerance in ``tests/test_results.py`` is set above the largest
difference seen here, with the margin written next to it.

    python benchmarks/bench_kernel_paths.py [--paths onednn-off onednn-on ...] [--out FILE]
    python benchmarks/bench_kernel_paths.py --only bench_peft/lora --out results/bench_kernel_paths.json

``--only RECORD/ARM ...`` re-measures just those re-runs (after their record was made again) and,
with ``--out``, replaces their figures in the existing file, keeping every other re-run's figures
and naming the run that measured them (``kept_from``): about 2 minutes instead of 25.

Last line: one JSON object with ``max_images`` (the largest difference over every path and
re-run, in test images) and ``per_path`` (the same per path).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ONE_THREAD = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}
PATHS = {"onednn-off": {"TF_ENABLE_ONEDNN_OPTS": "0"}, "onednn-on": {"TF_ENABLE_ONEDNN_OPTS": "1"},
         "onednn-off-1-thread": {"TF_ENABLE_ONEDNN_OPTS": "0", **ONE_THREAD},
         "onednn-on-1-thread": {"TF_ENABLE_ONEDNN_OPTS": "1", **ONE_THREAD}}

DEFAULT = ("import os; os.environ.pop('TF_ENABLE_ONEDNN_OPTS', None); import tensorflow; "
           "from tensorflow.python.util import _pywrap_util_port as p; print(p.IsMklEnabled())")

CHILD = """
import json, sys
from fedtl_helpers.workflow.results import RERUNS, rerun_start
only = json.loads(sys.argv[1])
out = []
for name, arm, rounds in RERUNS:
    if only and f"{name}/{arm}" not in only:
        continue
    got, recorded, n_test = rerun_start(name, arm, rounds)
    out.append({"record": name, "arm": arm, "rounds": rounds, "n_test": n_test, "got": got,
                "recorded": recorded})
print("RESULT " + json.dumps(out))
"""


def run_path(name: str, only: list[str]) -> list[dict]:
    """Every re-run of ``fl.results.RERUNS`` (or those in ``only``) in a fresh process with
    ``PATHS[name]`` set."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **PATHS[name]}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(only)], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"path {name!r} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def images_off(run: dict) -> int:
    """The largest difference from the record over the re-run's rounds, in test images."""
    return max(round(abs(a - b) * run["n_test"]) for a, b in zip(run["got"], run["recorded"]))


def between(runs: dict[str, list[dict]], i: int) -> int:
    """The largest difference between any two kernel paths for re-run ``i``, in test images."""
    curves = [rs[i]["got"] for rs in runs.values()]
    n_test = next(iter(runs.values()))[i]["n_test"]
    return max(round((max(col) - min(col)) * n_test) for col in zip(*curves))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--paths", nargs="+", choices=list(PATHS), default=list(PATHS))
    p.add_argument("--only", nargs="+", default=[], metavar="RECORD/ARM",
                   help="re-measure only these re-runs; with --out, merge them into the existing file")
    p.add_argument("--out", help="also write the figures to this JSON file")
    args = p.parse_args()
    from fedtl_helpers.workflow.results import RERUNS
    known = [f"{n}/{a}" for n, a, _ in RERUNS]
    unknown = [r for r in args.only if r not in known]
    if unknown:
        p.error(f"--only {' '.join(unknown)} is invalid: allowed any of {', '.join(known)}")
    if args.only and args.out and not Path(args.out).exists():
        p.error(f"--only merges into an existing --out file; {args.out} does not exist")

    start, runs = time.time(), {}
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    mkl = subprocess.run([sys.executable, "-c", DEFAULT], env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"},
                         capture_output=True, text=True, check=True).stdout.split()[-1]
    default_path = "onednn-on" if mkl == "True" else "onednn-off"
    print(f"# TensorFlow's default on this CPU: {default_path}", flush=True)
    for name in args.paths:
        runs[name] = run_path(name, args.only)
        print(f"# {name}: done after {time.time() - start:.0f} s", flush=True)
    first = runs[args.paths[0]]
    print("test images apart from the record, per kernel path; last column: between the paths")
    print(f"{'record':<18} {'arm':<12} {'rounds':>6} {'test images':>11}  "
          + " ".join(f"{n:>19}" for n in args.paths) + f" {'between':>8}")
    for i, r in enumerate(first):
        cells = " ".join(f"{images_off(runs[n][i]):>19}" for n in args.paths)
        print(f"{r['record']:<18} {r['arm']:<12} {r['rounds']:>6} {r['n_test']:>11}  {cells} "
              f"{between(runs, i):>8}")
    per_path = {n: max(images_off(r) for r in rs) for n, rs in runs.items()}
    per_run = {f"{r['record']}/{r['arm']}": {n: images_off(runs[n][i]) for n in args.paths}
               for i, r in enumerate(first)}
    between_paths = {f"{r['record']}/{r['arm']}": between(runs, i) for i, r in enumerate(first)}
    figures = {"max_images": max(per_path.values()), "default_path": default_path,
               "per_path": per_path, "per_run": per_run, "between_paths": between_paths,
               "load_average": [round(x, 1) for x in os.getloadavg()],
               "seconds": round(time.time() - start)}
    record = {**figures, "runs": runs}
    if args.only and args.out:  # keep every other re-run's figures from the earlier measurement
        old = json.loads(Path(args.out).read_text())
        if set(old["per_path"]) != set(args.paths):
            raise SystemExit(f"--paths must match {args.out}'s paths {sorted(old['per_path'])} to merge")
        keep = [r for r in old["per_run"] if r not in args.only]
        idx = {n: [i for i, r in enumerate(old["runs"][n]) if f"{r['record']}/{r['arm']}" in keep]
               for n in args.paths}
        merged_runs = {n: [old["runs"][n][i] for i in idx[n]] + runs[n] for n in args.paths}
        per_run = {**{r: old["per_run"][r] for r in keep}, **per_run}
        per_path = {n: max(v[n] for v in per_run.values()) for n in args.paths}
        figures = {**figures, "max_images": max(per_path.values()), "per_path": per_path,
                   "per_run": per_run,
                   "between_paths": {**{r: old["between_paths"][r] for r in keep}, **between_paths},
                   "remeasured": list(args.only),
                   "kept_from": {"runs": keep, "provenance": old["provenance"],
                                 "earlier": old.get("kept_from")}}
        record = {**figures, "runs": merged_runs}
    if args.out:
        from fedtl_helpers.workflow.results import save
        save(args.out, record, seconds=figures["seconds"], randomness="simulation")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

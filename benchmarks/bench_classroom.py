"""Time to autograde a class: N submissions of one chapter with nbgrader (the teacher's guide).

    python benchmarks/bench_classroom.py --students 30 --assignment ch06

Builds a course in a temporary folder (generate, release), hands in N notebooks made from the
students' version (two thirds right, one third with the guide's typical 6.1 mistake), then
times `collect`, `autograde` (one nbgrader run, every submission in its own kernel) and
`feedback`. Prints one JSON object on the last line: seconds per step and per submission, the
CPU seconds of nbgrader and its kernels (what a shared machine does not inflate), the machine's
cores and its load average before and after.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # classroom/ sits beside the package
from classroom import grading  # noqa: E402

WRONG_6_1 = ("def my_fedavg(client_weights, num_examples):\n"
             "    return [sum(c[i] for c in client_weights) / len(client_weights)\n"
             "            for i in range(len(client_weights[0]))]")


def handed_in(course: Path, aid: str, n: int, folder: Path) -> None:
    source = json.loads(next((course / "source" / aid).glob("*.ipynb")).read_text())
    student = json.loads(next((course / "release" / aid).glob("*.ipynb")).read_text())
    answers = {c["metadata"]["nbgrader"]["grade_id"]: "\n".join(
        line for line in c["source"].splitlines() if "### " not in line)
        for c in source["cells"] if c["metadata"]["nbgrader"]["solution"]}
    folder.mkdir(parents=True)
    for i in range(n):
        nb = copy.deepcopy(student)
        for cell in nb["cells"]:
            gid = cell["metadata"]["nbgrader"]["grade_id"]
            if gid in answers:
                cell["source"] = WRONG_6_1 if (gid == "ex6_1_answer" and i % 3 == 2) else answers[gid]
        (folder / f"student{i:02d}.ipynb").write_text(json.dumps(nb))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--assignment", default="ch06", choices=["ch06"])
    args = parser.parse_args()
    if args.students < 1:
        parser.error(f"--students {args.students}: at least 1")
    grading.ensure_env(quiet=True)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        course, aid, seconds, cpu = Path(tmp) / "course", args.assignment, {}, {}
        grading.main(["generate", aid, "--course", str(course)])
        grading.main(["release", aid, "--course", str(course)])
        handed_in(course, aid, args.students, Path(tmp) / "in")
        for step, extra in (("collect", ["--from", str(Path(tmp) / "in")]), ("autograde", []),
                            ("feedback", []), ("export", [])):
            start, used = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
            code = grading.main([step, *([aid] if step != "export" else []), *extra, "--course", str(course)])
            seconds[step] = round(time.perf_counter() - start, 1)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)  # nbgrader and the kernels it ran
            cpu[step] = round(after.ru_utime + after.ru_stime - used.ru_utime - used.ru_stime, 1)
            if code:
                sys.exit(f"{step} failed (exit {code})")
        with (course / "gradebook.csv").open() as f:
            scores = sorted(float(row["score"]) for row in csv.DictReader(f))
    print(json.dumps({"benchmark": "classroom_autograde", "assignment": aid, "students": args.students,
                      "seconds": seconds, "cpu_seconds": cpu,
                      "autograde_per_submission_s": round(seconds["autograde"] / args.students, 2),
                      "scores": {str(s): scores.count(s) for s in sorted(set(scores))},
                      "cpu_count": os.cpu_count(), "load_avg_before": [round(x, 2) for x in load_before],
                      "load_avg_after": [round(x, 2) for x in os.getloadavg()]}))


if __name__ == "__main__":
    main()

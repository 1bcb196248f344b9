"""What one graded submission costs, per chapter: each source assignment executed once.

    python benchmarks/bench_classroom_chapters.py

Generates every chapter's nbgrader source assignment (the model answers in place) and executes
it top to bottom in a fresh kernel of this environment, as autograding runs a submission
(without nbgrader's own start-up, about 2-3 s per batch). Prints a table and, on the last line,
one JSON object: wall seconds per chapter (on a shared machine: the load average is given) and
the number of error outputs (0: every test cell passed).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # classroom/ sits beside the package
from classroom import assignments  # noqa: E402


def main() -> None:
    load_before = os.getloadavg()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for path in assignments.generate(ROOT / "notebooks", Path(tmp)):
            nb = nbformat.read(path, as_version=4)
            for cell in nb.cells:  # the model answer, as a student who got everything right
                cell.source = "\n".join(x for x in cell.source.splitlines() if "### " not in x)
            start = time.perf_counter()
            NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True,
                           resources={"metadata": {"path": tmp}}).execute()
            seconds = round(time.perf_counter() - start, 1)
            errors = sum(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", []))
            rows[path.parent.name] = {"seconds": seconds, "errors": errors}
            verdict = "every test passes" if not errors else f"{errors} errors"
            print(f"{path.parent.name:6} {seconds:6.1f} s  {verdict}", flush=True)
    print(json.dumps({"benchmark": "classroom_chapters", "chapters": rows, "cpu_count": os.cpu_count(),
                      "load_avg_before": [round(x, 2) for x in load_before],
                      "load_avg_after": [round(x, 2) for x in os.getloadavg()]}))


if __name__ == "__main__":
    main()

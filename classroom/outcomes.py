"""What happened to each submission: the notes of the gradebook's ``what_happened`` column.

Chapter: the teacher's guide, "Grading a class with nbgrader". Pure functions over notebooks
(JSON dicts) and nbgrader's log, used by :mod:`classroom.grading` after nbgrader
autograded a batch: which test failed and why (the checker's message), a cell stopped by the
time limit, a test cell deleted or edited (and put back), cells reordered, output cut, a file
that is not a notebook, a kernel that died.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .assignments import cell_source

MAX_OUTPUT_CHARS = 20_000  # per output kept in the graded notebook and its feedback page


def readable(path: Path) -> str:
    """Empty when ``path`` is a notebook nbgrader can read, else why not."""
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        return f"not valid JSON ({str(e)[:80]})"
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list) or nb.get("nbformat") != 4:
        return "JSON but not a version-4 notebook"
    return ""


def cap_outputs(nb: dict, limit: int = MAX_OUTPUT_CHARS) -> int:
    """Shorten every text output above ``limit`` characters in place; return the characters cut."""
    cut = 0
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            for holder, key in ((out, "text"), (out.get("data", {}), "text/plain")):
                value = holder.get(key)
                if isinstance(value, list):
                    value = "".join(value)
                if isinstance(value, str) and len(value) > limit and "cut by the grader" not in value[limit:]:
                    cut += len(value) - limit
                    note = f"\n... {len(value) - limit:,} more characters cut by the grader ...\n"
                    holder[key] = value[:limit] + note
    return cut


def what_happened(released: dict, submitted: dict, graded: dict, cut: int) -> list[str]:
    """Plain-language notes on one graded notebook: failing tests and why, timeouts, tampering.

    ``released`` is the students' version: a locked cell that differs from it was edited.
    """
    def gid(cell: dict) -> str | None:
        return cell["metadata"].get("nbgrader", {}).get("grade_id")

    notes = []
    given = {gid(c): c for c in released["cells"]}
    handed = [gid(c) for c in submitted["cells"] if gid(c) in given]
    for key, cell in given.items():
        if key not in handed and cell["metadata"]["nbgrader"].get("grade"):
            notes.append(f"{key}: deleted, put back by nbgrader")
    for cell in submitted["cells"]:
        ref = given.get(gid(cell))
        if ref and ref["metadata"]["nbgrader"].get("locked") and \
                cell_source(cell).strip() != cell_source(ref).strip():
            notes.append(f"{gid(cell)}: edited, restored from the source (checksum)")
    if handed != [k for k in given if k in handed]:
        notes.append("cells reordered (they ran in the student's order)")
    for cell in graded["cells"]:
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        names = {o.get("ename") for o in errors}
        key = gid(cell) or "an added cell"
        if "CellTimeoutError" in names:  # the interrupt's KeyboardInterrupt says nothing more
            notes.append(f"{key}: stopped after the time limit (an endless loop?)")
            continue
        for out in errors:
            ename, evalue = out.get("ename", ""), " ".join(str(out.get("evalue", "")).split())
            if ename == "NotImplementedError" or (ename == "AssertionError" and "not attempted" in evalue):
                notes.append(f"{key}: not attempted")
            else:
                notes.append(f"{key}: {ename}: {evalue[:160]}")
    if cut:
        notes.append(f"{cut:,} characters of output cut")
    return notes


NOTEBOOK_LINE = re.compile(r"\| INFO\] (?:Sanitizing|Autograding) .*[/\\](?:submitted|autograded)"
                           r"[/\\]([^/\\]+)[/\\]")
FAILURES = (  # nbgrader's log line -> what the gradebook says
    ("DeadKernelError", "the kernel died (the code exited, or ran out of memory): grade it by hand"),
    ("Timeout waiting for IOPub", "a cell went on after the time limit's interrupt: grade it by hand"),
    ("UnresponsiveKernelError", "the kernel stopped answering: grade it by hand"),
)


def failures(log: str) -> dict[str, str]:
    """student id -> why nbgrader gave up on their notebook, read from nbgrader's log."""
    found, student = {}, None
    for line in log.splitlines():
        m = NOTEBOOK_LINE.search(line)
        if m:
            student = m[1]
        for needle, why in FAILURES:
            if student and needle in line:
                found.setdefault(student, why)
    return found

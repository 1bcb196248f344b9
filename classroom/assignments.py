"""The chapters' exercises as nbgrader source assignments: one notebook per chapter.

Chapter: the teacher's guide, "Grading a class with nbgrader". ``python3 dev.py classroom
generate`` writes them; :mod:`classroom.grading` runs nbgrader on them.

Built from the chapters, never edited by hand: the exercise prompts and the placeholders come
from ``notebooks/NN_*.ipynb``, the answers from ``notebooks/solutions/``, the points and the
hidden tests from :data:`POINTS` and :data:`HIDDEN` below (the one place to change them). The
same inputs give byte-identical notebooks. Needs only the standard library (no nbgrader, no
TensorFlow): nbgrader reads the cell metadata written here (schema version 3).
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from pathlib import Path

# Points per exercise: 2 for a function to write, 1 for a value to choose.
POINTS: dict[str, int] = {
    "1.1": 2, "1.2": 2, "2.1": 2, "2.2": 2, "2.3": 2, "3.1": 2, "3.2": 2, "3.3": 2,
    "4.1": 2, "4.2": 2, "5.1": 2, "5.2": 2, "5.3": 2, "5.4": 2, "5.5": 2,
    "6.1": 2, "6.2": 2, "6.3": 1, "7.1": 2, "7.2": 2, "8.1": 2, "8.2": 2, "8.3": 1,
    "9.1": 2, "9.2": 2, "10.1": 1, "10.2": 2, "10.3": 2, "11.1": 2, "11.2": 2, "11.3": 1,
    "12.1": 2, "12.2": 2, "12.3": 2, "13.1": 2, "13.2": 2, "13.3": 1, "14.1": 1, "14.2": 2,
}

# Hidden tests: extra cases, new at every grading, compared with the package's reference. The
# checkers' fixed cases and expected values are readable in fedtl_helpers/check/, so an answer
# that hard-codes them would pass the visible checker; these cases give that away. nbgrader
# removes them from the students' copy and puts them back when it grades.
HIDDEN: dict[str, str] = {
    "1.1": """\
_rng = np.random.default_rng()
_y_train, _y_test = _rng.integers(0, 5, 40), _rng.integers(0, 5, 30)
_expect = float(np.mean(_y_test == np.bincount(_y_train).argmax()))
assert np.isclose(majority_baseline(_y_train, _y_test), _expect), "a hidden case of 1.1 fails"
""",
    "1.2": """\
_x = np.random.default_rng().integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)
_got = to_unit_float(_x)
assert _got.dtype == np.float32 and _got.shape == _x.shape, "a hidden case of 1.2 fails"
assert np.allclose(_got, _x / 255.0), "a hidden case of 1.2 fails"
""",
    "6.1": """\
_rng = np.random.default_rng()
_clients = [[_rng.normal(size=3), _rng.normal(size=(2, 2))] for _ in range(4)]
_counts = [int(n) for n in _rng.integers(1, 50, 4)]
_got = my_fedavg(_clients, _counts)
assert len(_got) == 2 and all(np.allclose(g, e) for g, e in zip(_got, fl.fedavg(_clients, _counts))), \\
    "a hidden case of 6.1 fails"
""",
    "6.2": """\
for _n, _f, _b in ((37, 0.3, 123), (7, 0.01, 5), (100, 0.125, 64)):
    assert upload_per_round(_n, _f, _b) == max(1, round(_f * _n)) * _b, "a hidden case of 6.2 fails"
""",
}

KERNELSPEC = {"display_name": "Python 3 (fedtl)", "language": "python", "name": "python3"}
CHECK_CALL = re.compile(r"^fl\.check\.exercise_(\d+)_(\d+)\((.*)\)\s*$")
IMPORT = re.compile(r"(import|from) \w")
DOCSTRING = re.compile(r"\s*(\"\"\"|''')")
MYST_ROLE = re.compile(r"\{(?:doc|term|ref|cite|numref|glue:text)\}`(?:[^`<]*<)?([^`>]*)>?`")


@dataclass(frozen=True)
class Exercise:
    """One exercise: its number (``"6.1"``), prompt, placeholder, answer and checker call."""

    number: str
    prompt: str
    placeholder: str
    answer: str
    check: str


def cell_source(cell: dict) -> str:
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def _split(code: str) -> tuple[str, str, str]:
    """A chapter's exercise cell -> (number, code before the checker, the checker call)."""
    lines = code.rstrip().splitlines()
    for i, line in enumerate(lines):
        m = CHECK_CALL.match(line)
        if m:
            rest = "\n".join(lines[:i] + lines[i + 1:]).strip("\n")
            return f"{m[1]}.{m[2]}", rest, line.strip()
    raise ValueError(f"no fl.check.exercise_N_M(...) call in {code[:60]!r}")


def _exercise_cells(notebook: dict) -> dict[str, tuple[str, str, str]]:
    """number -> (preceding markdown, code without the checker call, checker call)."""
    found = {}
    cells = notebook["cells"]
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "code" and "fl.check.exercise_" in cell_source(cell):
            number, code, call = _split(cell_source(cell))
            prompt = cell_source(cells[i - 1]) if i and cells[i - 1]["cell_type"] == "markdown" else ""
            found[number] = (prompt, code, call)
    return found


def chapter_exercises(chapter: Path, solutions: Path) -> list[Exercise]:
    """The exercises of ``chapter`` with their answers from ``solutions``, in the chapter's order."""
    stubs = _exercise_cells(json.loads(chapter.read_text(encoding="utf-8")))
    answers = _exercise_cells(json.loads(solutions.read_text(encoding="utf-8")))
    if set(stubs) != set(answers):
        raise ValueError(f"{chapter.name} has exercises {sorted(stubs)} but {solutions.name} answers "
                         f"{sorted(answers)}")
    out = []
    for number, (prompt, placeholder, call) in stubs.items():
        # "## Exercises" sometimes shares a cell with the Summary: keep the exercise's own paragraph
        start = prompt.find(f"**Exercise {number}")
        prompt = prompt[start:] if start >= 0 else prompt
        out.append(Exercise(number, MYST_ROLE.sub(r"\1", prompt).strip(), placeholder,
                            answers[number][1], call))
    return out


def _region(lines: list[str]) -> list[str]:
    """Answer ``lines`` between solution markers; top-level imports and blank runs stay visible."""
    out: list[str] = []
    hidden: list[str] = []

    def flush() -> None:
        if any(line.strip() for line in hidden):
            first = next(line for line in hidden if line.strip())
            indent = first[: len(first) - len(first.lstrip())]
            out.extend([f"{indent}### BEGIN SOLUTION", *hidden, f"{indent}### END SOLUTION"])
        else:
            out.extend(hidden)
        hidden.clear()

    for line in lines:
        if IMPORT.match(line):  # `import math` gives nothing away, and keeps the `def` below it visible
            flush()
            out.append(line)
        else:
            hidden.append(line)
    flush()
    return out


def solution_cell(ex: Exercise) -> str:
    """The answer, with what the students write between nbgrader's solution markers.

    Lines the chapter's placeholder shares with the answer (``def f(x):``) stay visible, as do
    the placeholder's docstrings and the answer's imports; each run of other answer lines is a
    solution region, which nbgrader replaces by ``raise NotImplementedError()`` at its indentation.
    """
    given, answer = ex.placeholder.splitlines(), ex.answer.splitlines()
    out: list[str] = []
    for op, g0, g1, a0, a1 in difflib.SequenceMatcher(None, given, answer, autojunk=False).get_opcodes():
        if op == "equal":
            out += answer[a0:a1]
            continue
        out += [line for line in given[g0:g1] if DOCSTRING.match(line)]
        out += _region(answer[a0:a1])
    return "\n".join(out).strip("\n")


def test_cell(ex: Exercise) -> str:
    """The checker call as an autograded test; "not attempted" scores no points."""
    points = POINTS[ex.number]
    hidden = ", then hidden cases" if ex.number in HIDDEN else ""
    lines = [f"# Exercise {ex.number} ({points} point{'s' * (points != 1)}): the chapter's checker{hidden}.",
             f'assert {ex.check}, "Exercise {ex.number} is not attempted yet"']
    if ex.number in HIDDEN:
        lines += ["### BEGIN HIDDEN TESTS", HIDDEN[ex.number].rstrip("\n"), "### END HIDDEN TESTS"]
    return "\n".join(lines)


def _cell(kind: str, source: str, grade_id: str, *, solution=False, grade=False, points=0) -> dict:
    meta = {"grade": grade, "grade_id": grade_id, "locked": not solution, "schema_version": 3,
            "solution": solution}
    if grade:
        meta["points"] = points
    cell = {"cell_type": kind, "id": grade_id.replace("_", "-"), "metadata": {"nbgrader": meta},
            "source": source}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def assignment_name(chapter: Path) -> str:
    """``notebooks/06_fedavg.ipynb`` -> ``ch06`` (nbgrader's assignment id)."""
    return "ch" + chapter.stem.split("_")[0]


def build_assignment(chapter: Path, solutions: Path) -> dict:
    """The nbgrader source notebook (a JSON-ready dict) for one chapter's exercises."""
    exercises = chapter_exercises(chapter, solutions)
    sol_nb = json.loads(solutions.read_text(encoding="utf-8"))
    setup = []
    for cell in sol_nb["cells"]:  # the solutions' setup: code before the first exercise
        if cell["cell_type"] != "code" or "install-check" in cell["metadata"].get("tags", []):
            continue
        if "fl.check.exercise_" in cell_source(cell):
            break
        setup.append(cell_source(cell).strip())
    title = cell_source(json.loads(chapter.read_text(encoding="utf-8"))["cells"][0]).splitlines()[0]
    total = sum(POINTS[e.number] for e in exercises)
    intro = (f"# Graded exercises: {title.lstrip('# ')}\n\nThe exercises of the chapter, graded "
             f"({total} points). Write your answer in each answer cell in place of `raise "
             "NotImplementedError()`, then run the test cell below it: it prints *correct* or says what "
             "is wrong. Grading runs more cases than you see. Do not delete or edit the test cells "
             "(they are restored before grading); a cell that runs too long (30 s by default) is stopped.")
    cells = [_cell("markdown", intro, "intro"), _cell("code", "\n\n".join(setup), "setup")]
    for ex in exercises:
        key = "ex" + ex.number.replace(".", "_")
        cells += [_cell("markdown", ex.prompt, f"{key}_prompt"),
                  _cell("code", solution_cell(ex), f"{key}_answer", solution=True),
                  _cell("code", test_cell(ex), f"{key}_test", grade=True, points=POINTS[ex.number])]
    return {"cells": cells, "metadata": {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def dumps(notebook: dict) -> str:
    """nbformat's own layout (indent 1, sorted keys), so the files diff well and repeat exactly."""
    return json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def chapters(notebooks: Path) -> list[Path]:
    """The chapter notebooks that have exercises, in order."""
    return [p for p in sorted(notebooks.glob("[0-9]*.ipynb")) if "fl.check.exercise_" in p.read_text("utf-8")]


def notebook_name(chapter: Path) -> str:
    """``06_fedavg.ipynb`` -> ``06_fedavg_exercises`` (the assignment's notebook, no suffix)."""
    return f"{chapter.stem}_exercises"


def generate(notebooks: Path, source_dir: Path, only: list[str] | None = None) -> list[Path]:
    """Write ``source_dir/<chNN>/<NN_name>_exercises.ipynb`` for each chapter; return the paths.

    ``only``: assignment ids (``["ch06"]``) to build; every chapter with exercises by default.
    Files are written atomically (temporary file, then rename).
    """
    found = {assignment_name(p): p for p in chapters(notebooks)}
    unknown = sorted(set(only or []) - set(found))
    if unknown:
        raise ValueError(f"assignment {', '.join(unknown)}: no such chapter; allowed: {', '.join(found)}")
    written = []
    for aid, chapter in found.items():
        if only and aid not in only:
            continue
        solutions = notebooks / "solutions" / f"{chapter.stem}_solutions.ipynb"
        text = dumps(build_assignment(chapter, solutions))
        dest = source_dir / aid / f"{notebook_name(chapter)}.ipynb"
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(".ipynb.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(dest)
        written.append(dest)
    return written

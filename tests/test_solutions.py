"""The worked solutions pass their checkers, and every exercise has a checker and a solution.

nbval executes every ``notebooks/solutions/*.ipynb`` (``tests/conftest.py``) and compares each
cell that calls ``fl.check.exercise_N_M(...)`` with its stored output, which this file requires
to be ``Exercise N.M: correct``. So a change to the helpers or to a checker that breaks a solution
fails there, and the exercises, their checkers and their solutions cannot drift apart, whoever
adds a chapter. Nothing here executes a notebook.
"""

import re
from pathlib import Path

import nbformat
import pytest
from conftest import REFERENCE_TAG, is_reference

import fedtl_helpers as fl

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb"))  # 05b_...: a chapter between 05 and 06
SOLUTIONS = sorted((ROOT / "notebooks" / "solutions").glob("*.ipynb"))
CALL = re.compile(r"\bfl\.check\.(exercise_(\d+)_(\d+))\s*\(")


def calls(path: Path) -> list[str]:
    nb = nbformat.read(path, as_version=4)
    return [m.group(1) for c in nb.cells if c.cell_type == "code" for m in CALL.finditer(c.source)]


def test_solution_notebooks_found():
    assert SOLUTIONS, "no notebooks/solutions/*.ipynb"


def stored_text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_every_checker_in_a_solution_prints_correct(path):
    """Each checker cell is an nbval reference cell whose stored output says "correct"."""
    checked = 0
    for cell in (c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"):
        for m in CALL.finditer(cell.source):
            number = f"{m.group(2)}.{m.group(3)}"
            assert is_reference(cell), f"{path.name}: tag the cell of exercise {number} {REFERENCE_TAG!r}"
            assert f"Exercise {number}: correct" in stored_text(cell), (
                f"{path.name}: the solution of exercise {number} does not pass its checker; it printed:\n"
                f"{stored_text(cell)}")
            checked += 1
    assert checked, f"{path.name} calls no checker"


def test_every_exercise_in_a_chapter_has_a_checker_and_a_solution():
    known = set(fl.check.exercises())
    solved = {name for p in SOLUTIONS for name in calls(p)}
    asked = {}
    for path in CHAPTERS:
        for name in calls(path):
            asked.setdefault(name, path.name)
    missing = sorted(n for n in asked if n not in known)
    assert not missing, f"no checker for {[(n, asked[n]) for n in missing]} in fedtl_helpers/check/"
    unsolved = sorted(n for n in asked if n not in solved)
    assert not unsolved, f"no solution notebook calls {[(n, asked[n]) for n in unsolved]}"
    orphans = sorted(known - set(asked))
    assert not orphans, f"checkers {orphans} are used by no chapter notebook"


def test_exercise_numbers_match_their_chapter():
    for path in CHAPTERS + SOLUTIONS:
        chapter = int(path.name[:2])
        wrong = [n for n in calls(path) if int(n.split("_")[1]) != chapter]
        assert not wrong, f"{path.name} calls {wrong}: chapter {chapter}'s are exercise_{chapter}_M"


def test_placeholders_in_chapters_leave_the_book_buildable():
    """The chapter's own exercise cells raise nothing when untouched (they print "not attempted")."""
    for path in CHAPTERS:
        nb = nbformat.read(path, as_version=4)
        for cell in (c for c in nb.cells if c.cell_type == "code" and CALL.search(c.source)):
            src = cell.source
            shipped = "NotImplementedError" in src or re.search(r"^\w+ = None\b", src, re.M)
            assert shipped, f"{path.name}: an exercise cell ships a solution, not its placeholder:\n{src}"
            if is_reference(cell):  # what nbval holds the chapter's run to
                assert "not attempted" in stored_text(cell), f"{path.name}: {stored_text(cell)}"

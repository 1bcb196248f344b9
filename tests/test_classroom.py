"""Grading a class with nbgrader (classroom/: assignments.py, grading.py, outcomes.py).

The generated assignments are checked for content and byte-identical regeneration; then one
course directory grades synthetic classes of chapters 1 and 6 end to end with nbgrader's own
command line (generate, release, collect a folder, autograde, export, feedback), and the exact
scores in the exported gradebook are asserted. nbgrader's environment (.venv-classroom) is made
here on first use, by the same function as `python3 dev.py classroom`.
"""

from __future__ import annotations

import copy
import csv
import json
import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # classroom/ is a teacher's tool beside the package, like deploy/
from classroom import assignments, grading, outcomes  # noqa: E402

NOTEBOOKS = ROOT / "notebooks"
TIMEOUT = 20  # seconds per cell when grading; the import cell takes ~3 s on a loaded 2-core machine


# ---------------------------------------------------------------- generation (no nbgrader needed)

def test_regenerating_gives_byte_identical_files(tmp_path):
    first = assignments.generate(NOTEBOOKS, tmp_path / "a")
    second = assignments.generate(NOTEBOOKS, tmp_path / "b")
    assert [p.relative_to(tmp_path / "a") for p in first] == [p.relative_to(tmp_path / "b") for p in second]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(first, second))
    assert len(first) == 15  # every chapter with exercises (01 to 14, with 05b; 10 and 11 included)


def test_every_exercise_has_points_once_and_a_checker(tmp_path):
    import fedtl_helpers as fl

    grade_ids = []
    for path in assignments.generate(NOTEBOOKS, tmp_path):
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        grade_ids += [c.metadata.nbgrader["grade_id"] for c in nb.cells if c.metadata.nbgrader["grade"]]
    numbers = [g[2:-5].replace("_", ".") for g in grade_ids]  # "ex6_1_test" -> "6.1"
    assert sorted(numbers) == sorted(assignments.POINTS) and len(set(numbers)) == len(numbers)
    assert sorted(f"exercise_{n.replace('.', '_')}" for n in numbers) == sorted(fl.check.exercises())
    assert set(assignments.HIDDEN) <= set(assignments.POINTS)


def test_chapter_6_assignment_cells(tmp_path):
    (path,) = assignments.generate(NOTEBOOKS, tmp_path, ["ch06"])
    assert path.relative_to(tmp_path).as_posix() == "ch06/06_fedavg_exercises.ipynb"
    nb = json.loads(path.read_text())
    cells = {c["metadata"]["nbgrader"]["grade_id"]: c for c in nb["cells"]}
    assert [c["metadata"]["nbgrader"]["grade_id"] for c in nb["cells"]] == [
        "intro", "setup", *(f"ex6_{i}_{part}" for i in (1, 2, 3) for part in ("prompt", "answer", "test"))]
    answer = cells["ex6_1_answer"]["source"]
    assert answer.startswith("def my_fedavg(client_weights, num_examples):\n    ### BEGIN SOLUTION\n")
    assert answer.endswith("\n    ### END SOLUTION") and "total = sum(num_examples)" in answer
    test = cells["ex6_1_test"]
    assert test["metadata"]["nbgrader"] == {"grade": True, "grade_id": "ex6_1_test", "locked": True,
                                            "points": 2, "schema_version": 3, "solution": False}
    assert 'assert fl.check.exercise_6_1(my_fedavg), "Exercise 6.1 is not attempted yet"' in test["source"]
    assert "### BEGIN HIDDEN TESTS" in test["source"]
    assert "### BEGIN HIDDEN TESTS" not in cells["ex6_3_test"]["source"]  # 6.3 has no hidden case
    assert cells["ex6_3_test"]["metadata"]["nbgrader"]["points"] == 1
    assert cells["setup"]["source"] == "import numpy as np\n\nimport fedtl_helpers as fl"
    assert "{doc}" not in json.dumps(nb)  # MyST roles become plain text


def test_students_keep_signatures_docstrings_and_imports(tmp_path):
    cells = {}
    for path in assignments.generate(NOTEBOOKS, tmp_path, ["ch02", "ch08"]):
        nb = json.loads(path.read_text())
        cells.update({c["metadata"]["nbgrader"]["grade_id"]: c["source"] for c in nb["cells"]})
    # 8.1: two functions, each body its own region; the chapter's docstring stays
    assert cells["ex8_1_answer"].splitlines()[:3] == [
        "def my_quantize(x):",
        '    """Return (levels as uint8, lo, scale) for a float array x, 256 levels between min and max."""',
        "    ### BEGIN SOLUTION"]
    assert cells["ex8_1_answer"].count("### BEGIN SOLUTION") == 2
    assert "\ndef my_dequantize(levels, lo, scale):\n    ### BEGIN SOLUTION\n" in cells["ex8_1_answer"]
    # 2.3: the answer's `import math` is no secret, and keeps the def line outside the region
    assert cells["ex2_3_answer"].startswith(
        "import math\n\ndef local_steps(n_examples, batch_size, epochs):\n    ### BEGIN SOLUTION\n")
    # a value to choose: the whole line is the answer
    assert cells["ex8_3_answer"] == \
        "### BEGIN SOLUTION\nmy_sparsity = 0.01\nmy_value_bits = 8\n### END SOLUTION"


def test_summary_and_exercises_in_one_cell_keeps_only_the_exercise(tmp_path):
    # chapters 10 and 11 put "## Exercises" in the Summary's cell: the prompt starts at the exercise
    (path,) = assignments.generate(NOTEBOOKS, tmp_path, ["ch10"])
    prompt = json.loads(path.read_text())["cells"][2]["source"]
    assert prompt.startswith("**Exercise 10.1") and "## Summary" not in prompt


def test_unknown_assignment_is_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match="assignment ch99: no such chapter; allowed: ch01, ch02"):
        assignments.generate(NOTEBOOKS, tmp_path, ["ch99"])
    assert not any(tmp_path.iterdir())


def test_cap_outputs_shortens_long_text_only():
    nb = {"cells": [{"cell_type": "code", "outputs": [
        {"output_type": "stream", "name": "stdout", "text": "x" * 50},
        {"output_type": "execute_result", "data": {"text/plain": "short"}}]}]}
    assert outcomes.cap_outputs(nb, limit=20) == 30
    assert nb["cells"][0]["outputs"][0]["text"].startswith("x" * 20 + "\n... 30 more characters cut")
    assert nb["cells"][0]["outputs"][1]["data"]["text/plain"] == "short"


# ---------------------------------------------------------------- a whole class, graded with nbgrader

def _answer(source: dict, grade_id: str) -> str:
    """The model answer of a cell of the source assignment, without nbgrader's markers."""
    cell = next(c for c in source["cells"] if c["metadata"]["nbgrader"]["grade_id"] == grade_id)
    return "\n".join(line for line in cell["source"].splitlines() if "### " not in line)


def _set(nb: dict, grade_id: str, text: str) -> None:
    next(c for c in nb["cells"] if c["metadata"]["nbgrader"]["grade_id"] == grade_id)["source"] = text


def _drop(nb: dict, grade_id: str) -> None:
    nb["cells"] = [c for c in nb["cells"] if c["metadata"]["nbgrader"]["grade_id"] != grade_id]


def _class(course: Path, aid: str, wrong: dict[str, str], folder: Path) -> dict[str, float]:
    """Write the class's submissions into ``folder``; return each student's expected score."""
    name = next((course / "release" / aid).glob("*.ipynb"))
    student = json.loads(name.read_text())
    source = json.loads(next((course / "source" / aid).glob("*.ipynb")).read_text())
    answers = [c["metadata"]["nbgrader"]["grade_id"] for c in source["cells"]
               if c["metadata"]["nbgrader"]["solution"]]
    points = {g.replace("_answer", ""): assignments.POINTS[g[2:-7].replace("_", ".")] for g in answers}
    total = sum(points.values())
    first, second = answers[0], answers[1]
    correct = copy.deepcopy(student)
    for gid in answers:
        _set(correct, gid, _answer(source, gid))
    subs, expect = {}, {}

    subs["alice"], expect["alice"] = correct, total                       # all correct
    nb = copy.deepcopy(correct)
    _set(nb, first, wrong[first])                                         # the guide's typical mistake
    subs["bob"], expect["bob"] = nb, total - points[first[:-7]]
    nb = copy.deepcopy(correct)
    _set(nb, second, 'raise RuntimeError("my cell crashes")\n' + _answer(source, second))
    subs["carol"], expect["carol"] = nb, total - points[second[:-7]]      # a cell that raises
    subs["judy"], expect["judy"] = student, 0                             # handed in untouched
    if aid == "ch06":
        nb = copy.deepcopy(correct)
        _set(nb, first, "def my_fedavg(client_weights, num_examples):\n    while True:\n        pass")
        subs["dave"], expect["dave"] = nb, total - 2                      # an endless loop
        nb = copy.deepcopy(correct)
        _set(nb, first, wrong[first])
        _drop(nb, "ex6_1_test")                                           # a wrong answer, its test deleted
        subs["erin"], expect["erin"] = nb, total - 2
        nb = copy.deepcopy(correct)
        _set(nb, first, wrong[first])
        _set(nb, "ex6_1_test", "pass")                                    # ... or its test emptied
        subs["frank"], expect["frank"] = nb, total - 2
        nb = copy.deepcopy(correct)
        _set(nb, "ex6_3_answer", 'print("x" * 2_000_000)\n' + 'print("y")\n' * 5000 + "my_alpha = 0.1")
        subs["hank"], expect["hank"] = nb, total                          # megabytes of output
        nb = copy.deepcopy(correct)
        _set(nb, "ex6_2_answer", "import os\nos._exit(1)")
        subs["kate"], expect["kate"] = nb, 0                              # kills the kernel
        nb = copy.deepcopy(correct)
        cells = nb["cells"]
        cells[-2], cells[-1] = cells[-1], cells[-2]                       # 6.3's test before its answer
        subs["ivan"], expect["ivan"] = nb, total - 1
    folder.mkdir(parents=True)
    for who, nb in subs.items():
        (folder / f"{who}.ipynb").write_text(json.dumps(nb))
    if aid == "ch06":
        (folder / "gina.ipynb").write_text(json.dumps(correct)[:-200])   # not valid JSON
        expect["gina"] = 0
    return expect


WRONG = {
    "ex1_1_answer": "def majority_baseline(y_train, y_test):\n"
                    "    return float(np.mean(y_test == np.bincount(y_test).argmax()))",
    "ex6_1_answer": "def my_fedavg(client_weights, num_examples):\n"
                    "    return [sum(c[i] for c in client_weights) / len(client_weights)\n"
                    "            for i in range(len(client_weights[0]))]",
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    grading.ensure_env(quiet=True)  # what `dev.py classroom` does first; nothing when it is there
    base = tmp_path_factory.mktemp("classroom")
    course = base / "course"
    expected = {}
    for aid in ("ch06", "ch01"):
        assert grading.main(["generate", aid, "--course", str(course), "--timeout", str(TIMEOUT)]) == 0
        assert grading.main(["release", aid, "--course", str(course)]) == 0
        expected[aid] = _class(course, aid, WRONG, base / f"handed-in-{aid}")
        assert grading.main(["collect", aid, "--from", str(base / f"handed-in-{aid}"),
                             "--course", str(course)]) == 0
        assert grading.main(["autograde", aid, "--course", str(course)]) == 0
        assert grading.main(["feedback", aid, "--course", str(course)]) == 0
    assert grading.main(["export", "--course", str(course)]) == 0
    with (course / "gradebook.csv").open() as f:
        rows = {(r["assignment"], r["student_id"]): r for r in csv.DictReader(f)}
    return course, expected, rows


@pytest.mark.slow
def test_exact_scores_in_the_gradebook(graded):
    course, expected, rows = graded
    got = {(aid, who): float(rows[aid, who]["score"]) for aid in expected for who in expected[aid]}
    want = {(aid, who): float(score) for aid in expected for who, score in expected[aid].items()}
    assert got == want
    assert want["ch06", "alice"] == 5.0 and want["ch01", "alice"] == 4.0
    assert {float(rows[k]["max_score"]) for k in want if k[0] == "ch06"} == {5.0}
    # a student of chapter 6 only has a row for chapter 1 too: no submission, 0 points
    assert float(rows["ch01", "dave"]["score"]) == 0.0
    assert rows["ch01", "dave"]["what_happened"] == "no submission"


@pytest.mark.slow
def test_the_gradebook_says_what_happened(graded):
    _, _, rows = graded
    said = {k: r["what_happened"] for k, r in rows.items()}
    assert said["ch06", "alice"] == "graded"
    assert "ex6_1_test: ExerciseError: Exercise 6.1: you returned [2, 3] | [[2]], the unweighted mean" \
        in said["ch06", "bob"]
    assert "ex6_2_answer: RuntimeError: my cell crashes" in said["ch06", "carol"]
    assert "ex6_2_test: NameError" in said["ch06", "carol"]
    assert "ex6_1_test: stopped after the time limit" in said["ch06", "dave"]
    assert "ex6_1_test: deleted, put back by nbgrader" in said["ch06", "erin"]
    assert "ex6_1_test: edited, restored from the source (checksum)" in said["ch06", "frank"]
    assert said["ch06", "gina"].startswith("scored 0 | not valid JSON")
    assert re.search(r"[\d,]+ characters of output cut", said["ch06", "hank"])
    assert "cells reordered" in said["ch06", "ivan"] and "ex6_3_test: NameError" in said["ch06", "ivan"]
    assert said["ch06", "kate"].startswith("grading failed | the kernel died (the code exited")
    assert said["ch06", "judy"].count("not attempted") == 3  # 6.1, 6.2 and 6.3's answer cell
    assert "ex1_1_test: ExerciseError: Exercise 1.1: you returned 0.5 but the expected accuracy is 0.25" \
        in said["ch01", "bob"]


@pytest.mark.slow
def test_feedback_pages_carry_the_checkers_messages(graded):
    course, expected, _ = graded
    pages = {who: course / "feedback" / who / "ch06" / "06_fedavg_exercises.html" for who in expected["ch06"]}
    # gina handed in no notebook (invalid JSON): a score and a note in the gradebook, no page
    # kate's kernel died: nbgrader gave up on her notebook, so no page either
    assert {w for w, p in pages.items() if p.exists()} == set(expected["ch06"]) - {"gina", "kate"}
    assert "the unweighted mean; weighted by examples it should be" in pages["bob"].read_text()
    assert "CellTimeoutError" in pages["dave"].read_text()
    # the hidden tests stay hidden in the feedback (a failing test's traceback still shows its lines)
    assert "hidden case of 6.1" not in pages["alice"].read_text()
    assert "Score: 5.0 / 5.0" in pages["alice"].read_text()
    hank = pages["hank"].read_text()
    assert len(hank) < 1_000_000 and "more characters cut by the grader" in hank
    assert (course / "feedback" / "bob" / "ch01" / "01_introduction_exercises.html").exists()
    # the submission as handed in stays with the teacher
    assert (course / "submitted" / "gina" / "ch06" / "06_fedavg_exercises.ipynb.invalid").exists()


def test_failures_are_read_from_nbgraders_log():
    log = "\n".join([
        "[AutogradeApp | INFO] Sanitizing /c/submitted/kate/ch06/06_fedavg_exercises.ipynb",
        "[AutogradeApp | ERROR] Kernel died while waiting for execute reply.",
        "    nbclient.exceptions.DeadKernelError: Kernel died",
        "[AutogradeApp | INFO] Autograding /c/autograded/leo/ch06/06_fedavg_exercises.ipynb",
        "    The message was: Timeout waiting for IOPub output.",
        "[AutogradeApp | INFO] Autograding /c/autograded/alice/ch06/06_fedavg_exercises.ipynb",
        "[AutogradeApp | ERROR] There was an error processing assignment 'ch06' for student 'kate'"])
    assert outcomes.failures(log) == {
        "kate": "the kernel died (the code exited, or ran out of memory): grade it by hand",
        "leo": "a cell went on after the time limit's interrupt: grade it by hand"}


def test_bad_arguments_are_refused_before_any_work(tmp_path, capsys):
    course = tmp_path / "course"
    with pytest.raises(SystemExit) as e:
        grading.main(["autograde", "--course", str(course)])
    assert e.value.code == 2 and "autograde takes one assignment id" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        grading.main(["all", "ch06", "--course", str(course)])
    assert "all needs --from FOLDER" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        grading.main(["generate", "--timeout", "0", "--course", str(course)])
    assert "--timeout 0: seconds per cell, an integer >= 1" in capsys.readouterr().err
    assert not course.exists()
    assert grading.main(["generate", "ch01", "--course", str(course)]) == 0
    assert grading.main(["release", "ch99", "--course", str(course)]) == 2
    assert "assignment 'ch99': not in" in capsys.readouterr().err and not (course / "release").exists()
    with pytest.raises(SystemExit):
        grading.main(["all", "ch14", "--from", str(tmp_path), "--course", str(course)])
    assert "exercise 14.1's checker finds the repository" in capsys.readouterr().err
    assert not (course / "source" / "ch14").exists()

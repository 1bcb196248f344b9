"""Grade a class with nbgrader: one command per step (``python3 dev.py classroom <step>``).

Chapter: the teacher's guide, "Grading a class with nbgrader". The steps, in order::

    setup                            make .venv-classroom (nbgrader) and the grading kernel
    generate [chNN ...]              source assignments from the chapters (assignments.py)
    release chNN                     nbgrader generate_assignment + release_assignment
    collect chNN [--from FOLDER]     nbgrader collect (exchange), or a folder of handed-in notebooks
    autograde chNN [--timeout S]     nbgrader autograde, each notebook in its own kernel; what happened
    export                           nbgrader export -> gradebook.csv, plus a "what_happened" column
    feedback chNN                    nbgrader generate_feedback -> feedback/<student>/chNN/*.html
    all chNN --from FOLDER           generate, release, collect, autograde, export, feedback

nbgrader lives in its own environment ``.venv-classroom`` (pinned in requirements-classroom.txt,
made on first use); the notebooks it grades run in the course's environment, the interpreter
running this module, registered there as the kernel ``fedtl-grader``. No TensorFlow here.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from . import assignments
from .outcomes import cap_outputs, failures, readable, what_happened

ROOT = Path(__file__).resolve().parents[1]
ENV = ROOT / ".venv-classroom"
PINS = ROOT / "requirements-classroom.txt"
KERNEL = "fedtl-grader"
COURSE_ID = "fedtl"
STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
STEPS = ("setup", "generate", "release", "collect", "autograde", "export", "feedback", "all")


def _bin(name: str) -> Path:
    return ENV / ("Scripts" if os.name == "nt" else "bin") / name


def ensure_env(quiet: bool = False) -> Path:
    """Create ``.venv-classroom`` from the pins when they changed; register the grading kernel.

    The kernel ``fedtl-grader`` runs this interpreter (the course's environment), so the graded
    notebooks import fedtl_helpers and TensorFlow as the students' do. Returns the ``nbgrader``
    executable. The test suite calls this too, so ``dev.py test`` needs nothing installed first.
    """
    digest = hashlib.sha256(PINS.read_bytes()).hexdigest()
    stamp = ENV / ".fedtl-classroom-installed"
    if not (stamp.exists() and stamp.read_text() == digest):
        def run(*cmd):
            subprocess.run([str(c) for c in cmd], check=True, stdout=subprocess.DEVNULL if quiet else None)

        if not _bin("python").exists():
            run(sys.executable, "-m", "venv", ENV)
        run(_bin("python"), "-m", "pip", "install", "--quiet", "-r", PINS)
        stamp.write_text(digest)
    spec = ENV / "share" / "jupyter" / "kernels" / KERNEL / "kernel.json"
    spec.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                       "display_name": "Python (fedtl, grading)", "language": "python"}, indent=1)
    if not spec.exists() or spec.read_text() != text:  # the course's interpreter may have moved
        spec.write_text(text)
    return _bin("nbgrader")


def write_config(course: Path, timeout: int) -> Path:
    """The course's ``nbgrader_config.py``: where everything lives and how grading runs."""
    text = f'''# Written by `python3 dev.py classroom` (classroom/grading.py): edits are lost.
c = get_config()  # noqa: F821
c.CourseDirectory.root = {str(course)!r}
c.CourseDirectory.course_id = {COURSE_ID!r}
c.Exchange.root = {str(course / "exchange")!r}
# the graded notebooks run in the course's environment, not nbgrader's
c.Execute.kernel_name = {KERNEL!r}
c.Execute.timeout = {int(timeout)}  # seconds per cell; then the kernel is interrupted, grading goes on
c.Execute.interrupt_on_timeout = True
# a deleted test cell is put back from the source (and then run), an edited one restored by checksum
c.OverwriteCells.add_missing_cells = True
c.LimitOutput.max_lines = 1000
c.LimitOutput.max_traceback = 100
# feedback pages leave the hidden tests out, as the students' copy does
from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor  # noqa: E402
from nbgrader.preprocessors import ClearHiddenTests, GetGrades  # noqa: E402
c.GenerateFeedback.preprocessors = [GetGrades, CSSHTMLHeaderPreprocessor, ClearHiddenTests]
'''
    course.mkdir(parents=True, exist_ok=True)
    (course / "exchange").mkdir(exist_ok=True)
    path = course / "nbgrader_config.py"
    _write(path, text)
    return path


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def nbgrader(course: Path, *args: str, check: bool = True, quiet: bool = False,
             log: Path | None = None) -> int:
    """Run nbgrader's own command line in the course directory; return its exit status.

    ``log``: write nbgrader's whole output there and show one line per notebook it grades
    (``quiet``: show nothing). ``check``: raise ``CalledProcessError`` on a non-zero status.
    """
    cmd = [str(ensure_env()), *args]
    print("+ nbgrader", " ".join(args), flush=True)
    # nbgrader runs its environment's `alembic` by name (the gradebook's schema migrations)
    env = {**os.environ, "PATH": os.pathsep.join([str(_bin("nbgrader").parent), os.environ.get("PATH", "")])}
    if log is None:
        out = subprocess.DEVNULL if quiet else None
        code = subprocess.run(cmd, cwd=course, env=env, stdout=out, stderr=out).returncode
    else:
        log.parent.mkdir(parents=True, exist_ok=True)
        with subprocess.Popen(cmd, cwd=course, env=env, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT) as proc, log.open("w", encoding="utf-8") as f:
            for line in proc.stdout:
                f.write(line)
                if "| INFO] Autograding " in line:  # the notebook's path names the student
                    print("  grading", Path(line.split("Autograding ", 1)[1].strip()).parent.parent.name,
                          flush=True)
                elif "| ERROR]" in line:
                    print("  " + line.rstrip()[:200], flush=True)
        code = proc.returncode
    if check and code:
        raise subprocess.CalledProcessError(code, cmd)
    return code


def _notebook(course: Path, aid: str) -> str:
    found = sorted((course / "source" / aid).glob("*.ipynb"))
    if not found:
        raise ValueError(f"assignment {aid!r}: no source in {course / 'source' / aid}; run `generate` first")
    return found[0].stem


def generate(course: Path, only: list[str], timeout: int) -> None:
    write_config(course, timeout)
    for path in assignments.generate(ROOT / "notebooks", course / "source", only or None):
        print(f"source assignment: {path.relative_to(course)}")


def release(course: Path, aid: str) -> None:
    nbgrader(course, "generate_assignment", aid, "--force")
    nbgrader(course, "release_assignment", aid, "--force")
    print(f"students' version: {course / 'release' / aid}; released to {course / 'exchange'}")


def collect(course: Path, aid: str, folder: Path | None) -> list[str]:
    """Put the handed-in notebooks into ``submitted/<student>/<aid>/``; return the student ids.

    ``folder`` holds ``<student>.ipynb`` files or ``<student>/<any>.ipynb`` folders (what a
    learning platform's download gives, renamed). Without it, nbgrader collects from its exchange.
    """
    if folder is None:
        nbgrader(course, "collect", aid, "--update")
        return sorted(p.parent.name for p in (course / "submitted").glob(f"*/{aid}"))
    if not folder.is_dir():
        raise ValueError(f"--from {folder}: not a folder of submitted notebooks")
    name = _notebook(course, aid)
    students = {}
    for path in sorted(folder.iterdir()):
        files = [path] if path.suffix == ".ipynb" else sorted(path.glob("*.ipynb")) if path.is_dir() else []
        if not files:
            continue
        student = path.stem if path.is_file() else path.name
        if not STUDENT_ID.match(student) or len(files) > 1 or student in students:
            raise ValueError(f"--from {folder}: {path.name}: expected <student>.ipynb or one notebook in "
                             "<student>/, student ids of letters, digits, '.', '_', '-'")
        students[student] = files[0]
    if not students:
        raise ValueError(f"--from {folder}: no <student>.ipynb and no <student>/*.ipynb in it")
    for student, src in students.items():
        dest = course / "submitted" / student / aid
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        shutil.copy2(src, dest / f"{name}.ipynb")
    print(f"collected {len(students)} submissions of {aid} into {course / 'submitted'}")
    return sorted(students)


def autograde(course: Path, aid: str, timeout: int | None) -> list[dict]:
    """Grade every submission of ``aid`` in one nbgrader run; nothing stops the batch.

    A file that is not a notebook is set aside (``.invalid``) and scored 0 before nbgrader
    starts; nbgrader grades the rest, going on past any student's failure. Writes
    ``reports/<aid>.csv`` (student_id, status, notes), nbgrader's log ``reports/<aid>-autograde.log``,
    and returns the rows.
    """
    name = _notebook(course, aid)
    released_path = course / "release" / aid / f"{name}.ipynb"
    if not released_path.exists():
        raise ValueError(f"assignment {aid!r}: not released yet; run `release {aid}` first")
    released = json.loads(released_path.read_text("utf-8"))
    students, bad = [], {}
    for folder in sorted((course / "submitted").glob(f"*/{aid}")):
        student, path = folder.parent.name, folder / f"{name}.ipynb"
        students.append(student)
        set_aside = path.with_name(path.name + ".invalid")
        why = (readable(path) if path.exists() else
               f"not a readable notebook (set aside as {set_aside.name})" if set_aside.exists() else
               "no notebook handed in")
        if why:
            bad[student] = why
            if path.exists():  # kept for the teacher; nbgrader scores a missing notebook 0
                path.replace(set_aside)
            nbgrader(course, "db", "student", "add", student, quiet=True)
    extra = [f"--Execute.timeout={int(timeout)}"] if timeout else []
    # no overall time limit: the per-cell timeout bounds every notebook (a kernel that ignores the
    # interrupt gets an error reply per cell and is shut down at the notebook's end)
    log = course / "reports" / f"{aid}-autograde.log"
    nbgrader(course, "autograde", aid, "--force", *extra, check=False, log=log)
    rows = []
    for student in students:
        graded_path = course / "autograded" / student / aid / f"{name}.ipynb"
        if student in bad:
            status, notes = "scored 0", [bad[student]]
        elif not graded_path.exists():
            why = failures(log.read_text("utf-8")).get(student, "nbgrader could not grade it")
            status, notes = "grading failed", [f"{why} (0 points; reports/{aid}-autograde.log)"]
        else:
            graded = json.loads(graded_path.read_text("utf-8"))
            cut = cap_outputs(graded)
            if cut:
                _write(graded_path, assignments.dumps(graded))
            handed_in = course / "submitted" / student / aid / f"{name}.ipynb"
            submitted = json.loads(handed_in.read_text("utf-8"))
            status, notes = "graded", what_happened(released, submitted, graded, cut)
        rows.append({"assignment": aid, "student_id": student, "status": status, "notes": "; ".join(notes)})
        print(f"  {student}: {status}{': ' + rows[-1]['notes'] if notes else ''}", flush=True)
    _write_report(course, aid, rows)
    return rows


def _write_report(course: Path, aid: str, rows: list[dict]) -> None:
    (course / "reports").mkdir(exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, ["assignment", "student_id", "status", "notes"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    _write(course / "reports" / f"{aid}.csv", buf.getvalue())


def export(course: Path) -> Path:
    """nbgrader's gradebook CSV with one more column, ``what_happened``, from the reports."""
    out = course / "gradebook.csv"
    nbgrader(course, "export", "--to", str(out))
    notes = {}
    for report in sorted((course / "reports").glob("*.csv")):
        with report.open(encoding="utf-8") as f:
            for row in csv.DictReader(f):
                notes[row["assignment"], row["student_id"]] = " | ".join(
                    x for x in (row["status"], row["notes"]) if x)
    with out.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    buf = io.StringIO()
    fields = list(rows[0]) + ["what_happened"] if rows else ["what_happened"]
    writer = csv.DictWriter(buf, fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        row["what_happened"] = notes.get((row["assignment"], row["student_id"]), "no submission")
        writer.writerow(row)
    _write(out, buf.getvalue())
    print(f"gradebook: {out}")
    return out


def feedback(course: Path, aid: str) -> None:
    nbgrader(course, "generate_feedback", aid, "--force")
    print(f"feedback pages: {course / 'feedback'}/<student>/{aid}/")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 dev.py classroom",
                                     description=__doc__.split("\n\nnbgrader")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=STEPS)
    parser.add_argument("assignments", nargs="*", help="assignment ids: ch01, ch06, ...")
    parser.add_argument("--course", type=Path, default=ROOT / "runs" / "classroom",
                        help="the course directory (default runs/classroom)")
    parser.add_argument("--from", dest="folder", type=Path, help="a folder of handed-in notebooks")
    parser.add_argument("--timeout", type=int, default=None, help="seconds per cell (default 30)")
    args = parser.parse_args(argv)
    if args.timeout is not None and args.timeout < 1:
        parser.error(f"--timeout {args.timeout}: seconds per cell, an integer >= 1")
    course = args.course.resolve()
    one = args.step not in ("setup", "generate", "export")
    if one and len(args.assignments) != 1:
        parser.error(f"{args.step} takes one assignment id (e.g. ch06), got {args.assignments or 'none'}")
    if args.step == "all" and args.folder is None:
        parser.error("all needs --from FOLDER (the handed-in notebooks)")
    if one and args.assignments == ["ch14"] and not course.is_relative_to(ROOT):
        parser.error(f"--course {course}: exercise 14.1's checker finds the repository from the working "
                     f"folder, so grade ch14 in a course inside {ROOT} (the default runs/classroom)")
    try:
        if args.step == "setup":  # every other step makes the environment when it first runs nbgrader
            ensure_env()
            print(f"nbgrader ready in {ENV}; kernel {KERNEL!r} runs {sys.executable}")
        if args.step in ("generate", "all"):
            generate(course, args.assignments, args.timeout or 30)
        elif not (course / "nbgrader_config.py").exists() and args.step != "setup":
            parser.error(f"--course {course}: no course there yet; run `generate` first")
        aid = args.assignments[0] if one else ""
        if one and args.step != "all" and not (course / "source" / aid).is_dir():
            known = sorted(p.name for p in (course / "source").glob("*") if p.is_dir())
            raise ValueError(f"assignment {aid!r}: not in {course / 'source'}; generated: "
                             f"{', '.join(known) or 'none'} (run `generate {aid}` first)")
        if args.step in ("release", "all"):
            release(course, aid)
        if args.step in ("collect", "all"):
            collect(course, aid, args.folder)
        if args.step in ("autograde", "all"):
            autograde(course, aid, args.timeout)
        if args.step in ("export", "all"):
            export(course)
        if args.step in ("feedback", "all"):
            feedback(course, aid)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as e:
        print(f"error: {' '.join(map(str, e.cmd[1:3]))} failed (exit {e.returncode})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

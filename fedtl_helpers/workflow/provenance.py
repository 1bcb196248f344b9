"""Where a committed result came from: command, commit, date, machine, seconds.

Chapter: "Experiments". Figures too slow for the book build are produced by a benchmark or an
experiment grid, committed as JSON, and shown by the chapters; this record travels with them so
that a reader can re-run exactly what produced a number.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def git_commit(root: str | os.PathLike = ROOT) -> str:
    """The checkout's commit, with ``+dirty`` if tracked files differ from it (or ``unknown``)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def process_start_time() -> float:
    """When this process started (seconds since the epoch), from ``/proc``; else now."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


# /proc gives a process's start in clock ticks after boot, and the boot time in whole seconds, so
# the start can read up to a second early; a run launched by ``git commit ... && python bench.py``
# starts in the commit's own second. Reflog entries this close count as before the run.
START_SLACK_S = 2


def head_at(when: float, root: str | os.PathLike = ROOT) -> str | None:
    """The commit HEAD pointed to at time ``when`` (seconds since the epoch), from the reflog:
    a run that lasts an hour was made with the code checked out when it *started*, whatever was
    committed while it ran (a commit up to ``START_SLACK_S`` after ``when`` counts as before it).
    ``None`` when the reflog says nothing about that time."""
    try:
        log = subprocess.run(["git", "log", "-g", "--format=%H %gd", "--date=unix", "HEAD"], cwd=root,
                             capture_output=True, text=True, check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return None
    for line in log:  # newest first: "sha HEAD@{1796570000}"
        sha, _, stamp = line.partition(" ")
        if stamp.startswith("HEAD@{") and int(stamp[6:-1]) <= when + START_SLACK_S:
            return sha
    return None


def dirty_at(commit: str, when: float, root: str | os.PathLike = ROOT) -> bool:
    """Whether the checkout differed from ``commit`` at time ``when``: some tracked file differs
    from it now and was last written before ``when`` (or is gone, when it cannot be told). Files
    edited or committed while a run went on do not make the run's own code dirty."""
    try:
        names = subprocess.run(["git", "diff", "--name-only", commit], cwd=root, capture_output=True,
                               text=True, check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return True
    for name in filter(None, names):
        path = Path(root) / name
        if not path.exists() or path.stat().st_mtime <= when + START_SLACK_S:
            return True
    return False


def portable_arg(arg: str, root: str | os.PathLike = ROOT) -> str:
    """``arg`` as anyone can re-run it from the repository root: an absolute path inside the
    checkout becomes relative to it, one outside keeps only its name (``<outside>/name``), so no
    record carries the folders of the machine that made it. ``--opt=/path`` is handled too."""
    if arg.startswith("--") and "=" in arg:
        opt, value = arg.split("=", 1)
        return f"{opt}={portable_arg(value, root)}"
    if not os.path.isabs(arg):
        return arg
    path, root = Path(arg).resolve(), Path(root).resolve()
    if path == root or root in path.parents:
        return path.relative_to(root).as_posix() or "."
    return f"<outside>/{path.name}"


def cpu_model() -> str:
    """The processor's model name (which math kernels oneDNN picks depends on it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def provenance(argv: list[str], seconds: float) -> dict[str, object]:
    """A record of how a result was produced, to store beside it.

    ``commit`` is the one checked out when the process started, with ``+dirty`` if tracked files
    already differed from it then (the code the run loaded); if HEAD moved while it ran,
    ``commit_at_end`` says where to.
    """
    now = git_commit()
    began = process_start_time()
    start = head_at(began)
    moved = {} if start is None or now.startswith(start) else {"commit_at_end": now}
    return {
        "command": " ".join(["python", *(portable_arg(a) for a in argv)]),
        "commit": now if start is None else start + ("+dirty" if dirty_at(start, began) else ""),
        **moved,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}",
        "cpu": cpu_model(),
        # oneDNN's kernels (the default) or TensorFlow's own: seeded runs differ between the two
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
        "python": sys.version.split()[0],
        "seconds": seconds,
    }

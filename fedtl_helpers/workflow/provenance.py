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
    """A record of how a result was produced, to store beside it."""
    return {
        "command": " ".join(["python", *(portable_arg(a) for a in argv)]),
        "commit": git_commit(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}",
        "cpu": cpu_model(),
        # oneDNN's kernels (the default) or TensorFlow's own: seeded runs differ between the two
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
        "python": sys.version.split()[0],
        "seconds": seconds,
    }

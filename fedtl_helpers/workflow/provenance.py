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


def provenance(argv: list[str], seconds: float) -> dict[str, object]:
    """A record of how a result was produced, to store beside it."""
    return {
        "command": " ".join(["python", *argv]),
        "commit": git_commit(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}",
        "python": sys.version.split()[0],
        "seconds": seconds,
    }

#!/usr/bin/env python3
"""The project's tasks, needing nothing but Python 3.11+ (the README's commands).

    python3 dev.py main     # the main job on the embedded default (offline)
    python3 dev.py test     # the whole test suite (extra arguments go to pytest)

Each task first creates or updates the virtual environment ``.venv`` from the pinned
``requirements.txt`` / ``requirements-lock.txt`` (only when they changed since last time).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
PINS = ("requirements.txt", "requirements-lock.txt", "pyproject.toml")


def sh(*cmd: str | os.PathLike) -> None:
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run([str(c) for c in cmd], cwd=ROOT, check=True)


def ensure_venv() -> None:
    """Create ``.venv`` if needed and install the pinned set when the pins changed."""
    if sys.version_info < (3, 11):  # noqa: UP036 (dev.py runs on whatever python3 is there)
        sys.exit(f"fedtl needs Python 3.11 or newer, this is {sys.version.split()[0]}")
    if not PY.exists():
        sh(sys.executable, "-m", "venv", VENV)
    digest = hashlib.sha256(b"".join((ROOT / p).read_bytes() for p in PINS)).hexdigest()
    stamp = VENV / ".fedtl-installed"
    if stamp.exists() and stamp.read_text() == digest:
        return
    sh(PY, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    sh(PY, "-m", "pip", "install", "--quiet", "-r", "requirements.txt",
       "-c", "requirements-lock.txt")
    sh(PY, "-m", "pip", "install", "--quiet", "--no-deps", "-e", ".")
    stamp.write_text(digest)


def main_job(args: list[str]) -> None:
    """A federated transfer-learning run on the embedded default (the book build, later)."""
    sh(PY, "-m", "fedtl_helpers", "run", "--out", "runs/default", *args)


def test(args: list[str]) -> None:
    sh(PY, "-m", "pytest", *args)


TASKS = {"main": main_job, "test": test}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in TASKS:
        sys.exit(f"usage: python3 dev.py {{{','.join(TASKS)}}} [args...]")
    ensure_venv()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ banner out of logs
    try:
        TASKS[sys.argv[1]](sys.argv[2:])
    except subprocess.CalledProcessError as e:
        sys.exit(e.returncode)

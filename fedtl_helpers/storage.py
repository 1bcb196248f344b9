"""Atomic writes and round checkpoints.

Chapter: "Running experiments". A result file either holds a finished result or does not
exist: everything is written to a temporary file in the same directory and moved into place
with ``os.replace`` (atomic on POSIX and Windows), so an interrupted run never leaves a
half-written file that looks finished.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .aggregation import Weights

CHECKPOINT_NAME = "checkpoint.npz"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results should be readable like any file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_checkpoint(directory: str | os.PathLike, weights: Weights, state: dict[str, Any],
                    arrays: dict[str, np.ndarray] | None = None) -> Path:
    """Save global weights, JSON-able run state and named state arrays in one file.

    One file, so weights and the round they belong to can never disagree after a crash.
    ``arrays`` holds what the round's parts remember besides the weights (error-feedback
    residuals, server momentum); ``load_checkpoint`` returns them as ``state["arrays"]``.
    """
    buf = io.BytesIO()
    tensors = {f"w{i:04d}": np.asarray(w) for i, w in enumerate(weights)}
    tensors.update({f"a:{name}": np.asarray(a) for name, a in (arrays or {}).items()})
    np.savez(buf, state=np.array(json.dumps(state)), **tensors)
    path = Path(directory) / CHECKPOINT_NAME
    atomic_write_bytes(path, buf.getvalue())
    return path


def load_checkpoint(directory: str | os.PathLike) -> tuple[Weights, dict[str, Any]] | None:
    """Return ``(weights, state)`` from ``directory``, or ``None`` when there is none.

    ``state["arrays"]`` holds the named arrays passed to ``save_checkpoint`` (maybe empty).
    """
    path = Path(directory) / CHECKPOINT_NAME
    if not path.is_file():
        return None
    with np.load(path) as f:
        names = sorted(k for k in f.files if k.startswith("w"))
        weights = [f[k] for k in names]
        state = json.loads(str(f["state"]))
        state["arrays"] = {k[2:]: f[k] for k in f.files if k.startswith("a:")}
    return weights, state

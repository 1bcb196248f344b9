"""Checks a run passes before any data is loaded or model built.

Chapter: "Running experiments". A mistake should cost milliseconds, not a round of training:
the output folder, a resume, the weights file and the data are checked first, and every
problem is a ``UserError`` (a ``ValueError``) naming the option and what is allowed. Only
``check_model`` needs TensorFlow; everything else here is plain file checks.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from ..core.config import ExperimentConfig
from ..core.storage import UserError, check_resume, held_run_files, read_checkpoint_state

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"  # the first 8 bytes of every HDF5 file (.weights.h5)
OFFICIAL = "official"
SKIP = "skip"


def parse_sha256(text: str) -> str | None:
    """``--data-sha256``: ``"official"`` (the real archive's hash), ``"skip"`` (``None``: no
    check) or 64 hex digits (a test-sized archive in the official format).

    Raises
    ------
    UserError
        Anything else, naming the option and the allowed values.
    """
    from ..inputs.data import CIFAR10_SHA256

    value = text.strip().lower()
    if value == OFFICIAL:
        return CIFAR10_SHA256
    if value == SKIP:
        return None
    if len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value
    raise UserError(f"--data-sha256={text!r} is invalid: allowed 'official', 'skip' or a "
                    "SHA-256 of 64 hex digits")


def check_existing_run(out: str | os.PathLike, config: ExperimentConfig, *, resume: bool,
                       overwrite: bool) -> dict[str, Any] | None:
    """What ``out`` already holds, against what was asked; the checkpoint's state when resuming.

    A folder holding a run is refused unless ``resume`` (then the checkpoint must have been
    written by the same config, ``rounds`` >= the rounds done) or ``overwrite``.

    Raises
    ------
    UserError
        Both ``resume`` and ``overwrite``; a run in ``out`` with neither; an incompatible resume.
    """
    if resume and overwrite:
        raise UserError("--resume and --overwrite exclude each other: allowed one of them")
    held = held_run_files(out)
    if not held or overwrite:
        return None
    if not resume:
        raise UserError(f"--out={str(out)!r} already holds a run ({', '.join(held)}): allowed "
                        "--resume to continue it, --overwrite to replace it, or another --out")
    state = read_checkpoint_state(out)
    if state is None:
        raise UserError(f"--out={str(out)!r} holds {', '.join(held)} but no checkpoint to resume "
                        "from: allowed --overwrite to start again, or another --out")
    check_resume(state["config"], config.to_dict(), state["round"], config.rounds)
    return state


def check_weights_file(config: ExperimentConfig) -> None:
    """A weights path exists, is a file and is HDF5 (reading 8 bytes: no TensorFlow needed).

    Whether it fits the backbone is ``check_model``'s job.
    """
    w = config.weights
    if w is None or w in ("builtin", "imagenet"):
        return
    path = Path(w)
    if not path.is_file():
        raise UserError(f"--weights={w!r}: no such file (allowed 'builtin', 'imagenet', none or "
                        "an existing .weights.h5 file)")
    try:
        with open(path, "rb") as f:
            head = f.read(len(HDF5_SIGNATURE))
    except OSError as e:
        raise UserError(f"--weights={w!r} cannot be read ({e.strerror})") from e
    if head != HDF5_SIGNATURE:
        raise UserError(f"--weights={w!r} is not an HDF5 file (saved with model.save_weights): "
                        "allowed a .weights.h5 file saved from the same backbone")


def check_data(config: ExperimentConfig, *, sha256: str | None, download: bool) -> None:
    """CIFAR-10 is there (or may be downloaded) and its archive has the expected checksum.

    Raises
    ------
    UserError
        Not found without ``download`` (the message lists where it looked and the options),
        or a checksum mismatch.
    """
    if config.dataset != "cifar10":
        return
    from ..inputs import data

    found = data.find_cifar10(config.data_dir)
    if found is None:
        if download:
            return
        looked = ", ".join(str(p) for p in data.search_places(config.data_dir))
        raise UserError(f"--dataset=cifar10: {data.ARCHIVE} (or the extracted {data.FOLDER}/) not "
                        f"found in {looked}; allowed: put it in --data-dir or $FEDTL_DATA_DIR, or "
                        f"pass --download to fetch and verify it ({data.CIFAR10_URL})")
    kind, path = found
    if kind != "archive" or sha256 is None:
        return
    with open(path, "rb") as f:
        actual = hashlib.file_digest(f, "sha256").hexdigest()
    if actual != sha256:
        official = "the official archive's" if sha256 == data.CIFAR10_SHA256 else "the given"
        raise UserError(f"--data-sha256: {path} has SHA-256 {actual}, not {official} {sha256}; "
                        "allowed: replace the damaged file, or for a test-sized archive in the "
                        "official format pass --data-sha256 skip or its own SHA-256")


def check_model(config: ExperimentConfig) -> None:
    """The initial weights load into the backbone (imports TensorFlow, loads no data).

    Raises
    ------
    UserError
        A weights file that does not fit, or ImageNet weights neither cached nor downloadable.
    """
    from ..modeling import models

    try:
        models.check_weights(config.backbone, config.weights, config.input_size)
    except (OSError, ValueError) as e:
        raise UserError(f"--weights={config.weights!r}: {e}") from e

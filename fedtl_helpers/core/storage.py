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
import socket
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .config import comparable

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


PRIVATE_DIR = "private"  # a DP run's server state: not part of what the run releases
PRIVATE_NOTE = """This folder is the server's private state of a differentially private run:
the checkpoint holds the ids of every client ever sampled and the server's per-client state
(error-feedback residuals, a personalised runner's client tensors). The accountant's epsilon does
not cover any of it. Keep it on the server to resume the run; do not publish or share it.
What the run releases is beside this folder: history.json, history.csv (chapter 11).
"""


def checkpoint_path(directory: str | os.PathLike) -> Path:
    """Where the checkpoint of ``directory`` is: ``private/checkpoint.npz`` for a DP run (see
    ``save_checkpoint``), else ``checkpoint.npz``; the latter when neither exists yet."""
    private = Path(directory) / PRIVATE_DIR / CHECKPOINT_NAME
    return private if private.is_file() else Path(directory) / CHECKPOINT_NAME


def save_checkpoint(directory: str | os.PathLike, weights: list[np.ndarray], state: dict[str, Any],
                    arrays: dict[str, np.ndarray] | None = None, *, private: bool = False) -> Path:
    """Save global weights, JSON-able run state and named state arrays in one file.

    One file, so weights and the round they belong to can never disagree after a crash.
    ``arrays`` holds what the round's parts remember besides the weights (error-feedback
    residuals, server momentum); ``load_checkpoint`` returns them as ``state["arrays"]``.
    ``private=True`` (a DP run) writes it to ``private/``, apart from what the run releases, with
    a note saying what it holds (``PRIVATE_NOTE``).
    """
    buf = io.BytesIO()
    tensors = {f"w{i:04d}": np.asarray(w) for i, w in enumerate(weights)}
    tensors.update({f"a:{name}": np.asarray(a) for name, a in (arrays or {}).items()})
    np.savez(buf, state=np.array(json.dumps(state)), **tensors)
    folder = Path(directory)
    if private:
        folder = folder / PRIVATE_DIR
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / "README.txt").exists():
            atomic_write_text(folder / "README.txt", PRIVATE_NOTE)
    path = folder / CHECKPOINT_NAME
    atomic_write_bytes(path, buf.getvalue())
    return path


def load_checkpoint(directory: str | os.PathLike) -> tuple[list[np.ndarray], dict[str, Any]] | None:
    """Return ``(weights, state)`` from ``directory``, or ``None`` when there is none.

    ``state["arrays"]`` holds the named arrays passed to ``save_checkpoint`` (maybe empty).
    """
    path = checkpoint_path(directory)
    if not path.is_file():
        return None
    with np.load(path) as f:
        names = sorted(k for k in f.files if k.startswith("w"))
        weights = [f[k] for k in names]
        state = json.loads(str(f["state"]))
        state["arrays"] = {k[2:]: f[k] for k in f.files if k.startswith("a:")}
    return weights, state


# ------------------------------------------------------------------ what a folder already holds
RUN_FILES = (CHECKPOINT_NAME, f"{PRIVATE_DIR}/{CHECKPOINT_NAME}", f"{PRIVATE_DIR}/README.txt",
             "history.json", "history.csv")  # what ``run_federated`` writes
LOCK_NAME = ".fedtl.lock"


class UserError(ValueError):
    """A mistake in what the user asked for; the command line prints it as one line, exit 2."""


class LockedError(UserError):
    """Another live process (a run or a grid runner) works in the same folder."""


class NonFiniteError(RuntimeError):
    """Training diverged: the loss or the weights of a round are NaN or infinite.

    ``round`` is the round that diverged; the checkpoint (if any) still holds the round before.
    """

    def __init__(self, message: str, round_: int):
        super().__init__(message)
        self.round = round_


def is_interrupt(error: BaseException) -> bool:
    """True for Ctrl-C (or ``kill``) in whatever form it reached us.

    A signal that lands while TensorFlow or NumPy is inside C code can surface as another error
    whose cause is the ``KeyboardInterrupt`` (e.g. ``SystemError: <built-in method __array__ ...>
    returned a result with an exception set``); that is a stop, not a failure.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def check_finite(weights: list[np.ndarray], loss: float, round_: int) -> None:
    """Raise ``NonFiniteError`` if ``loss`` or any weight of round ``round_`` is NaN or infinite.

    Called before the round's checkpoint is written, so the last good checkpoint survives.
    """
    bad = [i for i, w in enumerate(weights) if not np.all(np.isfinite(w))]
    if bad or not np.isfinite(loss):
        what = f"{len(bad)} of {len(weights)} weight tensors" if bad else f"the test loss ({loss})"
        raise NonFiniteError(
            f"training diverged in round {round_}: {what} became NaN or infinite; the run stopped "
            f"without saving round {round_}. Lower learning_rate or server_lr (or clip the updates).",
            round_)


def read_checkpoint_state(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The JSON state of the checkpoint in ``directory`` (config, round, history), without weights.

    ``None`` when there is none. Cheap (``np.load`` reads only the ``state`` member), so the
    command line checks a resume before any data is loaded.

    Raises
    ------
    UserError
        The file exists but is not a checkpoint written here (damaged, truncated).
    """
    path = checkpoint_path(directory)
    if not path.is_file():
        return None
    try:
        with np.load(path) as f:
            return json.loads(str(f["state"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e}); move it "
                        "away, or start again with --overwrite") from e


def check_resume(saved_config: dict[str, Any], config: dict[str, Any], rounds_done: int,
                 rounds: int) -> None:
    """Refuse a resume that would not continue the saved run.

    Only ``rounds`` may differ, and only upwards (or equal): more rounds extend a finished run.
    Both dicts are compared through ``config.comparable`` (``error_feedback`` as it runs), so a
    checkpoint saved before ``error_feedback=None`` became the default still resumes.

    Raises
    ------
    UserError
        Naming every differing field with its saved and requested value, or ``rounds`` below
        the rounds already done.
    """
    # error_feedback spelt None or True (older checkpoints) compares as what runs
    saved_config, config = comparable(saved_config), comparable(config)
    diff = [f"{k}: saved {saved_config.get(k, '(absent)')!r}, now {config.get(k, '(absent)')!r}"
            for k in sorted(set(saved_config) | set(config))
            if k != "rounds" and saved_config.get(k) != config.get(k)]
    if diff:
        raise UserError("cannot resume: the checkpoint was written by a different config ("
                        + "; ".join(diff) + "). Use the saved values, another output folder, or "
                        "--overwrite to start again.")
    if rounds < rounds_done:
        raise UserError(f"rounds={rounds} is invalid for a resume: the checkpoint already holds "
                        f"{rounds_done} rounds; allowed rounds >= {rounds_done}.")


def note_resume(meta: dict[str, Any], config: dict[str, Any], rounds_done: int) -> None:
    """Bring a resumed history's ``meta`` up to date: the config now running (its ``rounds``
    may be larger) and the round each resume started from."""
    meta["config"] = config
    meta["resumed_after_rounds"] = [*meta.get("resumed_after_rounds", []), rounds_done]


def held_run_files(directory: str | os.PathLike) -> list[str]:
    """The files of a federated run already in ``directory`` (empty if none)."""
    return [name for name in RUN_FILES if (Path(directory) / name).exists()]


def check_output_dir(directory: str | os.PathLike, option: str = "--out") -> Path:
    """Make sure ``directory`` is, or can become, a writable folder; return it.

    Nothing is created here: ``FolderLock`` creates the folder when the run takes it, and
    removes it again if the run leaves it empty, so a check that fails later (a missing
    weights file, a refused resume) leaves no empty folder behind.

    Raises
    ------
    UserError
        A path that is a file, lies under a file, or is not writable; the message names
        ``option`` and the path.
    """
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise UserError(f"{option}={str(directory)!r} is a file: allowed a folder (new or existing)")
    parent = path
    while not parent.exists():  # the nearest existing ancestor decides whether mkdir can work
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{option}={str(directory)!r} lies under the file {str(parent)!r}: allowed "
                        "a folder path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{option}={str(directory)!r} is not writable ({str(parent)!r} denies "
                        "writing): allowed a folder you can write to")
    return path


def _lock_owner_alive(owner: dict[str, Any]) -> bool:
    """Whether the process that wrote a lock still runs (pids are reused: compare start times)."""
    if owner.get("hostname") != socket.gethostname():
        return True  # another machine's process (shared disk): we cannot tell, so assume it lives
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        import psutil

        started = psutil.Process(pid).create_time()
    except ImportError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    except psutil.NoSuchProcess:
        return False
    # A different process reusing the pid started after the lock was written.
    return not (isinstance(owner.get("started"), float) and started > owner["started"] + 1)


# An unreadable lock file younger than this may be one being written by a process that
# created it without ``os.link`` (a file system without hard links): it counts as held.
FRESH_LOCK_SECONDS = 10.0


class FolderLock:
    """An exclusive lock on a folder, held by this process: ``with FolderLock(path, what): ...``.

    The lock file (``.fedtl.lock``) records pid, hostname, start time and what runs, so a
    second run or grid runner on the same folder is refused with a message saying who holds
    it. The record is written to a temporary file first and then hard-linked to the lock's
    name, which fails if the name exists: the lock file is never seen empty or half-written.
    A lock whose process is dead (killed, crashed, machine rebooted) is stale: it is taken
    over and ``notify`` says so; so is an unreadable lock file older than
    ``FRESH_LOCK_SECONDS`` (a younger one counts as held).

    The folder is created on entering if it does not exist, and removed on exit (with the
    parents created for it) if nothing was written into it, so a run refused by a check made
    under the lock leaves no empty folder behind.

    Raises
    ------
    LockedError
        On entering, when a live process holds the folder.
    """

    def __init__(self, directory: str | os.PathLike, what: str, notify=None, option: str = "--out"):
        self.path = Path(directory) / LOCK_NAME
        self.what, self.option = what, option  # option: how the user named the folder, for errors
        self.notify = notify or (lambda message: print(message, file=sys.stderr))
        self._held = False
        self._created: list[Path] = []  # folders made for this lock, deepest first

    def __enter__(self) -> FolderLock:
        self._make_folder()
        me = {"pid": os.getpid(), "hostname": socket.gethostname(), "what": self.what,
              "started": _process_start_time()}
        try:
            for _ in range(3):
                try:
                    self._create(me)
                except FileExistsError:
                    self._judge_and_remove_stale()
                    continue
                self._held = True
                return self
            raise LockedError(f"could not take the lock {self.path}: another process keeps taking it")
        except BaseException:
            self._remove_created_folders()
            raise

    def _make_folder(self) -> None:
        folder, missing = self.path.parent, []
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for made in reversed(missing):
            try:
                made.mkdir()
            except FileExistsError:  # another process made it at the same moment: not ours
                continue
            except OSError as e:
                self._remove_created_folders()
                raise UserError(f"{self.option}={str(self.path.parent)!r} cannot be created ({made}: "
                                f"{e.strerror}): allowed a folder you can write to") from e
            self._created.insert(0, made)

    def _create(self, me: dict[str, Any]) -> None:
        """Write the lock file complete, then link it into place (``FileExistsError`` if held)."""
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f"{LOCK_NAME}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            os.chmod(tmp, 0o644)
            try:
                os.link(tmp, self.path)  # atomic, and fails if the name exists
            except FileExistsError:
                raise
            except OSError:  # no hard links here: O_EXCL, and a fresh empty file counts as held
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                with os.fdopen(fd, "w") as f:
                    json.dump(me, f)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def _judge_and_remove_stale(self) -> None:
        """The lock file exists: raise ``LockedError`` if it is held, else remove it."""
        try:
            seen = os.stat(self.path)
        except FileNotFoundError:
            return  # released meanwhile: try again
        owner = self._read_owner()
        if owner is None:
            age = time.time() - seen.st_mtime
            if age < FRESH_LOCK_SECONDS:
                raise LockedError(
                    f"{self.path.parent} is being locked by another process ({self.path} was "
                    f"written {max(age, 0):.1f} s ago and is not complete yet); wait for it to end "
                    f"or use another output folder. If no process uses it, delete {self.path}.")
        elif _lock_owner_alive(owner):
            raise LockedError(
                f"{self.path.parent} is in use by pid {owner.get('pid')} on "
                f"{owner.get('hostname')} ({owner.get('what', '?')}); wait for it to end or "
                f"use another output folder. If that process is gone, delete {self.path}.")
        what = ("is no longer running" if owner is not None
                else f"left an unreadable lock file {time.time() - seen.st_mtime:.0f} s old")
        self.notify(f"note: taking over a stale lock in {self.path.parent} (pid "
                    f"{(owner or {}).get('pid', '?')} on {(owner or {}).get('hostname', '?')} {what})")
        # Move the stale file aside rather than unlink it by name: if another process took the
        # lock between our look and now, the file moved is its live one, and goes back.
        aside = self.path.with_name(f"{LOCK_NAME}.stale.{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        try:
            moved = os.stat(aside)
            if (moved.st_ino, moved.st_size, moved.st_mtime_ns) != (
                    seen.st_ino, seen.st_size, seen.st_mtime_ns):  # inode numbers are reused
                try:
                    os.link(aside, self.path)
                except FileExistsError:
                    pass
        finally:
            aside.unlink(missing_ok=True)

    def _read_owner(self) -> dict[str, Any] | None:
        try:
            owner = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # damaged, or being written without os.link: judged by its age
        return owner if isinstance(owner, dict) else None

    def _remove_created_folders(self) -> None:
        for folder in self._created:  # deepest first; rmdir refuses a folder that holds anything
            try:
                folder.rmdir()
            except OSError:
                break
        self._created = []

    def __exit__(self, *exc: object) -> None:
        if self._held:
            self.path.unlink(missing_ok=True)
            self._held = False
        self._remove_created_folders()


def _process_start_time() -> float | None:
    try:
        import psutil

        return psutil.Process().create_time()
    except ImportError:
        return None

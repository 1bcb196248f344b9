import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fedtl_helpers.core import storage
from fedtl_helpers.core.history import History


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    p = tmp_path / "sub" / "out.json"
    storage.atomic_write_text(p, "one")
    storage.atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert [f.name for f in p.parent.iterdir()] == ["out.json"]
    assert p.stat().st_mode & 0o044  # readable by others, not mkstemp's 0600


def test_interrupted_write_keeps_old_file(tmp_path, monkeypatch):
    p = tmp_path / "out.txt"
    storage.atomic_write_text(p, "old")

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(storage.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        storage.atomic_write_text(p, "new")
    assert p.read_text() == "old"
    assert [f.name for f in tmp_path.iterdir()] == ["out.txt"]


def test_checkpoint_roundtrip(tmp_path):
    w = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1.5])]
    residual = np.array([[0.25, -1.0]], np.float32)
    storage.save_checkpoint(tmp_path, w, {"round": 3, "seen": [0, 2]}, arrays={"uplink/4/0": residual})
    loaded, state = storage.load_checkpoint(tmp_path)
    arrays = state.pop("arrays")
    assert state == {"round": 3, "seen": [0, 2]}
    assert list(arrays) == ["uplink/4/0"]
    np.testing.assert_array_equal(arrays["uplink/4/0"], residual)
    for a, b in zip(w, loaded):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    assert storage.load_checkpoint(tmp_path / "nothing") is None


def test_history_save_load_and_table(tmp_path):
    h = History(meta={"describe": "data: shapes; weights: builtin"})
    h.append(round=0, test_accuracy=0.1, test_loss=2.3, train_loss=None, clients=[],
             bytes_up=0, bytes_down=0, seconds=0.0)
    h.append(round=1, test_accuracy=0.5, test_loss=1.2, train_loss=1.5, clients=[0, 2],
             bytes_up=2_000_000, bytes_down=4_000_000, seconds=1.25)
    h.save(tmp_path)
    again = History.load(tmp_path / "history.json")
    assert again.rows == h.rows and again.meta == h.meta
    assert json.loads((tmp_path / "history.json").read_text())["rows"][1]["clients"] == [0, 2]
    csv_lines = (tmp_path / "history.csv").read_text().splitlines()
    assert csv_lines[0].startswith("round,test_accuracy") and csv_lines[2].split(",")[4] == "0 2"
    table = h.table()
    assert "weights: builtin" in table and "2.000" in table
    assert h.rounds_to_reach(0.4) == 1 and h.rounds_to_reach(0.9) is None
    with pytest.raises(ValueError, match="lacks"):
        h.append(round=2)


def test_history_csv_keeps_extra_columns():
    h = History()
    h.append(round=0, test_accuracy=0.1, test_loss=2.3, train_loss=None, clients=[], bytes_up=0,
             bytes_down=0, seconds=0.0)
    h.append(round=1, test_accuracy=0.5, test_loss=1.2, train_loss=1.5, clients=[0, 1], bytes_up=10,
             bytes_down=20, seconds=1.0, epsilon=0.75)
    header, row0, row1 = h.to_csv_text().strip().splitlines()
    assert header.split(",")[-1] == "epsilon"
    assert row0.endswith(",") and row1.endswith(",0.75")


def test_bytes_to_reach_sums_until_the_target_round():
    h = History()
    for rnd, acc in enumerate([0.1, 0.5, 0.8, 0.9]):
        h.append(round=rnd, test_accuracy=acc, test_loss=1.0, train_loss=None, clients=[],
                 bytes_up=10 * rnd, bytes_down=100 * rnd, seconds=0.0)
    assert h.bytes_to_reach(0.75) == (10 + 20) + (100 + 200)
    assert h.bytes_to_reach(0.75, "up") == 30
    assert h.bytes_to_reach(0.95) is None
    with pytest.raises(ValueError, match="direction='sideways' is invalid"):
        h.bytes_to_reach(0.5, "sideways")


def test_tail_accuracy_averages_the_last_training_rounds():
    h = History()
    for rnd, acc in enumerate([0.9, 0.2, 0.6, 0.4, 0.8]):
        h.append(round=rnd, test_accuracy=acc, test_loss=1.0, train_loss=None, clients=[],
                 bytes_up=0, bytes_down=0, seconds=0.0)
    assert h.tail_accuracy(1) == pytest.approx(0.8)
    assert h.tail_accuracy(3) == pytest.approx((0.6 + 0.4 + 0.8) / 3)
    assert h.tail_accuracy(4) == pytest.approx(0.5)  # round 0 (0.9) never counts
    for bad in (0, 5, 2.0, True):
        with pytest.raises(ValueError, match=r"last=.* is invalid: allowed an int from 1 to the 4"):
            h.tail_accuracy(bad)


# --- run folders: resume checks, divergence, locks -------------------------------------------

def test_check_resume_names_each_differing_field_and_refuses_fewer_rounds():
    saved = {"rounds": 3, "seed": 0, "batch_size": 32, "dataset": "shapes"}
    storage.check_resume(saved, {**saved, "rounds": 5}, rounds_done=3, rounds=5)  # extending: fine
    storage.check_resume(saved, saved, rounds_done=3, rounds=3)  # nothing left to do: fine
    with pytest.raises(storage.UserError) as e:
        storage.check_resume(saved, {**saved, "seed": 1, "batch_size": 8}, rounds_done=3, rounds=3)
    assert "batch_size: saved 32, now 8; seed: saved 0, now 1" in str(e.value)
    assert "rounds" not in str(e.value).split("(")[1].split(")")[0]  # rounds may differ
    with pytest.raises(storage.UserError, match=r"rounds=2 is invalid.*holds 3 rounds.*rounds >= 3"):
        storage.check_resume(saved, {**saved, "rounds": 2}, rounds_done=3, rounds=2)


def test_note_resume_updates_the_config_and_records_each_resume():
    meta = {"config": {"rounds": 3}, "dataset": "shapes"}
    storage.note_resume(meta, {"rounds": 5}, 3)
    storage.note_resume(meta, {"rounds": 8}, 5)
    assert meta == {"config": {"rounds": 8}, "dataset": "shapes", "resumed_after_rounds": [3, 5]}


@pytest.mark.parametrize("weights, loss, what", [
    ([np.ones(2), np.array([1.0, np.nan])], 0.5, "1 of 2 weight tensors"),
    ([np.array([np.inf])], 0.5, "1 of 1 weight tensors"),
    ([np.ones(2)], float("nan"), "the test loss (nan)"),
    ([np.ones(2)], float("inf"), "the test loss (inf)"),
])
def test_check_finite_names_the_round_and_what_diverged(weights, loss, what):
    with pytest.raises(storage.NonFiniteError) as e:
        storage.check_finite(weights, loss, 4)
    assert e.value.round == 4 and what in str(e.value) and "without saving round 4" in str(e.value)
    storage.check_finite([np.ones(2, np.float32)], 0.5, 4)  # finite: no error


def test_read_checkpoint_state_reads_the_round_and_refuses_a_damaged_file(tmp_path):
    assert storage.read_checkpoint_state(tmp_path) is None
    storage.save_checkpoint(tmp_path, [np.ones(3)], {"round": 7, "config": {}})
    assert storage.read_checkpoint_state(tmp_path)["round"] == 7
    (tmp_path / storage.CHECKPOINT_NAME).write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(storage.UserError, match="not a readable checkpoint"):
        storage.read_checkpoint_state(tmp_path)


def test_check_output_dir_refuses_files_and_paths_under_files(tmp_path):
    assert storage.check_output_dir(tmp_path / "new" / "deep") == tmp_path / "new" / "deep"
    assert not (tmp_path / "new").exists()  # checked, not created: FolderLock creates it
    (tmp_path / "f").write_text("x")
    with pytest.raises(storage.UserError, match=r"--out=.*is a file"):
        storage.check_output_dir(tmp_path / "f")
    with pytest.raises(storage.UserError, match=r"--grid-out=.*lies under the file"):
        storage.check_output_dir(tmp_path / "f" / "sub", option="--grid-out")


def test_second_lock_is_refused_and_released_on_exit(tmp_path):
    with storage.FolderLock(tmp_path, "first run"):
        owner = json.loads((tmp_path / storage.LOCK_NAME).read_text())
        assert owner["pid"] == os.getpid() and owner["what"] == "first run"
        with pytest.raises(storage.LockedError, match=rf"in use by pid {os.getpid()} .*first run"):
            with storage.FolderLock(tmp_path, "second run"):
                pass
    assert not (tmp_path / storage.LOCK_NAME).exists()
    with storage.FolderLock(tmp_path, "third run"):  # free again
        pass


def test_stale_lock_of_a_dead_process_is_taken_over_with_a_message(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / storage.LOCK_NAME).write_text(json.dumps(
        {"pid": dead.pid, "hostname": socket.gethostname(), "what": "killed run"}))
    notes = []
    with storage.FolderLock(tmp_path, "new run", notify=notes.append):
        assert json.loads((tmp_path / storage.LOCK_NAME).read_text())["pid"] == os.getpid()
    assert len(notes) == 1 and f"pid {dead.pid}" in notes[0] and "stale" in notes[0]
    # A live pid whose process started after the lock was written is a reused pid: stale too.
    (tmp_path / storage.LOCK_NAME).write_text(json.dumps(
        {"pid": os.getpid(), "hostname": socket.gethostname(), "started": 1.0}))
    with storage.FolderLock(tmp_path, "new run", notify=notes.append):
        pass
    assert len(notes) == 2


def test_lock_creates_the_folder_and_removes_it_only_if_left_empty(tmp_path):
    out = tmp_path / "a" / "b"
    with storage.FolderLock(out, "refused run"):
        assert out.is_dir()
    assert not (tmp_path / "a").exists()  # nothing was written: both created folders removed
    with storage.FolderLock(out, "real run"):
        (out / "history.json").write_text("{}")
    assert (out / "history.json").exists() and not (out / storage.LOCK_NAME).exists()
    with storage.FolderLock(tmp_path / "a" / "c", "refused run"):
        pass
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b"]  # "a" was not made for it
    (tmp_path / "empty").mkdir()
    with storage.FolderLock(tmp_path / "empty", "refused run"):
        pass
    assert (tmp_path / "empty").is_dir()  # existed before: kept


def test_lock_file_is_complete_from_the_moment_it_exists(tmp_path, monkeypatch):
    """Taken by ``os.link`` of a written temporary file: never seen empty by another process."""
    seen = []
    real_link = os.link

    def spy_link(src, dst):
        seen.append(json.loads(Path(src).read_text()))  # complete before it gets the lock's name
        return real_link(src, dst)

    monkeypatch.setattr(os, "link", spy_link)
    with storage.FolderLock(tmp_path, "run"):
        assert seen and seen[0]["pid"] == os.getpid()
        assert json.loads((tmp_path / storage.LOCK_NAME).read_text()) == seen[0]
        assert [p.name for p in tmp_path.iterdir()] == [storage.LOCK_NAME]  # no temporary left


@pytest.mark.parametrize("content", ["", '{"pid": 12'])
def test_fresh_unreadable_lock_is_held_and_an_old_one_is_taken_over(tmp_path, content):
    """An empty or half-written lock file may be another process taking the lock right now."""
    lock = tmp_path / storage.LOCK_NAME
    lock.write_text(content)
    with pytest.raises(storage.LockedError, match=r"being locked by another process"):
        with storage.FolderLock(tmp_path, "second run"):
            pass
    assert lock.read_text() == content  # not deleted
    old = time.time() - storage.FRESH_LOCK_SECONDS - 1
    os.utime(lock, (old, old))
    notes = []
    with storage.FolderLock(tmp_path, "second run", notify=notes.append):
        assert json.loads(lock.read_text())["what"] == "second run"
    assert len(notes) == 1 and "unreadable lock file" in notes[0] and "stale" in notes[0]


def test_a_lock_taken_while_judging_a_stale_one_is_not_deleted(tmp_path, monkeypatch):
    """Two processes finding the same stale lock: the second must not delete the first's new lock."""
    lock = tmp_path / storage.LOCK_NAME
    lock.write_text("")
    old = time.time() - storage.FRESH_LOCK_SECONDS - 1
    os.utime(lock, (old, old))
    live = {"pid": os.getpid(), "hostname": socket.gethostname(), "what": "first taker"}
    real_read = storage.FolderLock._read_owner

    def first_taker_wins(self):  # between our look at the stale file and its removal
        owner = real_read(self)
        lock.unlink()
        lock.write_text(json.dumps(live))
        return owner

    monkeypatch.setattr(storage.FolderLock, "_read_owner", first_taker_wins)
    with pytest.raises(storage.LockedError):
        with storage.FolderLock(tmp_path, "second taker", notify=lambda m: None):
            pass
    assert json.loads(lock.read_text()) == live


def test_resume_compares_error_feedback_as_it_runs():
    from fedtl_helpers.core.config import ExperimentConfig

    now = ExperimentConfig(compression="none").to_dict()  # error_feedback None
    storage.check_resume({**now, "error_feedback": True}, now, 1, 2)  # an older checkpoint: fine
    topk = ExperimentConfig(compression="topk").to_dict()
    storage.check_resume({**topk, "error_feedback": True}, topk, 1, 2)  # on either way
    with pytest.raises(storage.UserError, match=r"error_feedback: saved False, now True"):
        storage.check_resume({**topk, "error_feedback": False}, topk, 1, 2)

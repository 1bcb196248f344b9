import json

import numpy as np
import pytest

from fedtl_helpers import storage
from fedtl_helpers.history import History


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

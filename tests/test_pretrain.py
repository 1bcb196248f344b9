"""scripts/pretrain_backbone.py is reproducible from its seed and writes a loadable, recorded file."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pretrain(out: Path, seed: int) -> dict:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "pretrain_backbone.py"), "--out", str(out),
                           "--n-train", "320", "--n-test", "64", "--epochs", "1", "--seed", str(seed)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_same_seed_same_file_and_record(tmp_path):
    a, b = _pretrain(tmp_path / "a", 7), _pretrain(tmp_path / "b", 7)
    assert a["sha256"] == b["sha256"]
    assert (tmp_path / "a" / "builtin_cnn.weights.h5").read_bytes() == (
        tmp_path / "b" / "builtin_cnn.weights.h5").read_bytes()
    assert a["source_classes"] and a["seed"] == 7 and a["n_train"] == 320
    assert _pretrain(tmp_path / "c", 8)["sha256"] != a["sha256"]


def test_shipped_weights_match_their_record():
    from fedtl_helpers.inputs.shapes import TARGET_SHAPES
    from fedtl_helpers.modeling import models

    record = models.builtin_record()
    assert record["sha256"] == models.sha256_of(models.BUILTIN_WEIGHTS)
    assert models.BUILTIN_WEIGHTS.stat().st_size < 5_000_000
    assert record["source_test_accuracy"] > 0.8
    assert not set(record["source_classes"]) & set(TARGET_SHAPES)  # a different task

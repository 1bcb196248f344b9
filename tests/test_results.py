"""Committed results reproduce: the figures the book shows from ``results/`` are not stale.

Some comparisons take too long for the book build (tuned arms, many rounds, several seeds), so
a benchmark writes them to ``results/*.json`` with their provenance and the chapters show that
file. Here the start of one seed is run again with the recorded config and must give the
recorded accuracies.
"""

import json
from pathlib import Path

import pytest

import fedtl_helpers as fl

ROOT = Path(__file__).resolve().parents[1]
TRANSFER = ROOT / "results" / "bench_transfer.json"


def _bench():
    return json.loads(TRANSFER.read_text())


def test_bench_transfer_record_is_complete():
    bench = _bench()
    assert {"command", "commit", "date", "machine", "seconds"} <= set(bench["provenance"])
    assert bench["provenance"]["command"].startswith("python benchmarks/bench_transfer.py")
    assert len(bench["seeds"]) >= 3 and len(bench["per_seed"]) == len(bench["seeds"])
    for s in bench["per_seed"]:
        assert len(s["curves"]["pretrained"]) == len(s["curves"]["random"]) == bench["rounds"] + 1
    # the learning rates were chosen per arm on a validation split, from the recorded scores
    for arm in ("pretrained", "random"):
        scores = bench["tuning_scores"][arm]
        assert float(max(scores, key=scores.get)) == bench[f"lr_{arm}"]
        assert bench["configs"][arm]["learning_rate"] == bench[f"lr_{arm}"]


@pytest.mark.parametrize("arm, rounds", [("pretrained", 2), ("random", 1)])
def test_bench_transfer_first_rounds_reproduce(arm, rounds):
    bench = _bench()
    config = fl.ExperimentConfig.from_dict({**bench["configs"][arm], "rounds": rounds})
    history = fl.run_federated(config, progress=False).history
    recorded = bench["per_seed"][0]["curves"][arm][:rounds + 1]
    assert bench["per_seed"][0]["seed"] == config.seed
    # 0.002 = 4 of the 2,000 test images: room for floating-point order, not for another result
    assert history.column("test_accuracy") == pytest.approx(recorded, abs=0.002)

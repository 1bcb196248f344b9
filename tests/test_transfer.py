"""teaching.transfer.learned (has a random start learned enough for its gap to be read?) and
longer_run (what the committed record shows instead).

Pure arithmetic on given accuracies and on a record written here: exact numbers, no training.
"""

import json
import math

import pytest

from fedtl_helpers.teaching.transfer import learned, longer_run
from fedtl_helpers.teaching.verdict import sampling_floor


def test_at_chance_has_not_learned():
    # chapter 10's classroom random start: 0.100 on 600 test images
    result = learned(0.100, chance=0.1, n_test=600, reference=0.60, when="after 2 rounds")
    assert not result.learned and not result.above_chance and not result
    assert result.floor_points == pytest.approx(200 * math.sqrt(2 * 0.09 / 600))
    assert result.sentence == (
        "The random start has not learned: its 0.100 after 2 rounds is not above chance (0.10) by the "
        "test-set floor (3.5 points on 600 images)."
    )
    # below chance is not learning either
    assert not learned(0.05, chance=0.1, n_test=10_000).above_chance


def test_above_chance_but_nearer_chance_than_the_pretrained_start_is_not_enough():
    # chapter 03's classroom run: 0.179 from scratch against 0.900 pretrained on 1,000 test images
    result = learned(0.179, chance=0.1, n_test=1000, reference=0.900, when="after 4 epochs")
    floor = sampling_floor([0.179, 0.1], 1000)
    assert floor == pytest.approx(3.08, abs=0.01) and 7.9 > floor  # above chance ...
    assert result.above_chance and not result.learned  # ... and still not learned enough
    assert str(result) == result.sentence == (
        "The random start has not learned enough to be compared: its 0.179 after 4 epochs is above chance "
        "(0.10) by more than the test-set floor (3.1 points on 1,000 images), but still nearer chance than "
        "the pretrained start's 0.900, so the gap between them measures how far its first climb has got, "
        "not where either start ends."
    )
    # the boundary is the midpoint between chance and the reference: 0.50 for 0.10 and 0.90
    assert not learned(0.49, chance=0.1, n_test=1000, reference=0.90).learned
    assert learned(0.51, chance=0.1, n_test=1000, reference=0.90).learned


def test_a_start_that_has_learned_says_so():
    # bench_transfer's random start after 25 rounds: 0.71 against 0.94, 2,000 test images
    result = learned(0.71, chance=0.1, n_test=2000, reference=0.94, name="from scratch")
    assert result.learned and bool(result)
    assert result.sentence == (
        "From scratch has learned: its 0.710 is above chance (0.10) by more than the test-set floor "
        "(2.4 points on 2,000 images) and nearer the pretrained start's 0.940 than chance."
    )
    # without a reference only "above chance" is asked
    assert learned(0.2, chance=0.1, n_test=2000).learned


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"accuracy": 1.5}, r"^accuracy must be a number in \[0, 1\]"),
        ({"accuracy": "0.5"}, r"^accuracy must be a number in \[0, 1\]"),
        ({"accuracy": float("nan")}, r"^accuracy must be a number in \[0, 1\]"),
        ({"chance": 0.0}, r"^chance must lie strictly between 0 and 1"),
        ({"chance": 1.2}, r"^chance must be a number in \[0, 1\]"),
        ({"reference": -0.1}, r"^reference must be a number in \[0, 1\]"),
        ({"n_test": 0}, r"^n_test must be a positive integer"),
        ({"name": ""}, r"^name must be a non-empty string"),
        ({"reference_name": None}, r"^reference_name must be a non-empty string"),
    ],
)
def test_bad_input_names_the_parameter(kwargs, message):
    args = {"accuracy": 0.5, "chance": 0.1, "n_test": 100, **kwargs}
    with pytest.raises(ValueError, match=message):
        learned(args.pop("accuracy"), **args)


def _record(tmp_path, name, dataset, pretrained, random, n_test):
    config = {"dataset": dataset, "num_clients": 5, "n_train": 1000, "n_test": n_test}
    record = {"rounds": 2, "configs": {"pretrained": config, "random": config},
              "per_seed": [{"curves": {"pretrained": [0.1, 0.5, p], "random": [0.1, 0.1, r]}}
                           for p, r in zip(pretrained, random)]}
    (tmp_path / "results").mkdir(exist_ok=True)
    (tmp_path / "results" / f"{name}.json").write_text(json.dumps(record))


def test_longer_run_reads_the_record_for_the_dataset_and_judges_the_last_round(tmp_path):
    _record(tmp_path, "bench_transfer", "shapes", [0.90, 0.92, 0.94], [0.60, 0.70, 0.80], 2000)
    text = longer_run("shapes", root=tmp_path)
    assert text.startswith(
        "The committed longer run (`results/bench_transfer.json`: 5 clients x 200 images of shapes, 2,000 "
        "test images, 2 rounds of federated full fine-tuning, 3 seeds, each start at its own tuned learning "
        "rate) shows where the two starts end up: after the last round the random start scores 0.700 and "
        "the pretrained start 0.920 (means over seeds). By the book's rule: the pretrained start is above "
        "the random start in every seed, by 22.0 points"
    )
    # digits has its own record, scored on one fixed test set
    _record(tmp_path, "bench_transfer_digits", "digits", [0.98, 0.99], [0.985, 0.98], 500)
    assert "By the book's rule: No difference shown" in longer_run("digits", root=tmp_path)
    assert longer_run("cifar10", root=tmp_path) == (
        "No committed record holds a longer run of the two starts on cifar10: "
        "`python benchmarks/bench_transfer.py --dataset cifar10` makes one."
    )

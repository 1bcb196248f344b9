"""The book's one verdict rule (fedtl_helpers.teaching.verdict): numbers, wording, edge cases, errors.

Pure arithmetic on given accuracies: exact numbers, no tolerance from training involved.
"""

import math

import pytest

from fedtl_helpers.teaching.verdict import (
    final_per_seed,
    minimum_detectable_difference,
    sampling_floor,
    verdict,
)


def test_sampling_floor_is_two_standard_errors_in_points():
    # p = 0.5 on 100 images: one accuracy's variance 0.0025, a difference's 0.005; 2 sqrt(0.005) = 0.1414
    assert sampling_floor([0.5, 0.5], 100) == pytest.approx(200 * math.sqrt(0.5 / 100))
    assert sampling_floor([0.5, 0.5], 100) == pytest.approx(14.1421, abs=1e-4)
    # four seeds, each with its own test images: four times the images, half the floor
    assert sampling_floor([0.5, 0.5], 100, 4) == pytest.approx(7.0711, abs=1e-4)
    # ... unless every seed is scored on the same images
    assert sampling_floor([0.5, 0.5], 100, 4, shared_test_set=True) == pytest.approx(14.1421, abs=1e-4)
    # perfect (or zero) accuracy has no sampling noise
    assert sampling_floor([1.0, 0.0], 100) == 0.0


def test_mdd_is_the_larger_of_spread_and_floor_and_infinite_for_one_seed():
    assert minimum_detectable_difference(2.0, 1.1, 3) == 2.0
    assert minimum_detectable_difference(0.3, 1.1, 3) == 1.1
    assert minimum_detectable_difference(0.0, 0.5, 1) == math.inf


def test_a_clear_gain_is_shown_with_its_numbers():
    c = verdict([0.90, 0.91, 0.92], [0.80, 0.80, 0.81], n_test=1000, names=("pretrained", "random init"))
    assert c.shown
    assert c.per_seed_points == pytest.approx((10.0, 11.0, 11.0))
    assert c.difference_points == pytest.approx(32 / 3)
    assert c.spread_points == pytest.approx(2.0)  # arm A's range, 0.90..0.92, is the wider
    floor = 200 * math.sqrt((0.91 * 0.09 + (2.41 / 3) * (1 - 2.41 / 3)) / 3000)
    assert c.floor_points == pytest.approx(floor)
    assert c.mdd_points == pytest.approx(2.0)
    assert c.sentence == (
        "pretrained is above random init in every seed, by 10.7 points on average "
        "(10.0 to 11.0 over 3 seeds), more than the minimum detectable difference of 2.0 points "
        "(the larger of the seeds' spread, 2.0, "
        f"and the test-set floor, {floor:.1f})."
    )
    assert str(c) == c.sentence and c._repr_markdown_() == c.sentence
    assert (
        c.phrase
        == "above random init in every seed, by more than the minimum detectable difference of 2.0 points"
    )


def test_the_higher_arm_is_named_first_whichever_side_it_was_passed_on():
    c = verdict([0.80, 0.80, 0.81], [0.90, 0.91, 0.92], n_test=1000, names=("Krum", "FedAvg"))
    assert c.shown and c.difference_points == pytest.approx(-32 / 3)
    assert c.phrase.startswith("below FedAvg in every seed, by more than")
    assert c.sentence.startswith(
        "FedAvg is above Krum in every seed, by 10.7 points on average (10.0 to 11.0 over"
    )


def test_one_to_four_images_of_2000_is_no_difference_shown():
    # chapter 12's median against FedAvg: +2 to +4 images of 2,000 per seed
    fedavg = [0.9100, 0.9120, 0.9110]
    median = [0.9110, 0.9140, 0.9130]
    c = verdict(median, fedavg, n_test=2000, names=("median", "FedAvg"))
    assert all(x > 0 for x in c.per_seed_points)  # above in every seed ...
    assert not c.shown  # ... and still below the rule
    assert c.mdd_points == pytest.approx(c.floor_points) and c.floor_points == pytest.approx(1.04, abs=0.01)
    assert c.phrase == (
        "not distinguishable from FedAvg by the book's rule (minimum detectable difference 1.0 points)"
    )
    assert c.sentence.startswith(
        "No difference shown between median and FedAvg: +0.2 points (+0.1 to +0.2 over "
        "3 seeds, median minus FedAvg) is below the minimum detectable difference of 1.0"
    )


def test_a_gap_within_the_seeds_spread_is_no_difference_even_on_a_huge_test_set():
    c = verdict([0.70, 0.75, 0.80], [0.69, 0.72, 0.78], n_test=10**7, names=("A", "B"))
    assert c.floor_points < 0.1 and c.spread_points == pytest.approx(10.0)
    assert not c.shown and "is below the minimum detectable difference of 10.0 points" in c.sentence


def test_seeds_that_disagree_on_the_sign_show_nothing_even_above_the_mdd():
    # the mean, +12.3 points, clears the MDD (10 points, both arms' range), but seed 0 goes the other way
    c = verdict([0.50, 0.60, 0.60], [0.51, 0.41, 0.41], n_test=10**7)
    assert c.mdd_points == pytest.approx(10.0) and c.difference_points == pytest.approx(12.333, abs=1e-3)
    assert not c.shown
    assert c.sentence == (
        "No difference shown between A and B: +12.3 points (-1.0 to +19.0 over 3 seeds, A minus B); "
        "the seeds disagree on the sign (the minimum detectable difference is 10.0 points)."
    )


def test_one_seed_never_shows_a_difference():
    c = verdict([0.9], [0.1], n_test=2000, names=("pretrained", "random init"))
    assert not c.shown and c.mdd_points == math.inf and c.seeds == 1
    assert c.phrase == "not comparable with random init from one seed"
    assert c.sentence.startswith(
        "No difference shown between pretrained and random init: +80.0 points from one seed"
    )


def test_differences_of_gaps_use_the_four_arms_for_the_floor():
    lost_random, lost_pretrained = [0.33, 0.45, 0.33], [0.20, 0.21, 0.19]
    four = [0.66, 0.29, 0.93, 0.73]
    c = verdict(
        lost_random, lost_pretrained, n_test=1000, names=("random", "pretrained"), floor_accuracies=four
    )
    assert c.floor_points == pytest.approx(sampling_floor(four, 1000, 3))
    assert c.shown and c.mdd_points == pytest.approx(12.0)
    # negative values are fine for differences, not for accuracies
    assert verdict([-0.1, -0.2], [0.0, 0.1], n_test=10, floor_accuracies=[0.5, 0.5]).seeds == 2
    with pytest.raises(ValueError, match=r"^a must hold finite values in \[0, 1\]"):
        verdict([-0.1, -0.2], [0.0, 0.1], n_test=10)


def test_final_per_seed_is_the_mean_of_the_last_rounds():
    assert final_per_seed([[0.1, 0.2, 0.4], [0.3, 0.5, 0.7]], last=2) == pytest.approx([0.3, 0.6])
    assert final_per_seed([[0.1, 0.2, 0.4]]) == pytest.approx([0.4])
    with pytest.raises(ValueError, match=r"^last must be an integer from 1 to the number of rounds \(3\)"):
        final_per_seed([[0.1, 0.2, 0.4]], last=4)
    with pytest.raises(ValueError, match=r"^curves must be a 2-D array"):
        final_per_seed([0.1, 0.2])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"a": [0.5, 1.2], "b": [0.5, 0.5]}, r"^a must hold finite values in \[0, 1\]"),
        ({"a": [0.5, 0.5], "b": [0.5, float("nan")]}, r"^b must hold finite values"),
        ({"a": [], "b": []}, r"^a must be a non-empty 1-D sequence"),
        ({"a": [[0.5]], "b": [[0.5]]}, r"^a must be a non-empty 1-D sequence"),
        ({"a": ["x"], "b": [0.5]}, r"^a must be a sequence of numbers"),
        (
            {"a": [0.5, 0.6], "b": [0.5]},
            r"^a and b must hold one value per seed for the same seeds, got 2 and 1",
        ),
        ({"n_test": 0}, r"^n_test must be a positive integer"),
        ({"n_test": 2.5}, r"^n_test must be a positive integer"),
        ({"n_test": True}, r"^n_test must be a positive integer"),
        ({"names": ("only one",)}, r"^names must be two non-empty strings"),
        ({"names": ("A", "")}, r"^names must be two non-empty strings"),
    ],
)
def test_bad_input_names_the_parameter(kwargs, message):
    args = {"a": [0.5, 0.6], "b": [0.4, 0.5], "n_test": 100, **kwargs}
    with pytest.raises(ValueError, match=message):
        verdict(args.pop("a"), args.pop("b"), **args)


def test_sampling_floor_rejects_bad_seeds():
    with pytest.raises(ValueError, match=r"^seeds must be a positive integer"):
        sampling_floor([0.5], 100, 0)

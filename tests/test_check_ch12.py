import numpy as np
import pytest

import fedtl_helpers as fl
from fedtl_helpers.check import ExerciseError


def median_ok(deltas):
    return [np.median(np.stack([d[i] for d in deltas]), axis=0) for i in range(len(deltas[0]))]


def mask_ok(xs, masks):
    ys = [np.asarray(x, np.uint32).copy() for x in xs]
    for (i, j), m in masks.items():
        ys[i] += m
        ys[j] -= m
    return ys


def trim_ok(n, f):
    return f / n if f / n < 0.5 else None


def test_solutions_pass(capsys):
    assert fl.check.exercise_12_1(median_ok)
    assert fl.check.exercise_12_2(mask_ok)
    assert fl.check.exercise_12_3(trim_ok)
    assert capsys.readouterr().out.count("correct") == 3


def test_placeholders_are_not_attempted(capsys):
    def todo(*args):
        raise NotImplementedError

    for name in ("exercise_12_1", "exercise_12_2", "exercise_12_3"):
        assert not getattr(fl.check, name)(todo)
        assert not getattr(fl.check, name)(None)
    assert capsys.readouterr().out.count("not attempted") == 6


def test_mean_instead_of_median_is_named():
    def mean(deltas):
        return [np.mean(np.stack([d[i] for d in deltas]), axis=0) for i in range(len(deltas[0]))]

    with pytest.raises(ExerciseError, match="the mean over the clients"):
        fl.check.exercise_12_1(mean)


def test_median_over_everything_is_caught():
    with pytest.raises(ExerciseError, match="shapes"):
        fl.check.exercise_12_1(lambda deltas: [np.median(np.stack([d[0] for d in deltas])), np.zeros((1, 1))])


def test_masks_all_added_are_explained():
    def all_plus(xs, masks):
        ys = [np.asarray(x, np.uint32).copy() for x in xs]
        for (i, j), m in masks.items():
            ys[i] += m
            ys[j] += m
        return ys

    with pytest.raises(ExerciseError, match=r"added every mask with a \+ sign"):
        fl.check.exercise_12_2(all_plus)
    with pytest.raises(ExerciseError, match="equals its input"):
        fl.check.exercise_12_2(lambda xs, masks: xs)


def test_trim_fraction_mistakes_are_explained():
    with pytest.raises(ExerciseError, match=r"at \*each\* end"):
        fl.check.exercise_12_3(lambda n, f: 2 * f / n if 2 * f / n < 0.5 else None)
    with pytest.raises(ExerciseError, match="expected None"):
        fl.check.exercise_12_3(lambda n, f: f / n)

import numpy as np
import pytest

import fedtl_helpers as fl
from fedtl_helpers.check import ExerciseError


def _todo(*args):
    raise NotImplementedError


def test_placeholders_are_not_attempted(capsys):
    assert not fl.check.exercise_10_1(None)
    assert not fl.check.exercise_10_2(_todo)
    assert not fl.check.exercise_10_3(_todo)
    assert capsys.readouterr().out.count("not attempted") == 3


def test_solutions_pass(capsys):
    assert fl.check.exercise_10_1(0.1)
    assert fl.check.exercise_10_2(lambda g, w, a: [a * x + (1 - a) * y for x, y in zip(g, w)])
    assert fl.check.exercise_10_3(lambda w, wg, mu: mu * (w - wg))
    assert "Exercise 10.3: correct" in capsys.readouterr().out


def test_alpha_that_does_not_break_fedavg_is_rejected():
    with pytest.raises(ExerciseError, match="alpha=10 gives a mean label skew of 0.14.*Smaller alpha"):
        fl.check.exercise_10_1(10)
    with pytest.raises(ExerciseError, match="alpha must be a number > 0"):
        fl.check.exercise_10_1(-1)


def test_swapped_interpolation_is_explained():
    with pytest.raises(ExerciseError, match="alpha weighs the \\*global\\* model"):
        fl.check.exercise_10_2(lambda g, w, a: [a * y + (1 - a) * x for x, y in zip(g, w)])
    with pytest.raises(ExerciseError, match="expected"):
        fl.check.exercise_10_2(lambda g, w, a: [(x + y) / 2 for x, y in zip(g, w)])


@pytest.mark.parametrize("wrong, message", [
    (lambda w, wg, mu: mu * (wg - w), "sign is flipped"),
    (lambda w, wg, mu: mu / 2 * (w - wg), "half the gradient"),
    (lambda w, wg, mu: w - wg, "multiply by mu"),
    (lambda w, wg, mu: np.zeros_like(w), "expected mu \\* \\(w - w_global\\)"),
])
def test_wrong_proximal_gradients_are_explained(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        fl.check.exercise_10_3(wrong)

import numpy as np
import pytest

from fedtl_helpers import check
from fedtl_helpers.check import ExerciseError
from fedtl_helpers.transforms import privacy


def clip_solution(update, clip):
    norm = np.sqrt(sum(np.sum(np.square(t)) for t in update))
    return [t * min(1.0, clip / norm) for t in update]


def clip_per_tensor(update, clip):
    return [t * min(1.0, clip / np.linalg.norm(t)) if np.linalg.norm(t) > 0 else t for t in update]


def placeholder(*args):
    raise NotImplementedError


def test_11_1_accepts_solution_and_explains_per_tensor_clipping(capsys):
    assert check.exercise_11_1(clip_solution)
    assert "Exercise 11.1: correct" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="clipped each tensor separately"):
        check.exercise_11_1(clip_per_tensor)
    with pytest.raises(ExerciseError, match="unchanged"):
        check.exercise_11_1(lambda u, c: [t * 0 for t in u])
    assert not check.exercise_11_1(placeholder)
    assert not check.exercise_11_1(None)
    assert "not attempted" in capsys.readouterr().out


def test_11_2_accepts_solution_and_names_the_missing_division():
    assert check.exercise_11_2(lambda z, c, m: z * c / m)
    with pytest.raises(ExerciseError, match="noise on the sum"):
        check.exercise_11_2(lambda z, c, m: z * c)
    with pytest.raises(ExerciseError, match="z \\*times\\* C"):
        check.exercise_11_2(lambda z, c, m: z / c / m)
    assert not check.exercise_11_2(placeholder)


def test_11_3_accepts_the_helper_answer_and_rejects_too_little_or_too_much_noise():
    z = privacy.noise_multiplier_for_epsilon(4.0, 0.1, 50, 1e-5)
    assert check.exercise_11_3(z)
    with pytest.raises(ExerciseError, match="more noise is needed"):
        check.exercise_11_3(z * 0.8)
    with pytest.raises(ExerciseError, match="more noise .* than needed"):
        check.exercise_11_3(z * 1.5)
    assert not check.exercise_11_3(None)

"""Checkers of chapters 8 and 9: accept the solutions, reject typical mistakes with a useful message."""

import numpy as np
import pytest

import fedtl_helpers as fl
from fedtl_helpers.check import ExerciseError


def _q(x):
    lo, hi = float(x.min()), float(x.max())
    scale = (hi - lo) / 255
    return np.clip(np.round((x - lo) / scale), 0, 255).astype(np.uint8), lo, scale


def _dq(levels, lo, scale):
    return lo + levels.astype(np.float32) * scale


def _topk_ef(update, residual, k):
    corrected = update + residual
    sent = np.zeros_like(corrected)
    keep = np.argsort(np.abs(corrected))[-k:]
    sent[keep] = corrected[keep]
    return sent, corrected - sent


def _todo(*_):
    raise NotImplementedError


def test_8_1(capsys):
    assert fl.check.exercise_8_1(_q, _dq)
    assert "correct" in capsys.readouterr().out
    assert not fl.check.exercise_8_1(_todo, _todo)
    assert "not attempted" in capsys.readouterr().out
    def steps(x, n, rounding):
        scale = (x.max() - x.min()) / n
        return rounding((x - x.min()) / scale).astype(np.uint8), x.min(), scale

    with pytest.raises(ExerciseError, match="255 steps"):  # 256 steps instead of 255
        fl.check.exercise_8_1(lambda x: steps(x, 256, np.round), _dq)
    with pytest.raises(ExerciseError, match="floor instead of round"):
        fl.check.exercise_8_1(lambda x: steps(x, 255, np.floor), _dq)
    with pytest.raises(ExerciseError, match="uint8"):
        fl.check.exercise_8_1(lambda x: tuple(a for a in (_q(x)[0].astype(np.int64), *_q(x)[1:])), _dq)


def test_8_2():
    assert fl.check.exercise_8_2(_topk_ef)

    def residual_ignored(update, residual, k):  # chooses before adding the residual
        sent = np.zeros_like(update)
        keep = np.argsort(np.abs(update))[-k:]
        sent[keep] = update[keep]
        return sent, update + residual - sent

    with pytest.raises(ExerciseError, match="Add the residual \\*before\\*"):
        fl.check.exercise_8_2(residual_ignored)

    def forgets(update, residual, k):
        sent, _ = _topk_ef(update, residual, k)
        return sent, np.zeros_like(update)

    with pytest.raises(ExerciseError, match="must keep exactly what was not sent"):
        fl.check.exercise_8_2(forgets)


def test_8_3():
    assert fl.check.exercise_8_3(0.01, 8)
    assert not fl.check.exercise_8_3(None, None)
    with pytest.raises(ExerciseError, match="Keep fewer values or use fewer bits"):
        fl.check.exercise_8_3(0.05, 32)


def test_9_1():
    def mask(w, s):
        k = int(round(s * w.size))
        m = np.ones(w.size, bool)
        m[np.argsort(np.abs(w).ravel())[:k]] = False
        return m.reshape(w.shape)

    assert fl.check.exercise_9_1(mask)

    def signed(w, s):  # ranks by value instead of magnitude
        k = int(round(s * w.size))
        m = np.ones(w.size, bool)
        m[np.argsort(w.ravel())[:k]] = False
        return m.reshape(w.shape)

    with pytest.raises(ExerciseError, match="compare np.abs"):
        fl.check.exercise_9_1(signed)
    with pytest.raises(ExerciseError, match="largest"):
        fl.check.exercise_9_1(lambda w, s: ~mask(w, s))


def test_9_2():
    assert fl.check.exercise_9_2(lambda w: (np.round(w / (np.abs(w).max() / 127)).astype(np.int8),
                                            np.abs(w).max() / 127))
    with pytest.raises(ExerciseError, match="do not truncate"):
        fl.check.exercise_9_2(lambda w: ((w / 0.01).astype(np.int8), np.abs(w).max() / 127))
    with pytest.raises(ExerciseError, match="np.int8"):
        fl.check.exercise_9_2(lambda w: (np.round(w / 0.01), 0.01))

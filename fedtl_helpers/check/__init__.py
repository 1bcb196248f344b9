"""Checkers for the chapters' exercises: ``fl.check.exercise_6_1(my_fedavg)``.

Chapter: every chapter's "Exercises" section. One module per chapter (``chNN.py``) defines
``exercise_N_M(answer)`` functions; this package imports them all, so a new chapter only adds
its module. A checker runs the student's answer on small, hand-checkable cases and either prints
``Exercise N.M: correct`` with what it verified, prints that the exercise is not attempted yet
(the answer still raises ``NotImplementedError`` or is ``None``, as the notebook ships it), or
raises ``ExerciseError`` saying in plain words what is wrong and what was expected.
"""

from __future__ import annotations

import importlib
import pkgutil

from ._common import ExerciseError, not_attempted, passed

__all__ = ["ExerciseError", "not_attempted", "passed", "exercises"]


def _load() -> dict[str, object]:
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("ch"):
            module = importlib.import_module(f"{__name__}.{info.name}")
            found.update({k: v for k, v in vars(module).items() if k.startswith("exercise_")})
    return found


_EXERCISES = _load()
globals().update(_EXERCISES)
__all__ += sorted(_EXERCISES)


def exercises() -> list[str]:
    """Names of every exercise checker, e.g. ``['exercise_6_1', ...]``."""
    return sorted(_EXERCISES, key=lambda n: tuple(int(p) for p in n.split("_")[1:]))

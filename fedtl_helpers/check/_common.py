"""What every exercise checker shares: the error type and the messages."""

from __future__ import annotations


class ExerciseError(AssertionError):
    """An answer is wrong; the message says what was wrong and what was expected."""


def passed(exercise: str, verified: str) -> bool:
    """Print the success line (``exercise`` like ``"6.1"``) and return ``True``."""
    print(f"Exercise {exercise}: correct. {verified}")
    return True


def not_attempted(exercise: str, hint: str = "") -> bool:
    """Print that the exercise still holds the notebook's placeholder; return ``False``."""
    print(f"Exercise {exercise}: not attempted yet (the placeholder is still there). {hint}".rstrip())
    return False


def fail(exercise: str, message: str) -> None:
    """Raise ``ExerciseError`` with a plain-language message."""
    raise ExerciseError(f"Exercise {exercise}: {message}")

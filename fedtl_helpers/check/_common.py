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


class NotAttempted(Exception):
    """The answer is still the notebook's placeholder (it raised ``NotImplementedError``)."""


def checker(exercise: str, hint: str = ""):
    """Decorate ``exercise_N_M``: a ``None`` answer or a placeholder is "not attempted".

    The decorated body calls the student's code through :func:`attempt`, so a placeholder that
    raises ``NotImplementedError`` prints the not-attempted line (the book still builds) and
    any other exception becomes a plain-language ``ExerciseError`` naming the input.
    """
    def wrap(check):
        def run(answer):
            if answer is None:
                return not_attempted(exercise, hint)
            try:
                return check(answer)
            except NotAttempted:
                return not_attempted(exercise, hint)
        run.__name__, run.__qualname__ = check.__name__, check.__qualname__
        run.__doc__ = check.__doc__
        return run
    return wrap


def attempt(exercise: str, fn, *args, what: str = "", **kwargs):
    """Call the student's ``fn``; a placeholder raises :class:`NotAttempted`, an error fails clearly."""
    if not callable(fn):
        fail(exercise, f"expected a function, got {type(fn).__name__} {fn!r}: pass the function itself "
                       "(my_function, not my_function(...)).")
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise NotAttempted from None
    except ExerciseError:
        raise
    except Exception as e:  # any bug in the student's code becomes a readable message
        where = f" on {what}" if what else ""
        fail(exercise, f"your function raised {type(e).__name__}: {e}{where}. Run it on that input "
                       "yourself to see where it goes wrong.")


def show(value) -> str:
    """A short, readable rendering of numbers, arrays and lists of arrays for messages."""
    import numpy as np

    if isinstance(value, list | tuple) and value and all(hasattr(v, "shape") for v in value):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if hasattr(value, "shape"):
        arr = np.asarray(value)
        return np.array2string(arr, precision=4, separator=", ", threshold=12) if arr.ndim else f"{arr:.4g}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return repr(value)

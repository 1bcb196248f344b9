"""What every exercise checker shares: the error type and the messages."""

from __future__ import annotations


class ExerciseError(AssertionError):
    """An answer is wrong; the message says what was wrong and what was expected."""


class Verdict:
    """A checker's result: true when the answer passed, false when not attempted yet.

    It shows nothing when it is the last value of a notebook cell (the printed line already
    says everything), so exercise cells don't end in a stray ``True`` or ``False``.
    """

    def __init__(self, ok: bool):
        self.ok = ok

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        return f"Verdict({self.ok})"

    def _ipython_display_(self) -> None:
        pass


def passed(exercise: str, verified: str) -> Verdict:
    """Print the success line (``exercise`` like ``"6.1"``); the result is true."""
    print(f"Exercise {exercise}: correct. {verified}")
    return Verdict(True)


def not_attempted(exercise: str, hint: str = "") -> Verdict:
    """Print that the exercise still holds the notebook's placeholder; the result is false."""
    print(f"Exercise {exercise}: not attempted yet (the placeholder is still there). {hint}".rstrip())
    return Verdict(False)


def fail(exercise: str, message: str) -> None:
    """Raise ``ExerciseError`` with a plain-language message."""
    raise ExerciseError(f"Exercise {exercise}: {message}")


def same_arrays(got, expect) -> bool:
    """Whether ``got`` is a list of arrays with ``expect``'s shapes and (close) values."""
    import numpy as np

    try:
        return len(got) == len(expect) and all(
            np.shape(g) == np.shape(e) and np.allclose(g, e) for g, e in zip(got, expect))
    except TypeError:
        return False


def call_or_none(fn, *args):
    """``fn(*args)``, or ``None`` when ``fn`` is still the placeholder (raises ``NotImplementedError``)."""
    try:
        return fn(*args)
    except NotImplementedError:
        return None


def is_placeholder(answer, *args) -> bool:
    """``True`` for ``None``, or a function that still raises ``NotImplementedError`` on ``args``."""
    if answer is None:
        return True
    if callable(answer):
        try:
            answer(*args)
        except NotImplementedError:
            return True
    return False


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
    """A short, readable rendering of numbers, arrays and lists of arrays for messages.

    ``[2.5, 3.5] | [[3]]`` for a list of two arrays; numbers with at most 4 significant digits.
    """
    import numpy as np

    if isinstance(value, list | tuple) and value and all(hasattr(v, "shape") for v in value):
        return " | ".join(show(v) for v in value)
    if hasattr(value, "shape") or isinstance(value, list | tuple):
        try:
            arr = np.asarray(value)
        except ValueError:  # ragged: not an array
            return repr(value)
        if arr.dtype == object:
            return repr(value)
        if arr.ndim == 0:
            return show(arr.item())
        items = [show(a) for a in (arr[:6] if len(arr) > 12 else arr)]
        return "[" + ", ".join(items) + (", ...]" if len(arr) > 12 else "]")
    if isinstance(value, float | np.floating):
        return f"{float(value):.4g}"
    return repr(value)

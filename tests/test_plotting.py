"""The book's figure defaults and the accuracy axes every chapter uses."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402

from fedtl_helpers.core.history import History  # noqa: E402
from fedtl_helpers.teaching import notebook, plotting  # noqa: E402


def _history(accs, bytes_up):
    return History(rows=[{"round": r, "test_accuracy": a, "bytes_up": b, "bytes_down": 0}
                         for r, (a, b) in enumerate(zip(accs, bytes_up))])


def test_round_axis_has_integer_ticks_only():
    ax = plotting.accuracy_curves({"a": _history([0.1, 0.5, 0.6, 0.7, 0.8, 0.9, 0.9, 0.95, 0.96, 0.97],
                                                 [0] + [10] * 9)}, "t")
    ticks = [t for t in ax.get_xticks() if 0 <= t <= 9]
    assert len(ticks) >= 3 and all(float(t).is_integer() for t in ticks), ticks  # no 2.5, 7.5


def test_log_bytes_axis_starts_at_the_first_upload_not_at_zero():
    h = _history([0.1, 0.5, 0.7], [0, 2_000_000, 2_000_000])
    ax = plotting.accuracy_curves({"a": h}, "t", x="bytes_up", logx=True)
    line = ax.get_lines()[0]
    np.testing.assert_allclose(line.get_xdata(), [2.0, 4.0])  # cumulative MB; round 0 (0 MB) left out
    np.testing.assert_allclose(line.get_ydata(), [0.5, 0.7])
    assert ax.get_xscale() == "log"


def test_figure_defaults_set_legible_fonts():
    matplotlib.rcParams["font.size"] = 6
    notebook.figure_defaults()  # outside IPython: fonts only, no inline backend needed
    assert matplotlib.rcParams["font.size"] == 11
    assert matplotlib.rcParams["legend.fontsize"] >= 9 and matplotlib.rcParams["xtick.labelsize"] >= 10

"""The book's figure defaults and the accuracy axes every chapter uses."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402

from fedtl_helpers.core import figures  # noqa: E402
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
    assert matplotlib.rcParams["font.size"] == 12  # so the relative "small" is 10 pt
    assert matplotlib.rcParams["legend.fontsize"] >= 10 and matplotlib.rcParams["xtick.labelsize"] >= 10


def _saved_size(fig):
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    buf.seek(0)
    return Image.open(buf).size


def test_a_long_title_wraps_instead_of_widening_the_figure():
    """A title wider than the axes widened the saved figure (tight bbox) and the page then shrank
    all of it: Figures 4.2 and 5.2 were shown at half their size. Now the title wraps."""
    notebook.figure_defaults()
    title = ("Pretrained vs random start, tuned learning rates, 3 seeds\nshapes (procedural, 10 classes), "
             "5 IID clients x 1000 images, full fine-tuning, 25 rounds, 2000 test images, seed 0-2")
    ax = plotting.accuracy_bands({"a": [[0.1, 0.5], [0.2, 0.6]]}, title)
    width, _ = _saved_size(ax.figure)
    assert width <= 6.4 * 100 * 1.05, width  # the figure's own 6.4 inches, not the title's length
    assert ax.get_title().count("\n") >= 2 and ax.get_title().replace("\n", " ") == title.replace("\n", " ")
    grid = plotting.image_grid(np.zeros((20, 8, 8, 3)), np.repeat(np.arange(2), 10), ["a", "b"], title)
    fig = getattr(grid, "figure", grid)
    # the suptitle wraps to the grid's width; the class names left of the rows add a little
    assert _saved_size(fig)[0] <= fig.get_figwidth() * 100 * 1.3


def test_retina_png_says_how_small_its_smallest_text_is():
    import base64
    import io

    import matplotlib.pyplot as plt
    from PIL import Image

    fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
    ax.plot([1, 2])
    ax.set_title("a title")
    ax.text(1, 1.5, "tiny", fontsize=6)
    ax.text(1, 1.2, "", fontsize=2)  # empty text is not text a reader sees
    data, meta = notebook.retina_png(fig)
    img = Image.open(io.BytesIO(base64.b64decode(data)))
    assert img.size[0] // 2 == meta["width"] and img.size[1] // 2 == meta["height"]  # retina: 2x
    assert float(img.text[figures.TEXT_SIZE_KEY]) == round(6 / 72 * 100 * 2, 2)
    assert figures.smallest_text_pt(fig) == 6

"""Small conveniences for the book's notebooks: which data and weights, said out loud.

Chapter: "Introduction". The book builds on the embedded default; the environment variables
``FEDTL_DATASET``, ``FEDTL_BACKBONE`` and ``FEDTL_WEIGHTS`` switch every notebook at once (for
example to build the book on the real CIFAR-10). They override the notebook's parameters, and
the notebook prints what it ended up using, so nothing is ever substituted silently.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..inputs import data
from ..modeling import models

# Fonts in points at the figure's own size, none under 10 pt. The book's desktop column is 676
# CSS px (6.8 inches at 100 px per inch), so a 10-inch two-panel figure shrinks by a third: 10 pt
# stays above 9 px after that (measured by tests/test_book.py), matplotlib's 7-8 pt did not.
FIGURE_STYLE = {
    # 12, so that matplotlib's relative "small" (0.83 x font.size) is 10 pt: a two-panel figure of
    # 9.5-10 inches shown in the 676 px column of the desktop layout keeps its smallest text
    # above 9 CSS px (tests/test_book.py); 11 left it at 7.7-8.9 px.
    "font.size": 12,
    "axes.titlesize": 11,
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 10,
    "figure.titlesize": 12,
    "savefig.bbox": "tight",
}


def figure_defaults() -> None:
    """Book-wide figure defaults: legible font sizes and high-resolution (retina) output.

    Called by :func:`settings`, which every chapter runs first, so every figure of the book gets
    them. Retina PNGs carry twice the pixels at the same displayed size, so figures stay sharp on
    high-density screens and when zoomed; outside IPython only the font sizes apply.
    """
    import matplotlib as mpl

    mpl.rcParams.update(FIGURE_STYLE)
    try:
        from IPython import get_ipython
    except ImportError:  # plain Python (tests, scripts): nothing is displayed inline
        return
    shell = get_ipython()
    if shell is not None:
        from matplotlib.figure import Figure
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("retina")
        shell.display_formatter.formatters["image/png"].for_type(Figure, retina_png)


def retina_png(fig):
    """IPython's retina PNG of ``fig`` (twice the pixels, shown at the normal size), carrying the
    height of its smallest text in pixels (``core.figures.TEXT_SIZE_KEY``)."""
    from IPython.core.pylabtools import retina_figure

    from ..core.figures import png_metadata

    # retina: rendered at twice the figure's dpi
    return retina_figure(fig, base64=True, metadata=png_metadata(fig, 2 * fig.dpi))


def settings(dataset: str, backbone: str, weights: str | None) -> tuple[str, str, str | None]:
    """Apply the ``FEDTL_*`` overrides, set the book's figure defaults (:func:`figure_defaults`)
    and print the data and weights this notebook uses."""
    figure_defaults()
    dataset = os.environ.get("FEDTL_DATASET", dataset)
    backbone = os.environ.get("FEDTL_BACKBONE", backbone)
    weights = os.environ.get("FEDTL_WEIGHTS", weights)
    if weights in ("none", "None", ""):
        weights = None
    print(f"Data:    {data.describe(dataset)}")
    print(f"Weights: {describe_weights(backbone, weights)}")
    return dataset, backbone, weights


def describe_weights(backbone: str, weights: str | None) -> str:
    """One line naming the initial weights (with the built-in weights' provenance)."""
    if weights is None:
        return f"{backbone}, random initialisation"
    if weights == "builtin":
        rec = models.builtin_record()
        return (f"{backbone}, built-in pretrained weights (source task: "
                f"{len(rec['source_classes'])} other shapes, "
                f"source accuracy {rec['source_test_accuracy']:.0%}, sha256 {rec['sha256'][:12]}…)")
    if weights == "imagenet":
        return f"{backbone}, ImageNet weights (Keras applications)"
    return f"{backbone}, weights from {weights}"


def tag(dataset: str, backbone: str, weights: str | None) -> str:
    """Short form for figure titles: ``"data: shapes | builtin_cnn, weights: builtin"``."""
    return f"data: {dataset} | {backbone}, weights: {weights or 'random init'}"


def repo_root(start: str | os.PathLike | None = None) -> Path:
    """The repository root (the folder holding ``_toc.yml``), from the notebook's working folder,
    else from where this package is installed (a notebook graded or copied outside the
    repository, e.g. nbgrader's ``autograded/`` folder, still finds the course's files).

    The book build runs notebooks inside ``notebooks/``; papermill and the tests run them from
    the root. Paths such as ``experiments/smoke.yaml`` are resolved against this folder.
    """
    here = Path(start or Path.cwd()).resolve()
    package_home = Path(__file__).resolve().parents[2]  # fedtl_helpers/teaching/notebook.py
    for folder in (here, *here.parents, package_home):
        if (folder / "_toc.yml").is_file():
            return folder
    raise FileNotFoundError(f"no _toc.yml in {here} or its parents, nor beside the installed fedtl_helpers "
                            f"({package_home}): is this the fedtl repository?")

"""The book's figures (matplotlib): labelled axes, legends, and titles naming data and weights.

Chapter: every chapter. Each function draws on a new or given ``Axes`` and returns it, so a
notebook can combine them; none shows or saves anything by itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.font_manager import FontProperties
from matplotlib.ticker import MaxNLocator

from ..core.history import History


def _wrap(text: str, width_in: float, fontsize_pt: float) -> str:
    """``text`` wrapped to lines that fit ``width_in`` inches at ``fontsize_pt``.

    A title wider than its axes widens the saved figure (``bbox_inches="tight"``), and the page
    then shrinks the whole figure, text included, to fit its column: a long title made the
    figures of chapters 4 and 5 unreadable on a phone.
    """
    import textwrap

    chars = max(20, int(width_in * 72 / (0.55 * fontsize_pt)))  # ~0.55 em per character on average
    return "\n".join(textwrap.fill(line, chars) for line in text.splitlines() or [""])


def set_title(ax: plt.Axes, title: str) -> None:
    """Set ``ax``'s title, wrapped to the axes' width (see :func:`_wrap`)."""
    size = FontProperties(size=plt.rcParams["axes.titlesize"]).get_size_in_points()
    width = ax.get_position().width * ax.figure.get_figwidth()
    ax.set_title(_wrap(title, width, size))


def axes(ax=None, figsize=(6.4, 4.0)) -> plt.Axes:
    """``ax``, or new axes of ``figsize`` inches in a figure of their own (a chapter's custom plot)."""
    if ax is None:
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def accuracy_curves(histories: Mapping[str, History], title: str, ax=None,
                    x: str = "round", logx: bool = False) -> plt.Axes:
    """Test accuracy per round, or against cumulative megabytes (``x="bytes_up"``,
    ``"bytes_down"`` or ``"bytes_total"``, up plus down), one line per run."""
    ax = axes(ax)
    for label, h in histories.items():
        if x == "bytes_total":
            xs = np.cumsum(np.add(h.column("bytes_up"), h.column("bytes_down"))) / 1e6
        else:
            xs = np.cumsum(h.column(x)) / 1e6 if x.startswith("bytes") else h.column(x)
        ys = np.asarray(h.column("test_accuracy"), dtype=float)
        if logx:  # a log axis has no 0: drop round 0 (nothing sent yet) instead of drawing in from 0
            keep = np.asarray(xs) > 0
            xs, ys = np.asarray(xs)[keep], ys[keep]
        ax.plot(xs, ys, marker="o", ms=3, label=label)
    if logx:
        ax.set_xscale("log")
    if x == "round":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole: no 2.5, 7.5
    return _accuracy_axes(ax, "round" if x == "round" else f"cumulative {x.replace('_', ' ')} (MB)",
                          title)


def _accuracy_axes(ax, xlabel: str, title: str) -> plt.Axes:
    """Labels, limits, grid, legend and title of an accuracy plot."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("global test accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    set_title(ax, title)
    return ax


def accuracy_bands(curves: Mapping[str, Sequence[Sequence[float]]], title: str, ax=None) -> plt.Axes:
    """Test accuracy per round over several seeds: the mean as a line, min to max as a band.

    ``curves`` maps a label to one accuracy curve per seed (index = round, equal lengths).
    """
    ax = axes(ax)
    for label, runs in curves.items():
        a = np.asarray(runs, dtype=float)
        if a.ndim != 2 or not a.size:
            raise ValueError(f"curves[{label!r}] is invalid: allowed a non-empty list of equal-length "
                             "curves, one per seed.")
        rounds = np.arange(a.shape[1])
        (line,) = ax.plot(rounds, a.mean(0), marker="o", ms=3,
                          label=f"{label} (mean of {len(a)} seeds; band: min to max)")
        ax.fill_between(rounds, a.min(0), a.max(0), color=line.get_color(), alpha=0.2, lw=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _accuracy_axes(ax, "round", title)


def image_grid(x: np.ndarray, y: np.ndarray, class_names: Sequence[str], title: str,
               per_class: int = 6):
    """A grid of example images, one row per class."""
    k = len(class_names)
    fig, grid = plt.subplots(k, per_class, figsize=(per_class * 0.9, k * 0.95),
                             layout="constrained")
    for c in range(k):
        idx = np.flatnonzero(y == c)[:per_class]
        for j in range(per_class):
            ax = grid[c, j]
            ax.axis("off")
            if j < len(idx):
                ax.imshow(x[idx[j]])
        grid[c, 0].text(-4, 16, class_names[c], ha="right", va="center", fontsize="small")
    size = FontProperties(size=plt.rcParams["figure.titlesize"]).get_size_in_points()
    fig.suptitle(_wrap(title, fig.get_figwidth(), size))
    return fig


def partition_heatmap(stats: np.ndarray, class_names: Sequence[str], title: str, ax=None):
    """Examples per (client, class): how the data is spread over clients."""
    ax = axes(ax, figsize=(6.4, 0.35 * len(stats) + 1.5))
    im = ax.imshow(stats, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right", fontsize="small")
    ax.set_yticks(range(len(stats)), [f"client {k}" for k in range(len(stats))], fontsize="small")
    ax.set_xlabel("class")
    ax.figure.colorbar(im, ax=ax, label="examples")
    set_title(ax, title)
    return ax


def confusion(cm: np.ndarray, class_names: Sequence[str], title: str, ax=None):
    """Row-normalised confusion matrix (each row: where that class's images went)."""
    ax = axes(ax, figsize=(5.5, 4.8))
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    im = ax.imshow(rates, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right", fontsize="small")
    ax.set_yticks(range(len(class_names)), class_names, fontsize="small")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.figure.colorbar(im, ax=ax, label="share of the true class")
    set_title(ax, title)
    return ax


def bars(values: Mapping[str, float], ylabel: str, title: str, ax=None):
    """A labelled bar chart (per-client accuracies, seconds per strategy, ...)."""
    ax = axes(ax)
    names = list(values)
    ax.bar(range(len(names)), [values[n] for n in names], color="tab:blue")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize="small")
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    set_title(ax, title)
    return ax


def partition_bars(stats: np.ndarray, class_names: Sequence[str], title: str, ax=None):
    """Stacked bars, one per client: its size (label + quantity skew) and its class mix."""
    ax = axes(ax, figsize=(6.4, 3.6))
    bottom = np.zeros(len(stats))
    colors = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for c, name in enumerate(class_names):
        ax.bar(range(len(stats)), stats[:, c], bottom=bottom, color=colors(c % colors.N), label=name)
        bottom += stats[:, c]
    ax.set_xticks(range(len(stats)), [str(k) for k in range(len(stats))], fontsize="small")
    ax.set_xlabel("client")
    ax.set_ylabel("training examples")
    ax.legend(fontsize="small", ncol=2, bbox_to_anchor=(1.01, 1), loc="upper left", frameon=False)
    set_title(ax, title)
    return ax


def client_accuracy(results: Mapping[str, np.ndarray], title: str, ax=None):
    """Per-client accuracies of several models: one column of dots per model, a bar at the mean.

    Lines join each client's dots, so a reader sees who gains and who loses.
    """
    ax = axes(ax)
    names = list(results)
    acc = np.array([np.asarray(results[n], dtype=float) for n in names])  # (models, clients)
    xs = np.arange(len(names))
    ax.plot(xs, acc, color="0.75", lw=0.8, zorder=1)
    ax.scatter(np.repeat(xs, acc.shape[1]), acc.ravel(), s=14, color="tab:blue", zorder=2,
               label="one client")
    ax.hlines(acc.mean(axis=1), xs - 0.25, xs + 0.25, color="tab:red", lw=2, zorder=3, label="mean")
    ax.scatter(xs, acc.min(axis=1), marker="v", s=40, color="black", zorder=3, label="worst client")
    ax.set_xticks(xs, names, rotation=15, ha="right", fontsize="small")
    ax.set_ylabel("held-out accuracy on the client's own data")
    ax.set_ylim(0, 1.02)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    set_title(ax, title)
    return ax


def protocol_sequence(transcript: Sequence, title: str, ax=None):
    """A sequence diagram of protocol messages (``secure_agg.Message``): one lane per party,
    one arrow per message in the order sent, labelled with what it carries and its bytes."""
    parties = ["server"] + sorted({m.sender for m in transcript} - {"server"},
                                  key=lambda s: int(s.split()[-1]))
    lane = {p: i for i, p in enumerate(parties)}
    ax = axes(ax, figsize=(1.9 * len(parties) + 2.5, 0.32 * len(transcript) + 1.5))
    for p, x in lane.items():
        ax.plot([x, x], [-0.5, len(transcript) - 0.5], color="0.6", lw=1)
        ax.text(x, -1, p, ha="center", va="bottom", fontsize=10, fontweight="bold")
    colours = dict(zip(("advertise_keys", "share_keys", "masked_input", "unmasking"),
                       ("tab:blue", "tab:orange", "tab:green", "tab:red")))
    for y, m in enumerate(transcript):
        a, b = lane[m.sender], lane[m.receiver]
        c = colours.get(m.step, "k")
        ax.annotate("", xy=(b, y), xytext=(a, y), arrowprops=dict(arrowstyle="->", color=c, lw=1.2))
        ax.text((a + b) / 2, y - 0.12, f"{m.what} ({m.nbytes:,} B)", ha="center", va="bottom",
                fontsize="small")
        if y == 0 or transcript[y - 1].step != m.step:
            ax.text(-0.6, y, m.step.replace("_", " "), ha="right", va="center", fontsize=10, color=c)
    ax.set_xlim(-1.7, len(parties) - 0.4)
    ax.set_ylim(len(transcript), -1.5)
    ax.axis("off")
    set_title(ax, title)
    return ax

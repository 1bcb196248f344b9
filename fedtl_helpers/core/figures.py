"""What a saved figure says about itself: the pixel height of its smallest text.

Chapter: every chapter (the book's figures). A page shrinks a figure to fit its column, and the
figure's text with it. Each PNG the book shows (a notebook's inline figure, the experiment grid's
``summary.png``) carries, as a PNG text field, how tall its smallest text is in its own pixels,
so ``tests/test_book.py`` can check at each screen width how tall that text is as shown.
"""

from __future__ import annotations

TEXT_SIZE_KEY = "fedtl-smallest-text-px"


def smallest_text_pt(fig) -> float:
    """The font size in points of the smallest visible, non-empty text of ``fig`` (0 if none)."""
    from matplotlib.text import Text

    sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    return min(sizes, default=0.0)


def png_metadata(fig, dpi: float) -> dict[str, str]:
    """PNG text fields for ``fig`` saved at ``dpi``: the pixel height of its smallest text."""
    return {TEXT_SIZE_KEY: f"{smallest_text_pt(fig) / 72 * dpi:.2f}"}

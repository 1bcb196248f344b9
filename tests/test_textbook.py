"""The book as a textbook, checked on the committed sources (no build): citations resolve to the
bibliography, glossary links to the glossary, and every chapter has the parts a student relies
on (objectives, study time, display equations, numbered captions, glued numbers, one exercise
format, placeholders that give nothing away)."""

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb"))  # 05b_...: between 05 and 06
SOURCES = CHAPTERS + sorted((ROOT / "notebooks" / "solutions").glob("*.ipynb")) + sorted(
    (ROOT / "book").glob("*.md"))
# Chapters reworked on other branches in the same session; the lead removes each one here once it
# is merged with its objectives, equations and glued numbers (the strict xfail fails until then).
PENDING: set[str] = set()


def _text(path: Path) -> str:
    if path.suffix == ".md":
        return path.read_text(encoding="utf-8")
    return "\n".join(c.source for c in nbformat.read(path, as_version=4).cells)


def _markdown(path: Path) -> str:
    return "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")


def _bib_keys() -> set[str]:
    return set(re.findall(r"^@\w+\{([^,]+),", (ROOT / "book" / "references.bib").read_text(), re.M))


def _glossary_terms() -> set[str]:
    text = (ROOT / "book" / "glossary.md").read_text()
    block = text[text.index("```{glossary}"):]
    return {line.strip().lower() for line in block.splitlines()[1:] if line and not line[0].isspace()
            and not line.startswith("```")}


def test_bibliography_has_every_entry_with_an_id():
    bib = (ROOT / "book" / "references.bib").read_text()
    entries = re.split(r"\n(?=@)", bib.strip())
    entries = [e for e in entries if e.startswith("@")]
    assert len(entries) >= 25
    for entry in entries:
        key = re.match(r"@\w+\{([^,]+),", entry).group(1)
        assert re.fullmatch(r"[a-z]+\d{4}[a-z0-9]+", key), f"{key}: surname + year + first title word"
        assert re.search(r"\b(doi|eprint)\s*=", entry) or "without DOI or arXiv id" in entry, (
            f"{key} has neither a DOI nor an arXiv id")


def test_every_citation_and_glossary_link_resolves():
    keys, terms = _bib_keys(), _glossary_terms()
    for path in SOURCES:
        text = _text(path)
        for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", text):
            for key in group.split(","):
                assert key.strip() in keys, f"{path.name} cites {key.strip()!r}, not in references.bib"
        for term in re.findall(r"\{term\}`([^`<]+?)(?:\s*<([^>]+)>)?`", text):
            name = (term[1] or term[0]).strip().lower()
            assert name in terms, f"{path.name} links {name!r}, not in the glossary"


@pytest.mark.parametrize("path", [
    pytest.param(p, id=p.stem, marks=pytest.mark.xfail(p.stem in PENDING, strict=True,
                                                        reason="reworked on another branch"))
    for p in CHAPTERS])
def test_chapter_has_the_textbook_parts(path):
    md = _markdown(path)
    number = int(path.stem[:2])  # exercises continue their chapter's numbering (05b: 5.4, 5.5)
    label = path.stem.split("_")[0].lstrip("0")  # figures are numbered per page: 5b.1
    assert "Learning objectives" in md and "*Study time:" in md, "objectives and study time at the top"
    if 2 <= number <= 12:
        assert "$$" in md, "at least one display equation"
    assert re.search(rf"Figure {label}\.\d+:", md), "numbered captions that say what to see"
    assert "{glue:text}`" in md, "result numbers glued from the outputs"
    assert "every exercise ends with a call to its checker" in md, "the common exercise intro"
    titles = re.findall(rf"\*\*Exercise {number}\.\d+ — [^*]+\*\*", md)
    checkers = re.findall(rf"exercise_{number}_\d+\(", _text(path))
    assert len(titles) == len(checkers) > 0, "every exercise has a title"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_placeholders_give_nothing_away(path):
    """A placeholder is `raise NotImplementedError` alone: a message there is a hint in disguise."""
    code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    assert "NotImplementedError(" not in code, f"{path.name}: a placeholder carries a message"


def test_solution_pages_are_named_like_the_sidebar_expects():
    for path in sorted((ROOT / "notebooks" / "solutions").glob("*.ipynb")):
        title = nbformat.read(path, as_version=4).cells[0].source.splitlines()[0]
        assert title.startswith("# Solutions: "), f"{path.name}: {title!r}"

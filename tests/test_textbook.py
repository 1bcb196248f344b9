"""The book as a textbook, checked on the committed sources (no build): citations resolve to the
bibliography, glossary links to the glossary, and every chapter has the parts a student relies
on (objectives, study time, display equations, numbered captions, glued numbers, one exercise
format, placeholders that give nothing away)."""

import json
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


def test_every_glossary_term_is_linked_from_a_page():
    """A glossary entry no page links to is one a reader never finds from the text."""
    linked = set()
    for path in SOURCES:
        if path.name != "glossary.md":
            linked |= {(t[1] or t[0]).strip().lower()
                       for t in re.findall(r"\{term\}`([^`<]+?)(?:\s*<([^>]+)>)?`", _text(path))}
    assert not _glossary_terms() - linked, f"never linked: {sorted(_glossary_terms() - linked)}"


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


# What a not-attempted message must not hold: code (a library call, a method call, indexing, a
# comprehension, an assignment) or a formula (arithmetic between names or numbers). In words, a
# message says what to do; in code, it is the answer or most of it. "Write f(a, b)." is fine.
CODE_IN_PROSE = re.compile(
    r"\b(?:np|fl)\.|\.\w+\(|\bfor\s+\w+(?:\s*,\s*\w+)*\s+in\b|[\[\]=^|]|\*\*"
    r"|[\w)]\s*[*/+]\s*[\w(]|[\w)]\s+-\s+[\w(]")
NOT_ATTEMPTED = "not attempted yet (the placeholder is still there)."
# The hints the audit of issue 21 found giving the answer away: the rule must catch every one.
OLD_HINTS = [
    "Return [alpha * g + (1 - alpha) * w for g, w in ...].",
    "Hint: np.argsort(np.abs(w).ravel())[:k] are the k smallest.",
    "Hint: scale = np.abs(w).max() / 127.",
    "Hint: corrected = update + residual; keep the k largest |corrected|.",
    "Hint: each kept value costs value_bits / 8 bytes plus a 2-byte index.",
    "Set alpha to a Dirichlet concentration, e.g. alpha = 0.5.",
    "Differentiate mu/2 * sum((w - w_global)**2) with respect to w.",
    "scale every tensor by min(1, clip / norm), with norm taken over all tensors together.",
    "the server adds N(0, (z*C)^2) to the *sum*, then divides by the expected number of clients.",
    "use fl.privacy.noise_multiplier_for_epsilon (target epsilon 4.0, q=0.1, 50 rounds, delta=1e-05, "
    "Poisson sampling, RDP accountant).",
]
# Chapters whose stored checker output (an nbval reference cell) may still hold an old hint
# (none now: refreshed when the checkers changed).
STALE_REFERENCES: set[str] = set()


def _exercise_cells(path: Path) -> list:
    return [c for c in nbformat.read(path, as_version=4).cells
            if c.cell_type == "code" and "fl.check.exercise_" in c.source]


def _hint(printed: str) -> str:
    assert printed.count(NOT_ATTEMPTED) == 1, f"not one not-attempted line: {printed!r}"
    return printed.split(NOT_ATTEMPTED, 1)[1].strip()


@pytest.mark.parametrize("hint", OLD_HINTS)
def test_the_code_rule_catches_the_hints_that_gave_answers_away(hint):
    assert CODE_IN_PROSE.search(hint), hint


def test_deployment_page_opens_like_a_chapter():
    text = (ROOT / "book" / "deployment.md").read_text(encoding="utf-8")
    top = text[:text.index("## Overview")]
    assert "*Study time:" in top and ":::{admonition} Learning objectives" in top and ":class: tip" in top
    overview = text[:text.index("## Prerequisites")]
    assert "{cite}`beutel2020flower`" in overview, "Flower cited where the page introduces it"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_placeholders_give_nothing_away(path, capsys):
    """A placeholder is `raise NotImplementedError` alone: a message there is a hint in disguise.

    And the checker, called on the notebook's own placeholder (the exercise cell as it ships),
    says in words what to do: no code, no formula.
    """
    import fedtl_helpers as fl

    code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    assert "NotImplementedError(" not in code, f"{path.name}: a placeholder carries a message"
    cells = _exercise_cells(path)
    assert cells, f"{path.name}: no exercise cell"
    for cell in cells:
        exec(cell.source, {"fl": fl})  # a def raising NotImplementedError or None, then the checker
        hint = _hint(capsys.readouterr().out)
        assert hint, f"{path.name}: the not-attempted line says nothing about what to do"
        found = CODE_IN_PROSE.findall(hint)
        assert not found, f"{path.name}: {hint!r} holds code or a formula: {found}"


def test_a_half_done_exercise_gets_a_hint_in_words_too(capsys):
    """8.1 has a second not-attempted message: my_quantize done, my_dequantize still the placeholder."""
    import numpy as np

    import fedtl_helpers as fl

    def quantize(x):
        lo, scale = x.min(), (x.max() - x.min()) / 255
        return np.round((x - lo) / scale).astype(np.uint8), lo, scale

    def dequantize(levels, lo, scale):
        raise NotImplementedError

    assert not fl.check.exercise_8_1(quantize, dequantize)
    hint = _hint(capsys.readouterr().out)
    assert "my_dequantize" in hint and not CODE_IN_PROSE.search(hint), hint


@pytest.mark.parametrize("path", [
    pytest.param(p, id=p.stem, marks=pytest.mark.xfail(p.stem in STALE_REFERENCES, strict=True,
                                                        reason="stored output holds an old hint"))
    for p in CHAPTERS])
def test_stored_checker_output_is_what_the_checker_prints(path, capsys):
    """The exercise cells are nbval reference cells: their stored output is what the book shows."""
    import fedtl_helpers as fl

    for cell in _exercise_cells(path):
        exec(cell.source, {"fl": fl})
        stored = "".join(o.get("text", "") for o in cell.get("outputs", []))
        assert stored == capsys.readouterr().out, f"{path.name}: stored {stored!r}"


def test_solution_pages_are_named_like_the_sidebar_expects():
    for path in sorted((ROOT / "notebooks" / "solutions").glob("*.ipynb")):
        title = nbformat.read(path, as_version=4).cells[0].source.splitlines()[0]
        assert title.startswith("# Solutions: "), f"{path.name}: {title!r}"


def test_grid_summary_figure_is_sharp_and_its_legend_names_what_varies(tmp_path):
    """Figure 14.1 is the runner's summary.png: 200 dpi, the legend short enough to read."""
    from PIL import Image

    from fedtl_helpers.workflow import experiments

    records = [{"run_id": f"dataset=shapes__rounds=2__weights={w}__0123abcd",
                "params": {"dataset": "shapes", "rounds": 2, "weights": w}, "final": {"test_accuracy": a},
                "per_round": [{"round": 1, "test_accuracy": a / 2}, {"round": 2, "test_accuracy": a}]}
               for w, a in (("builtin", 0.6), (None, 0.2))]
    assert experiments.summary_labels(records) == ["weights=builtin", "weights=None"]
    assert experiments.summary_labels(records[:1]) == [records[0]["run_id"]]
    for r in records:
        (tmp_path / f"{r['run_id']}.json").write_text(json.dumps(r))
    _, png = experiments.write_summary(tmp_path, "smoke")
    with Image.open(png) as image:
        assert image.info["dpi"] == pytest.approx((200, 200), abs=0.1)
        assert image.width >= 7 * 200  # the 7-inch axes at 200 dpi, plus the legend beside them


def test_teachers_guide_covers_every_chapter_and_exercise_in_order():
    """Times for every chapter and the deployment page; each exercise's mistakes once, in order;
    each exercise scheduled once, in class or as homework."""
    import fedtl_helpers as fl

    guide = (ROOT / "book" / "teachers_guide.md").read_text(encoding="utf-8")

    def section(title: str) -> str:
        start = guide.index(f"## {title}")
        return guide[start:guide.index("\n## ", start + 1)]

    exercises = [".".join(n.split("_")[1:]) for n in fl.check.exercises()]
    mistakes = re.findall(r"^\| (\d+\.\d+) ", section("Mistakes the checkers catch"), re.M)
    assert mistakes == exercises
    times = section("What each notebook needs")
    assert re.findall(r"^\| \{doc\}`\.\./notebooks/([^`]+)`", times, re.M) == [p.stem for p in CHAPTERS]
    assert re.search(r"^\| \{doc\}`deployment`", times, re.M), "the deployment page's row"
    sessions = [line.split("|")[4:6] for line in section("A schedule").splitlines()
                if re.match(r"\| \d+\. ", line)]
    scheduled = re.findall(r"\b\d+\.\d+\b", " ".join(" ".join(cols) for cols in sessions))
    assert sorted(scheduled, key=lambda e: tuple(map(int, e.split(".")))) == exercises


def test_the_peft_chapter_terms_are_in_the_glossary():
    assert {"lora", "bitfit", "lp-ft", "fedbn", "feature skew",
            "parameter-efficient fine-tuning"} <= _glossary_terms()


# How a chapter reads a committed record: the loader, the file path, or chapter 4's record quoted
# when a classroom run's random start has not learned.
_READS_A_RECORD = re.compile(r"""\.load\(\s*["']bench_|["']results["']\s*/\s*["']bench_|longer_run\(""")


def test_the_introduction_names_every_chapter_that_reads_a_committed_record():
    intro = (ROOT / "book" / "intro.md").read_text(encoding="utf-8")
    start = intro.index("- **Read from a committed record**")
    paragraph = intro[start:intro.index("\n\n", start)]
    named = set(re.findall(r"\{doc\}`\.\./notebooks/([^`]+)`", paragraph))
    code = {path.stem: [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
            for path in CHAPTERS}
    reading = {stem for stem, cells in code.items() if any(_READS_A_RECORD.search(s) for s in cells)}
    assert reading, "the pattern finds the chapters that read records"
    assert named == reading, (f"chapters reading a record but not named: {sorted(reading - named)}; "
                              f"named but reading none: {sorted(named - reading)}")

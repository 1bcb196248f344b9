"""Build the whole book and check the HTML a reader gets.

The build runs with warnings as errors, so a notebook that raises, a broken cross-reference
or a bad docstring fails here. Execution is cached in ``_build/.jupyter_cache``; in the full suite
nbval has just executed every notebook and stored it there (``tests/conftest.py``), so this build
executes none: run on its own (``pytest tests/test_book.py``) it executes what the cache lacks.
"""

import html.parser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"


def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc["parts"]:
        files += [c["file"] for c in part["chapters"]]
    return files


class _Refs(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.scripts, self.links, self.hrefs, self.imgs = [], [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script" and a.get("src"):
            self.scripts.append(a["src"])
        if tag == "link" and a.get("href"):
            self.links.append(a["href"])
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"])
        if tag == "img" and a.get("src"):
            self.imgs.append(a["src"])


def _records() -> set[tuple[int, str]]:
    """The execution cache's records: (id, notebook path); a notebook executed anew gets a new id."""
    from jupyter_cache import get_cache

    cache = ROOT / "_build" / ".jupyter_cache"
    return {(r.pk, r.uri) for r in get_cache(str(cache)).list_cache_records()} if cache.exists() else set()


@pytest.fixture(scope="module")
def built():
    """The build's HTML pages, and the notebooks it executed itself (cache records it added)."""
    sys.path.insert(0, str(ROOT))
    import dev  # noqa: PLC0415  (the project's task file: it copies MathJax into place)

    dev.copy_mathjax()
    dev.drop_stale_execution_cache()
    before = _records()
    jb = Path(sys.executable).parent / "jupyter-book"
    proc = subprocess.run([str(jb), "build", str(ROOT), "-W", "--keep-going"], cwd=ROOT,
                          capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-6000:]
    executed = {uri for _, uri in _records() - before}
    pages = {}
    for page in HTML.rglob("*.html"):
        parser = _Refs()
        parser.feed(page.read_text(encoding="utf-8"))
        pages[page] = parser
    return pages, executed


@pytest.fixture(scope="module")
def book(built):
    return built[0]


def test_build_reuses_the_notebooks_nbval_executed(built, request):
    """One execution per notebook per test run: the build adds no cache record for a notebook
    nbval ran in this session (or, with ``--notebooks-cached``, in the step before)."""
    if request.config.getoption("--notebooks-cached"):  # nbval ran in the step before (dev.py test)
        assert not built[1], f"the book build executed notebooks nbval had run: {sorted(built[1])}"
        return
    ran = getattr(request.config.pluginmanager.get_plugin("fedtl-nbval"), "seconds", {})
    if not ran:
        pytest.skip("nbval ran no notebook in this session (e.g. `pytest tests/test_book.py` alone)")
    again = sorted({Path(uri).resolve() for uri in built[1]} & {Path(p).resolve() for p in ran})
    assert not again, f"the book build executed again: {again}"


def test_every_chapter_page_present(book):
    for f in _toc_files():
        assert (HTML / f"{f}.html").is_file(), f"missing page for {f}"


def test_no_external_scripts_or_styles(book):
    for page, refs in book.items():
        for url in refs.scripts + [u for u in refs.links if u.endswith(".css")]:
            assert not url.startswith(("http:", "https:", "//")), f"{page.name} loads {url}"


def test_internal_links_and_images_resolve(book):
    for page, refs in book.items():
        for url in refs.hrefs + refs.imgs:
            if url.startswith(("http:", "https:", "mailto:", "#", "//", "data:")):
                continue
            target = (page.parent / url.split("#")[0].split("?")[0]).resolve()
            assert target.exists(), f"{page.relative_to(HTML)} links to missing {url}"


def test_maths_is_served_locally(book):
    page = HTML / "notebooks" / "02_federated_learning.html"
    text = page.read_text(encoding="utf-8")
    assert "mathjax/tex-chtml.js" in text and "cdn.jsdelivr" not in text
    assert (HTML / "_static" / "mathjax" / "tex-chtml.js").is_file()


def test_chapters_show_executed_outputs(book):
    text = (HTML / "notebooks" / "04_pretrained_init.html").read_text(encoding="utf-8")
    assert "test_acc" in text and "<img" in text  # a results table and a figure


def test_screenshot_of_a_chapter_is_not_blank(book, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (python3 dev.py test installs it with apt-get as root)")
    shot = tmp_path / "page.png"
    page = HTML / "notebooks" / "04_pretrained_init.html"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
                    "--window-size=1280,1600", "--hide-scrollbars", f"--screenshot={shot}",
                    page.as_uri()], check=True, capture_output=True, timeout=120)
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)[..., :3]
    assert img.shape[0] >= 1000 and img.shape[1] >= 1200
    dark = (img.mean(axis=2) < 0.5).mean()  # text, figures: a blank page has none
    assert img.std() > 0.05 and dark > 0.005, (img.std(), dark)


# The layout probe: injected into a copy of each page, it runs after MathJax has typeset and
# reports what a reader would see cut off. Each page is loaded in an iframe of the given width
# (Chromium's window cannot be narrower than about 500 px; an iframe's viewport can), and sends
# its report to the frame page, which --dump-dom prints.
_PROBE = r"""
<script>
(function () {
  function name(el) {
    let s = el.tagName.toLowerCase();
    if (el.classList.length) s += "." + [...el.classList].slice(0, 2).join(".");
    return s + ": " + (el.textContent || "").trim().replace(/\s+/g, " ").slice(0, 50);
  }
  function probe() {
    const vw = document.documentElement.clientWidth;
    const root = document.querySelector("article.bd-article") || document.body;
    const page = location.pathname.split("/").slice(-2).join("/").replace("_layout_probe_", "");
    const out = {page: page, width: vw,
                 page_overflow: document.documentElement.scrollWidth - vw,
                 clipped: [], cut_lines: [], wide_math: [], scrolling_math: [],
                 math_errors: [...document.querySelectorAll("mjx-merror, mjx-container")]
                   // an error box, or a macro MathJax does not know, printed as its name in red
                   .filter(m => m.tagName === "MJX-MERROR" || m.textContent.includes("\\")).map(name)};
    for (const el of root.querySelectorAll("*")) {
      if (el.closest("mjx-container") || el.classList.contains("math")) continue;  // checked below
      const cs = getComputedStyle(el);
      const over = el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1;
      if (over && (cs.overflowX === "hidden" || cs.overflowX === "clip")) out.clipped.push(name(el));
      // a line runs past the box; a printed table (pre.fedtl-table) scrolls sideways instead
      const scrolls = el.classList.contains("fedtl-table") && cs.overflowX === "auto";
      if (over && el.tagName === "PRE" && !scrolls) out.cut_lines.push(name(el));
      const r = el.getBoundingClientRect();
      // inside a pre only the pre itself counts (a wrapped line's hanging space is not cut text)
      const inPre = el.tagName !== "PRE" && el.closest("pre");
      if (r.width > 0 && r.right > vw + 1 && !el.closest("table") && !inPre)
        out.clipped.push("past the page: " + name(el));
    }
    for (const m of root.querySelectorAll("mjx-container[display='true']")) {
      const cs = getComputedStyle(m);
      const over = m.scrollWidth > m.clientWidth + 1 || m.getBoundingClientRect().right > vw + 1;
      if (over && cs.overflowX !== "auto" && cs.overflowX !== "scroll") out.wide_math.push(name(m));
      else if (over) out.scrolling_math.push(name(m));
    }
    // every figure of a cell output: its own size, the size shown, and whether it opens full size
    out.figures = [...root.querySelectorAll("div.cell_output img")].map(function (img) {
      const r = img.getBoundingClientRect(), a = img.closest("a");
      return {src: img.getAttribute("src"), natural: [img.naturalWidth, img.naturalHeight],
              shown: [r.width, r.height], full_size_link: !!a && a.href === img.src};
    });
    // a printed table whose rows wrap (its box is taller than its lines) has broken columns
    out.printed_tables = root.querySelectorAll("pre.fedtl-table").length;
    out.wrapped_tables = [];
    for (const pre of root.querySelectorAll("pre.fedtl-table")) {
      const cs = getComputedStyle(pre), lines = pre.textContent.replace(/\n$/, "").split("\n").length;
      const inner = pre.clientHeight - parseFloat(cs.paddingTop) - parseFloat(cs.paddingBottom);
      if (inner > lines * parseFloat(cs.lineHeight) + 2) out.wrapped_tables.push(name(pre));
    }
    // an HTML table wider than the page must scroll inside a box of its own
    out.unscrollable_tables = [...root.querySelectorAll("table")].filter(function (t) {
      if (t.getBoundingClientRect().right <= vw + 1) return false;
      for (let el = t.parentElement; el && el !== root; el = el.parentElement) {
        const ox = getComputedStyle(el).overflowX;
        if ((ox === "auto" || ox === "scroll") && el.getBoundingClientRect().right <= vw + 1) return false;
      }
      return true;
    }).map(name);
    window.parent.postMessage(JSON.stringify(out), "*");
  }
  window.addEventListener("load", function () {
    const ready = (window.MathJax && MathJax.startup && MathJax.startup.promise) || Promise.resolve();
    ready.then(function () { setTimeout(probe, 300); });
  });
})();
</script>
"""

_FRAME = """<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>{frames}
<script>const seen = [];
window.addEventListener("message", function (e) {{
  seen.push(e.data);
  if (seen.length === {count}) {{
    const pre = document.createElement("pre"); pre.id = "layout-reports";
    pre.textContent = "[" + seen.join(",") + "]"; document.body.appendChild(pre);
  }}
}});</script></body></html>"""


def layout_reports(chromium: str, pages: list[Path], width: int, workdir: Path) -> list[dict]:
    """Load every page at ``width`` CSS pixels in headless Chromium and return the probe's reports."""
    import html as html_lib
    import json
    import re

    copies = []
    for page in pages:
        copy = page.with_name(f"_layout_probe_{page.name}")
        copy.write_text(page.read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>"),
                        encoding="utf-8")
        copies.append(copy)
    frame = HTML / f"_layout_frame_{width}.html"
    frame.write_text(_FRAME.format(count=len(copies), frames="\n".join(
        f'<iframe src="{c.relative_to(HTML).as_posix()}" style="border:0;width:{width}px;height:900px">'
        "</iframe>" for c in copies)), encoding="utf-8")
    try:
        proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                               "--disable-background-networking", "--disable-component-update",
                               "--disable-sync", f"--user-data-dir={workdir / 'profile'}",
                               "--window-size=1400,1000", "--virtual-time-budget=120000", "--dump-dom",
                               frame.as_uri()], capture_output=True, text=True, timeout=600)
    finally:
        for c in copies + [frame]:
            c.unlink()
    found = re.search(r'<pre id="layout-reports">(.*?)</pre>', proc.stdout, re.S)
    assert found, f"the layout probe reported nothing at {width} px: {proc.stderr[-1500:]}"
    return json.loads(html_lib.unescape(found.group(1)))


WIDTHS = (1280, 768, 390)  # desktop, tablet, phone (CSS pixels)


@pytest.fixture(scope="module")
def layouts(book, tmp_path_factory):
    """The probe's reports of every page at each of ``WIDTHS``."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (python3 dev.py test installs it with apt-get as root)")
    pages = [HTML / f"{f}.html" for f in _toc_files()]
    reports = {w: layout_reports(chromium, pages, w, tmp_path_factory.mktemp(f"w{w}")) for w in WIDTHS}
    for w, rs in reports.items():
        assert len(rs) == len(pages)
        assert all(abs(r["width"] - w) <= 20 for r in rs), {r["page"]: r["width"] for r in rs}
    return reports


# Legibility of a figure's smallest text, in CSS pixels as shown (the rule of issue 27): at least
# MIN_TEXT_PX on the desktop layout as the page shows it; on a tablet or phone, where a figure
# shrinks with the column, at least MIN_TEXT_PX once opened full size with a tap (fedtl.js links
# every output figure to its file). 9 px is the smallest text the WCAG/typography guides treat as
# readable in a figure; our body text is 16 px.
MIN_TEXT_PX = 9.0
ASPECT_TOLERANCE = 0.03  # shown width/height against the image's own, relative


def _text_px(page: str, src: str) -> float | None:
    """The smallest text of an output figure in its PNG's pixels (core.figures.TEXT_SIZE_KEY)."""
    from PIL import Image

    from fedtl_helpers.core.figures import TEXT_SIZE_KEY

    with Image.open((HTML / page).parent / src) as img:
        value = getattr(img, "text", {}).get(TEXT_SIZE_KEY)
    return None if value is None else float(value)


@pytest.mark.parametrize("width", WIDTHS)
def test_every_figure_keeps_its_shape_and_its_text_stays_legible(layouts, width):
    """Every figure of every chapter at 1280, 768 and 390 px: shown with its own aspect ratio
    (within 3 %), and its smallest text readable by the rule above."""
    distorted, illegible, unmeasured, seen = [], [], [], 0
    for r in layouts[width]:
        page = r["page"].replace("_layout_probe_", "")
        for f in r["figures"]:
            (nw, nh), (w, h) = f["natural"], f["shown"]
            if nw < 2 or w < 2:
                continue
            seen += 1
            ratio = (w / h) / (nw / nh)
            if abs(ratio - 1) > ASPECT_TOLERANCE:
                distorted.append(f"{page} {f['src']}: shown {w:.0f}x{h:.0f}, own {nw}x{nh} ({ratio:.2f})")
            px = _text_px(page, f["src"])
            if px is None:
                unmeasured.append(f"{page} {f['src']}")
                continue
            shown_px = px * w / nw
            if width >= 1280 and shown_px < MIN_TEXT_PX:
                illegible.append(f"{page} {f['src']}: smallest text {shown_px:.1f} px as shown")
            if width < 1280 and shown_px < MIN_TEXT_PX and not (f["full_size_link"] and px >= MIN_TEXT_PX):
                illegible.append(f"{page} {f['src']}: smallest text {shown_px:.1f} px, no full-size tap")
    assert seen >= 30, f"only {seen} figures found at {width} px"
    assert not distorted, distorted
    assert not unmeasured, f"output figures made without the book's figure defaults: {unmeasured}"
    assert not illegible, illegible


@pytest.mark.parametrize("width", WIDTHS)
def test_printed_and_html_tables_scroll_instead_of_breaking(layouts, width):
    """A printed table never wraps a row (it scrolls sideways in its box); an HTML table wider
    than the page scrolls inside a box of its own."""
    bad = {r["page"]: r["wrapped_tables"] + r["unscrollable_tables"] for r in layouts[width]
           if r["wrapped_tables"] or r["unscrollable_tables"]}
    assert not bad, bad
    assert sum(r["printed_tables"] for r in layouts[width]) >= 20  # fedtl.js found the tables


@pytest.mark.parametrize("width", [1280, 390])
def test_no_page_clips_text_or_overflows_with_equations(layouts, width):
    """Headless Chromium at desktop and phone width: nothing in a page's content is cut off
    (overflow hidden), runs past the page, or hides a line of code or output behind a scrollbar;
    display equations fit the column at 1280 px and at most scroll in their own box on a phone;
    MathJax typesets every formula (no unknown macro shown in red)."""
    reports = layouts[width]
    kinds = ("clipped", "cut_lines", "wide_math", "math_errors")  # math_errors: TeX MathJax cannot typeset
    bad = {r["page"]: {k: r[k] for k in kinds if r[k]}
           for r in reports if any(r[k] for k in kinds) or r["page_overflow"] > 1}
    assert not bad, bad
    if width >= 1280:
        scrolling = {r["page"]: r["scrolling_math"] for r in reports if r["scrolling_math"]}
        assert not scrolling, f"display equations wider than the column at {width} px: {scrolling}"

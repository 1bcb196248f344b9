"""The repository link and launch buttons come from one setting, ``repository.url``."""

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "_ext"))

import fedtl_access  # noqa: E402


def test_empty_url_hides_every_button():
    opts = fedtl_access.access_options("")
    assert opts["use_repository_button"] is False and opts["use_issues_button"] is False
    assert opts["launch_buttons"]["binderhub_url"] == "" and opts["launch_buttons"]["colab_url"] == ""


def test_a_github_url_shows_the_link_and_the_launch_buttons():
    opts = fedtl_access.access_options(" https://github.com/someone/fedtl ")
    assert opts["repository_url"] == "https://github.com/someone/fedtl"
    assert opts["use_repository_button"] and opts["use_issues_button"]
    assert opts["launch_buttons"]["binderhub_url"] == "https://mybinder.org"
    assert opts["launch_buttons"]["colab_url"] == "https://colab.research.google.com"


def test_another_host_gets_the_link_but_no_github_only_buttons():
    opts = fedtl_access.access_options("https://gitlab.com/someone/fedtl")
    assert opts["use_repository_button"] and not opts["use_issues_button"]
    assert opts["launch_buttons"]["binderhub_url"] == ""


def test_the_book_ships_with_no_invented_url_and_loads_the_extension():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["repository"]["url"] == ""
    assert config["sphinx"]["local_extensions"] == {"fedtl_access": "book/_ext"}
    assert "use_repository_button" not in config.get("html", {})  # one setting, not two


# ---- `python3 dev.py publish URL`: the one setting, written into the config and every notebook ----

import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402

import pytest  # noqa: E402

sys.path.insert(0, str(ROOT))
import dev  # noqa: E402

EXAMPLE = "https://github.com/example-org/fedtl-course"


def _copy_course(tmp_path):
    shutil.copy(ROOT / "_config.yml", tmp_path / "_config.yml")
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return tmp_path


def _install_cells(root):
    cells = {}
    for path in sorted((root / "notebooks").rglob("*.ipynb")):
        nb = json.loads(path.read_text())
        cells[path.relative_to(root)] = ["".join(c["source"]) for c in nb["cells"]
                                         if dev.INSTALL_CHECK_TAG in c["metadata"].get("tags", [])]
    return cells


def test_publish_names_the_address_in_the_config_and_every_install_cell(tmp_path):
    root = _copy_course(tmp_path)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    changed = dev.publish(EXAMPLE + "/", root=root)  # a trailing slash is dropped
    assert dev.course_url(root) == EXAMPLE
    cells = _install_cells(root)
    assert len(changed) == len(cells) + 1 and len(cells) >= 28
    for name, sources in cells.items():
        assert len(sources) == 1 and f'COURSE = "{EXAMPLE}"' in sources[0], name
    # the message a student sees outside the course environment names the address and the commands
    out = subprocess.run([sys.executable, "-I", "-S", "-c", dev.install_check(EXAMPLE)],
                         capture_output=True, text=True, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 1
    assert f"git clone {EXAMPLE}" in out.stderr and f"%pip install git+{EXAMPLE}" in out.stderr
    # unpublishing gives back exactly the committed files: the notebooks are in step with the config
    dev.publish("", root=root)
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("bad", ["http://github.com/a/b", "github.com/a/b", "https://", "https://x/a b",
                                 "ftp://x/y"])
def test_publish_refuses_what_is_not_an_https_address_and_writes_nothing(tmp_path, bad):
    root = _copy_course(tmp_path)
    before = (root / "_config.yml").read_text()
    with pytest.raises(ValueError, match=r"url=.* is invalid: allowed an https:// address"):
        dev.publish(bad, root=root)
    assert (root / "_config.yml").read_text() == before


def test_the_committed_notebooks_name_the_committed_address():
    url = dev.course_url(ROOT)
    for name, sources in _install_cells(ROOT).items():
        assert sources == [dev.install_check(url)], name


def _mini_book(tmp_path, url):
    """A two-page book with the course's config and theme extension, ``repository.url`` = url."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["repository"]["url"] = url
    config["execute"] = {"execute_notebooks": "off"}
    config["sphinx"]["extra_extensions"] = []
    config["sphinx"]["config"] = {"html_static_path": ["book/_static"], "html_css_files": ["fedtl.css"],
                                  "suppress_warnings": ["myst.header"]}
    config["exclude_patterns"] = ["_build/**"]
    shutil.copytree(ROOT / "book" / "_ext", tmp_path / "book" / "_ext")
    shutil.copytree(ROOT / "book" / "_static", tmp_path / "book" / "_static",
                    ignore=shutil.ignore_patterns("mathjax"))
    (tmp_path / "_config.yml").write_text(yaml.safe_dump(config))
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: index\nchapters:\n- file: notebooks/demo\n")
    (tmp_path / "index.md").write_text("# Course\n\nThe landing page.\n")
    (tmp_path / "notebooks").mkdir()
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": ["# Demo chapter\n"]},
                    {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
                     "source": ["print(1)"]}],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "notebooks" / "demo.ipynb").write_text(json.dumps(nb))
    out = subprocess.run([str(Path(sys.executable).with_name("jupyter-book")), "build", str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    html = tmp_path / "_build" / "html"
    return (html / "index.html").read_text(), (html / "notebooks" / "demo.html").read_text()


def test_a_published_book_links_the_repository_its_issues_and_launches_the_notebooks(tmp_path):
    index, chapter = _mini_book(tmp_path, EXAMPLE)
    for page in (index, chapter):
        assert f'href="{EXAMPLE}"' in page  # the repository button
        assert f'href="{EXAMPLE}/issues/new?title=' in page  # "open an issue"
    assert "https://mybinder.org/v2/gh/example-org/fedtl-course/main?urlpath=" in chapter
    colab = "https://colab.research.google.com/github/example-org/fedtl-course/blob/main/"
    assert colab + "notebooks/demo.ipynb" in chapter


def test_an_unpublished_book_shows_no_repository_issue_or_launch_link(tmp_path):
    index, chapter = _mini_book(tmp_path, "")
    for page in (index, chapter):
        for link in ("mybinder.org", "colab.research.google.com", "github.com", "/issues/new"):
            assert link not in page, link
        assert 'href=""' not in page and 'href="/issues' not in page  # no broken link either

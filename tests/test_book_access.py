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

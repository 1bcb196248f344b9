"""Repository link and launch buttons from one setting: ``repository.url`` in ``_config.yml``.

Set it to the public repository (``https://github.com/<owner>/<name>``) and every page gets a
repository link and an issues link, and every notebook page launch buttons for Binder and
Colab (those two only for a GitHub URL, the one host both serve). Left empty, all of them are
hidden: the book never shows a link that was not configured.
"""

from __future__ import annotations

BINDER = "https://mybinder.org"
COLAB = "https://colab.research.google.com"


def access_options(repository_url: str | None) -> dict:
    """The theme options that show or hide the repository and launch buttons for this URL."""
    url = (repository_url or "").strip()
    github = url.startswith("https://github.com/")
    return {
        "repository_url": url,
        "use_repository_button": bool(url),
        "use_issues_button": github,
        "launch_buttons": {"binderhub_url": BINDER if github else "", "colab_url": COLAB if github else "",
                           "notebook_interface": "classic", "thebe": False},
    }


def _apply(app, config) -> None:
    options = dict(config.html_theme_options or {})
    launch = dict(options.get("launch_buttons") or {})
    new = access_options(options.get("repository_url"))
    launch.update(new.pop("launch_buttons"))
    options.update(new, launch_buttons=launch)
    config.html_theme_options = options


def setup(app):
    app.connect("config-inited", _apply)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

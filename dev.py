#!/usr/bin/env python3
"""The project's tasks, needing nothing but Python 3.11+ (the README's commands).

    python3 dev.py main     # build the book, executing every notebook (embedded default, offline)
    python3 dev.py test     # the whole test suite (extra arguments go to pytest)
                            # (--quick: only tests that execute no notebook and train briefly)
    python3 dev.py run      # one federated run from the command line (args go to the CLI)
    python3 dev.py lab      # JupyterLab on notebooks/ with the "Python (fedtl)" kernel
                            # (--no-browser; --check sets everything up and starts no server)
    python3 dev.py publish URL  # the course's public address: book buttons + notebooks' install cell
    python3 dev.py classroom <step>  # grade a class with nbgrader (teacher's guide; --help)

Each task first creates or updates the virtual environment ``.venv`` from the pinned
``requirements.txt`` / ``requirements-lock.txt`` (only when they changed since last time).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
PINS = ("requirements.txt", "requirements-lock.txt", "pyproject.toml")
LAB_PINS = ("requirements-lab.txt", "requirements-lock.txt")
KERNEL_NAME, KERNEL_DISPLAY = "fedtl", "Python (fedtl)"
# pytest-xdist workers: two on the project's 2 cores (TensorFlow's small models leave a core
# half idle, and the deployment tests mostly wait), at most four on a bigger machine.
WORKERS = min(4, max(2, os.cpu_count() or 2))


def sh(*cmd: str | os.PathLike, env: dict[str, str] | None = None) -> None:
    print("+", *(f"{k}={v}" for k, v in (env or {}).items()), " ".join(map(str, cmd)), flush=True)
    subprocess.run([str(c) for c in cmd], cwd=ROOT, check=True, env={**os.environ, **(env or {})})


def ensure_venv() -> None:
    """Create ``.venv`` if needed and install the pinned set when the pins changed."""
    if sys.version_info < (3, 11):  # noqa: UP036 (dev.py runs on whatever python3 is there)
        sys.exit(f"fedtl needs Python 3.11 or newer, this is {sys.version.split()[0]}")
    if not PY.exists():
        sh(sys.executable, "-m", "venv", VENV)
    digest = hashlib.sha256(b"".join((ROOT / p).read_bytes() for p in PINS)).hexdigest()
    stamp = VENV / ".fedtl-installed"
    if stamp.exists() and stamp.read_text() == digest:
        return
    sh(PY, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    sh(PY, "-m", "pip", "install", "--quiet", "-r", "requirements.txt",
       "-c", "requirements-lock.txt")
    sh(PY, "-m", "pip", "install", "--quiet", "--no-deps", "-e", ".")
    # Strip notebook outputs on commit (.gitattributes names the filter). Only in a main checkout:
    # a `git worktree` shares .git/config, and its own venv's path there breaks every other tree
    # once that worktree is removed.
    if (ROOT / ".git").is_dir():
        sh(BIN / "nbstripout", "--install")
    stamp.write_text(digest)


def copy_mathjax() -> None:
    """Put MathJax (from the django-static-mathjax wheel) where the book's pages load it."""
    dest = ROOT / "book" / "_static" / "mathjax"
    if (dest / "tex-chtml.js").exists():
        return
    src = subprocess.run([str(PY), "-c", "import mathjax, pathlib; print(pathlib.Path("
                          "mathjax.__file__).parent / 'static' / 'mathjax' / 'es5')"],
                         capture_output=True, text=True, check=True).stdout.strip()
    shutil.copytree(src, dest, dirs_exist_ok=True)


def drop_stale_execution_cache() -> None:
    """Jupyter's cache keys on a notebook's own code; the helpers' code matters too.

    When any file of ``fedtl_helpers`` changed since the last build, forget the executed
    notebooks so that no page shows outputs of older helper code. Prose-only rebuilds stay fast.
    """
    cache = ROOT / "_build" / ".jupyter_cache"
    files = sorted((ROOT / "fedtl_helpers").rglob("*"))
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in files
                                     if p.is_file() and "__pycache__" not in p.parts)).hexdigest()
    stamp = ROOT / "_build" / ".helpers-sha256"
    if cache.exists() and (not stamp.exists() or stamp.read_text() != digest):
        print("fedtl_helpers changed since the last build: re-executing every notebook")
        shutil.rmtree(cache)
        # Sphinx keeps each page's parsed outputs (doctrees) and re-reads only pages whose source
        # changed: without this, a notebook re-executed with new helper code kept its old figures.
        shutil.rmtree(ROOT / "_build" / ".doctrees", ignore_errors=True)
    stamp.parent.mkdir(exist_ok=True)
    stamp.write_text(digest)


def book(args: list[str]) -> None:
    """Build the book: every notebook executed (cached), warnings are errors."""
    copy_mathjax()
    drop_stale_execution_cache()
    sh(BIN / "jupyter-book", "build", ".", "-W", "--keep-going", *args)
    print(f"The book is at {ROOT / '_build' / 'html' / 'index.html'}")


# Debian packages the tests need, by the command that shows they are there: a headless browser
# for the screenshot tests, `ip` for the multi-host tests' network namespaces.
SYSTEM_PACKAGES = {"chromium": "chromium", "ip": "iproute2"}


def install_system_packages() -> None:
    """Install (as root, with apt-get) the Debian packages of ``SYSTEM_PACKAGES`` that are missing."""
    missing = [pkg for command, pkg in SYSTEM_PACKAGES.items() if not shutil.which(command)]
    if not missing or os.name == "nt" or not shutil.which("apt-get"):
        return
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        print(f"note: not root, so {', '.join(missing)} not installed; the tests that need them will skip")
        return
    sh("apt-get", "update", "-qq")
    sh("apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing)


def test(args: list[str]) -> None:
    """The suite: nbval runs every notebook once, the book build reuses those runs (README, "Tests").

    Without arguments, three steps: everything but the book on ``WORKERS`` pytest-xdist workers
    (a notebook's cells stay together on one worker, in order); the committed records' re-runs
    again on the other kernel path (as on another CPU); then the book build, which needs every
    notebook in the execution cache. With pytest arguments, one ordinary ordered run.
    ``--quick`` deselects the tests marked ``slow`` (every notebook cell, the book build, long
    training): the edit-test loop, in under 3 minutes on 2 cores.

    Every step runs on oneDNN's kernels (``TF_ENABLE_ONEDNN_OPTS=1``) unless the caller sets the
    variable: TensorFlow's default on CPUs with AVX-512 VNNI, and about twice as fast for training
    on the AMD EPYC machines where the default is off (README, "Times"). The records' re-runs then
    run once more with ``=0``, so both kernel paths are checked on every machine.
    """
    path = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1")
    kernels = {"TF_ENABLE_ONEDNN_OPTS": path}
    parallel = ["-n", str(WORKERS), "--dist", "loadfile"]
    if "--quick" in args:
        sh(PY, "-m", "pytest", *parallel, "-m", "not slow", *[a for a in args if a != "--quick"], env=kernels)
        return
    install_system_packages()
    copy_mathjax()
    # --durations: the log names the slowest tests, so the time budget (README, "Tests") is checked
    if args:
        sh(PY, "-m", "pytest", "--durations=25", *args, env=kernels)
        return
    failed = []
    try:
        sh(PY, "-m", "pytest", *parallel, "--durations=25", "--ignore=tests/test_book.py", env=kernels)
    except subprocess.CalledProcessError as e:  # still build the book: its checks tell more
        failed.append(f"the suite (exit {e.returncode})")
    cached = [] if failed else ["--notebooks-cached"]  # nbval ran every notebook: execute none
    other = "0" if path == "1" else "1"
    try:  # the records' re-runs again on the other kernels: as on another CPU
        sh(PY, "-m", "pytest", *parallel, "tests/test_results.py", "-k", "reproduces",
           env={"TF_ENABLE_ONEDNN_OPTS": other})
    except subprocess.CalledProcessError as e:
        failed.append(f"the re-runs with TF_ENABLE_ONEDNN_OPTS={other} (exit {e.returncode})")
    try:
        sh(PY, "-m", "pytest", "tests/test_book.py", *cached, env=kernels)
    except subprocess.CalledProcessError as e:
        failed.append(f"the book (exit {e.returncode})")
    if failed:
        sys.exit("failed: " + " and ".join(failed))


def run(args: list[str]) -> None:
    """A federated transfer-learning run on the embedded default, from the command line."""
    sh(PY, "-m", "fedtl_helpers", "run", "--out", "runs/default", *args)


# The first code cell of every notebook (tag "install-check"): a notebook opened outside the
# course's environment (downloaded, on Colab or Binder) fails with instructions, not a bare
# ModuleNotFoundError. It names the course's public address, the one setting `repository.url`
# of _config.yml, which `python3 dev.py publish URL` writes into the config and every notebook.
INSTALL_CHECK_TAG = "install-check"
_INSTALL_HEAD = """\
# This notebook needs the course's helper package, fedtl_helpers (see the README).
import importlib.util

"""
_INSTALL_NO_URL = """\
if importlib.util.find_spec("fedtl_helpers") is None:
    raise ModuleNotFoundError(
        "This notebook needs the course's helper package fedtl_helpers, which lives in the course "
        "repository (linked at the top of the book's pages, or ask your teacher for it). In a copy of "
        "it run `python3 dev.py lab --check` once (it creates .venv with everything and registers the "
        "'Python (fedtl)' kernel; then choose that kernel) or `pip install -e .` in your own "
        "environment, then restart this notebook's kernel.")"""
_INSTALL_URL = """\
COURSE = "{url}"  # the course repository
if importlib.util.find_spec("fedtl_helpers") is None:
    raise ModuleNotFoundError(
        f"This notebook needs the course's helper package fedtl_helpers, from the course repository "
        f"{{COURSE}}. In a clone of it (`git clone {{COURSE}}`) run `python3 dev.py lab --check` once (it "
        "creates .venv with everything and registers the 'Python (fedtl)' kernel; then choose that "
        "kernel) or `pip install -e .` in your own environment; on Colab or Binder run "
        f"`%pip install git+{{COURSE}}`. Then restart this notebook's kernel.")"""


def install_check(url: str) -> str:
    """The install-check cell's code for the course published at ``url`` ("" = not published)."""
    return _INSTALL_HEAD + (_INSTALL_URL.format(url=url) if url else _INSTALL_NO_URL)


_URL_LINE = r"^repository:\n(?:[ \t].*\n)*?[ \t]+url:[ \t]*"  # up to the value of repository.url


def course_url(root: Path = ROOT) -> str:
    """``repository.url`` of ``_config.yml``: the course's public address, "" until published."""
    import re

    found = re.search(_URL_LINE + r"\"([^\"]*)\"", (root / "_config.yml").read_text(), re.M)
    if found is None:
        raise ValueError("_config.yml has no `repository:` block with a quoted `url:` line")
    return found.group(1)


def publish(url: str, root: Path = ROOT) -> list[Path]:
    """Set the course's public address: ``repository.url`` in ``_config.yml`` (the book's
    repository, issue and launch buttons) and the install-check cell of every notebook.
    ``url`` is an ``https://`` address or "" (unpublished: no button, no link). Returns the
    files changed."""
    import re

    url = url.strip().rstrip("/")
    if url and not re.fullmatch(r"https://[A-Za-z0-9.-]+(:[0-9]+)?(/[A-Za-z0-9._~%-]+)+", url):
        raise ValueError(f"url={url!r} is invalid: allowed an https:// address of the repository "
                         "(e.g. https://github.com/<owner>/<name>), or \"\" to unpublish")
    changed = []
    config = root / "_config.yml"
    old = course_url(root)
    text = config.read_text()
    new = re.sub(f"({_URL_LINE})" + r"\"[^\"]*\"", lambda m: f'{m.group(1)}"{url}"', text, count=1,
                 flags=re.M)
    if new != text:
        _write_atomic(config, new)
        changed.append(config)
    for nb_path in sorted((root / "notebooks").rglob("*.ipynb")):
        if ".ipynb_checkpoints" in nb_path.parts:
            continue
        raw = nb_path.read_text(encoding="utf-8")
        nb = json.loads(raw)
        cells = [c for c in nb["cells"] if c["cell_type"] == "code"
                 and INSTALL_CHECK_TAG in c.get("metadata", {}).get("tags", [])]
        if not cells:
            raise ValueError(f"{nb_path} has no cell tagged {INSTALL_CHECK_TAG!r}")
        source = install_check(url)
        for cell in cells:
            cell["source"] = source.splitlines(keepends=True)
        out = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
        if out != raw:
            _write_atomic(nb_path, out)
            changed.append(nb_path)
    print(f"course address: {old or '(none)'} -> {url or '(none)'}; {len(changed)} files changed")
    return changed


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def publish_task(args: list[str]) -> None:
    """``python3 dev.py publish URL``: the course's public address (README, "Publishing")."""
    if len(args) != 1:
        sys.exit("usage: python3 dev.py publish URL   "
                 '(URL: https://github.com/<owner>/<name>, or "" to unpublish)')
    try:
        publish(args[0])
    except ValueError as e:
        sys.exit(f"error: {e}")


def register_kernel(python: str | os.PathLike, prefix: str | os.PathLike) -> Path:
    """Register ``python`` as the Jupyter kernel "fedtl" ("Python (fedtl)") under ``prefix``.

    ``prefix`` is the environment (``.venv``): the kernelspec lands in
    ``<prefix>/share/jupyter/kernels/fedtl`` and runs exactly this interpreter, so it needs no
    activation and disappears with the environment. Returns the kernelspec folder.
    """
    sh(python, "-m", "ipykernel", "install", "--prefix", prefix, "--name", KERNEL_NAME,
       "--display-name", KERNEL_DISPLAY)
    return Path(prefix) / "share" / "jupyter" / "kernels" / KERNEL_NAME


def listed_kernels(python: str | os.PathLike, env: dict | None = None) -> dict:
    """``jupyter kernelspec list --json`` as the given interpreter sees it: name -> spec.

    Runs the command's own module with ``python``, so no other Jupyter on the PATH answers.
    """
    out = subprocess.run([str(python), "-m", "jupyter_client.kernelspecapp", "list", "--json"], cwd=ROOT,
                         capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out)["kernelspecs"]


def check_kernel(python: str | os.PathLike, env: dict | None = None) -> str:
    """Raise unless Jupyter lists the "fedtl" kernel and it runs ``python``; return its folder."""
    spec = listed_kernels(python, env).get(KERNEL_NAME)
    if spec is None:
        raise RuntimeError(f"`jupyter kernelspec list` does not show the {KERNEL_NAME!r} kernel")
    argv = spec["spec"]["argv"]
    if Path(argv[0]).absolute() != Path(python).absolute():
        raise RuntimeError(f"the {KERNEL_NAME!r} kernel runs {argv[0]}, not {python}")
    return spec["resource_dir"]


def lab(args: list[str]) -> None:
    """JupyterLab on ``notebooks/``: installs requirements-lab.txt once, registers the kernel.

    The notebooks' own kernelspec stays the generic ``python3``: in a JupyterLab started here
    that *is* this environment's Python, the book build and papermill need no registration, and
    new notebooks default to "Python (fedtl)" (the same interpreter, under a name that other
    front ends, e.g. an editor's notebook view, list with this environment).
    """
    digest = hashlib.sha256(b"".join((ROOT / p).read_bytes() for p in LAB_PINS)).hexdigest()
    stamp = VENV / ".fedtl-lab-installed"
    if not stamp.exists() or stamp.read_text() != digest:
        sh(PY, "-m", "pip", "install", "--quiet", "-r", "requirements-lab.txt", "-c", "requirements-lock.txt")
        stamp.write_text(digest)
    register_kernel(PY, VENV)
    where = check_kernel(PY)
    print(f"kernel {KERNEL_NAME!r} ({KERNEL_DISPLAY}) registered at {where}")
    if "--check" in args:
        sh(BIN / "jupyter-lab", "--version")
        print("lab ready: python3 dev.py lab starts it")
        return
    # Containers and classroom images often run as root, which JupyterLab refuses without this.
    root = ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    try:
        sh(BIN / "jupyter-lab", f"--ServerApp.root_dir={ROOT / 'notebooks'}",
           f"--MappingKernelManager.default_kernel_name={KERNEL_NAME}", *root, *args)
    except KeyboardInterrupt:  # Ctrl-C is how a lab session ends
        print("JupyterLab stopped")


def classroom(args: list[str]) -> None:
    """Grade a class with nbgrader, one step per command (``--help``; the teacher's guide).

    nbgrader gets its own environment, ``.venv-classroom`` (requirements-classroom.txt), made on
    first use; the graded notebooks run in ``.venv``. The logic is in classroom/ (``python -m classroom``).
    """
    sh(PY, "-m", "classroom", *args)


TASKS = {"main": book, "test": test, "run": run, "lab": lab, "publish": publish_task,
         "classroom": classroom}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in TASKS:
        sys.exit(f"usage: python3 dev.py {{{','.join(TASKS)}}} [args...]")
    if sys.argv[1] != "publish":  # plain text edits: no environment needed
        ensure_venv()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow C++ log lines are noise here
    try:
        TASKS[sys.argv[1]](sys.argv[2:])
    except subprocess.CalledProcessError as e:
        sys.exit(e.returncode)

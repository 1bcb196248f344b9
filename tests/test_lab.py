"""``python3 dev.py lab``: the "fedtl" kernel is registered, listed and usable by name.

Runs without JupyterLab (``ipykernel`` and ``jupyter_client`` are in the main environment) and
without touching the real environment: the kernelspec goes under a temporary prefix.
"""

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import dev  # noqa: E402  (the project's task file)


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("prefix")
    folder = dev.register_kernel(sys.executable, prefix)
    env = {**os.environ, "JUPYTER_PATH": str(prefix / "share" / "jupyter")}
    return prefix, folder, env


def test_kernelspec_runs_this_interpreter_under_the_course_name(registered):
    prefix, folder, _ = registered
    spec = json.loads((folder / "kernel.json").read_text())
    assert folder == prefix / "share" / "jupyter" / "kernels" / "fedtl"
    assert spec["display_name"] == "Python (fedtl)"
    assert spec["argv"][0] == sys.executable and "ipykernel_launcher" in spec["argv"]


def test_jupyter_lists_the_kernel_and_check_kernel_agrees(registered):
    prefix, folder, env = registered
    assert "fedtl" in dev.listed_kernels(sys.executable, env)
    assert Path(dev.check_kernel(sys.executable, env)) == folder


def test_check_kernel_fails_when_it_is_not_registered(tmp_path):
    env = {**os.environ, "JUPYTER_PATH": str(tmp_path)}
    if "fedtl" in dev.listed_kernels(sys.executable, env):
        pytest.skip("a 'fedtl' kernel is registered in this environment already")
    with pytest.raises(RuntimeError, match="does not show the 'fedtl' kernel"):
        dev.check_kernel(sys.executable, env)


def test_a_notebook_runs_on_the_kernel_by_name(registered, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    _, _, env = registered
    monkeypatch.setenv("JUPYTER_PATH", env["JUPYTER_PATH"])
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import sys, fedtl_helpers\nprint(sys.executable)")])
    NotebookClient(nb, kernel_name="fedtl", timeout=120,
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    assert nb.cells[0].outputs[0]["text"].strip() == sys.executable


def test_lab_pins_stay_within_the_lock():
    """requirements-lab.txt only adds packages: it pins nothing the lock pins differently."""
    def pins(name):
        out = {}
        for line in (ROOT / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if "==" in line:
                pkg, version = line.split("==")
                out[pkg.strip().lower().replace("_", "-")] = version.strip()
        return out

    lock, lab = pins("requirements-lock.txt"), pins("requirements-lab.txt")
    assert "jupyterlab" in lab
    clashes = {p: (v, lock[p]) for p, v in lab.items() if p in lock and lock[p] != v}
    assert not clashes, f"requirements-lab.txt pins differ from the lock: {clashes}"

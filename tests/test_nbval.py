"""nbval as this suite runs it: a changed reference output fails, other cells only have to run.

Runs pytest with the suite's own plugin (``tests/conftest.py``) on a small notebook written here,
stored the way git stores the book's notebooks (nbstripout removes execution counts).
"""

import os
import subprocess
import sys
from pathlib import Path

import nbformat
from conftest import REFERENCE_TAG, SLOW, is_reference
from nbformat.v4 import new_code_cell, new_notebook, new_output

HERE = Path(__file__).resolve().parent


def reference_cell(source: str, stored: str):
    cell = new_code_cell(source, metadata={"tags": [REFERENCE_TAG], "keep_output": True})
    cell.outputs = [new_output("stream", name="stdout", text=stored)]
    return cell


def test_changed_reference_output_fails_and_the_rest_passes(tmp_path):
    nb = new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                               "language": "python"}})
    nb.cells = [
        reference_cell("print(sum([1, 2, 3]))", "6\n"),                      # matches
        reference_cell("print(sum([1, 2, 3]))", "7\n"),                      # the reference was changed
        reference_cell("import os\nprint(os.path.expanduser('~') + '/data')", "/home/someone/data\n"),
        new_code_cell("import time\nprint(time.time())"),                    # executed, not compared
    ]
    path = tmp_path / "small.ipynb"
    nbformat.write(nb, path)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "--nbval-lax",
                           "-p", "no:cacheprovider", "-q", "--rootdir", str(tmp_path), str(path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)])})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "1 failed, 3 passed" in out, out
    assert "small.ipynb::Cell 1" in out and "Cell outputs differ" in out, out  # the changed one, only
    assert "small.ipynb::Cell 0" not in out.split("short test summary")[-1]


def test_reference_cells_are_what_nbstripout_keeps():
    """nbstripout (the git filter) keeps exactly the outputs of cells nbval compares."""
    from nbstripout import strip_output

    nb = new_notebook(cells=[reference_cell("print(6)", "6\n"), new_code_cell("print(1)")])
    nb.cells[1].outputs = [new_output("stream", name="stdout", text="1\n")]
    for cell in nb.cells:
        cell.execution_count = 3
    stripped = strip_output(nb, keep_output=None, keep_count=False, keep_id=True)
    assert [is_reference(c) for c in stripped.cells] == [True, False]
    assert stripped.cells[0].outputs[0].text == "6\n" and stripped.cells[1].outputs == []
    assert [c.execution_count for c in stripped.cells] == [None, None]  # what the plugin gives back


def test_every_test_marked_slow_exists():
    """A renamed or removed test must leave the `slow` list too, or --quick would run it."""
    import ast

    for module, names in SLOW.items():
        tree = ast.parse((HERE / module).read_text())
        defined = {f.name for f in tree.body if isinstance(f, ast.FunctionDef)}
        missing = [n for n in names if n != "*" and n not in defined]
        assert not missing, f"tests/conftest.py SLOW names {missing} that {module} no longer defines"

"""Every notebook runs end to end with papermill at tiny sizes (parameters injected).

The book build (tests/test_book.py) executes every notebook with its classroom defaults; this
test checks the other promise: that the ``parameters`` cell is the notebook's whole interface,
so a notebook still runs, top to bottom, with other values.
"""

from pathlib import Path

import papermill as pm
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
TINY = {"n_train": 800, "n_test": 300, "rounds": 1, "epochs": 1, "local_epochs": 1,
        "drift_epochs": [1, 2], "fractions": [0.5, 1.0], "server_lrs": [1.0]}
# Chapters whose "## Exercises" section is checked (all of them once chapters 08-12 have theirs).
def test_notebooks_found():
    assert len(NOTEBOOKS) >= 7


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_with_injected_parameters(path, tmp_path):
    declared = pm.inspect_notebook(str(path))
    assert declared, f"{path.name} has no cell tagged 'parameters'"
    params = {k: v for k, v in TINY.items() if k in declared}
    out = tmp_path / path.name
    pm.execute_notebook(str(path), str(out), parameters=params, kernel_name="python3",
                        progress_bar=False, cwd=str(ROOT))
    assert out.is_file()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean_and_well_formed(path):
    """Outputs are stripped (the book executes them); the chapter has the course's shape."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "strip outputs (nbstripout)"
    assert "parameters" in code[0].metadata.get("tags", []), "first code cell must be tagged parameters"
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for heading in ("## Overview", "## Prerequisites", "## Summary", "## What's next"):
        assert heading in text, f"{path.name} lacks {heading!r}"
    at = [text.find(h) for h in ("## Summary", "## Exercises", "## What's next")]
    assert at[1] >= 0 and at[0] < at[1] < at[2], f"{path.name}: '## Exercises' goes after Summary"
    assert "fedtl_helpers" in "\n".join(c.source for c in code)


def test_case_study_without_cifar_archive_stops_with_the_loaders_message(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.delenv("FEDTL_DATA_DIR", raising=False)
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(str(ROOT / "notebooks" / "13_case_study.ipynb"), str(tmp_path / "out.ipynb"),
                            parameters={"dataset": "cifar10", "data_dir": str(tmp_path)},
                            kernel_name="python3", progress_bar=False, cwd=str(ROOT))
    assert err.value.ename == "FileNotFoundError"
    assert "CIFAR-10 not found" in err.value.evalue and "cifar-10-python.tar.gz" in err.value.evalue


def test_case_study_writes_metrics_and_resumes(tmp_path):
    out = tmp_path / "run"
    params = {"n_train": 600, "n_test": 200, "rounds": 1, "strategy": "head", "output_dir": str(out)}
    pm.execute_notebook(str(ROOT / "notebooks" / "13_case_study.ipynb"), str(tmp_path / "a.ipynb"),
                        parameters=params, kernel_name="python3", progress_bar=False, cwd=str(ROOT))
    import json

    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["round"] for r in metrics["per_round"]] == [0, 1]
    assert 0 <= metrics["final"]["test_accuracy"] <= 1 and "shapes" in metrics["final"]["dataset"]
    assert (out / "checkpoint.npz").is_file() and (out / "history.json").is_file()


def test_case_study_runs_on_cifar10_in_the_real_format(tmp_path, monkeypatch):
    """dataset="cifar10" reads the official layout (a small extracted folder the test writes)."""
    from test_data import write_folder  # builds cifar-10-batches-py/ exactly as the official files

    write_folder(tmp_path)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    out = tmp_path / "run"
    pm.execute_notebook(str(ROOT / "notebooks" / "13_case_study.ipynb"), str(tmp_path / "c.ipynb"),
                        parameters={"dataset": "cifar10", "data_dir": str(tmp_path), "n_train": None,
                                    "n_test": None, "rounds": 1, "strategy": "head",
                                    "output_dir": str(out)},
                        kernel_name="python3", progress_bar=False, cwd=str(ROOT))
    import json

    final = json.loads((out / "metrics.json").read_text())["final"]
    assert final["dataset"].startswith("cifar10 (official extracted folder at")

"""Grid runner (chapter "Running experiments") on a tiny notebook that needs no TensorFlow."""

import csv
import json
import math
import os
import re
import shutil
import socket
from pathlib import Path

import nbformat
import papermill
import pytest
import yaml

from fedtl_helpers.workflow import experiments as ex

NOTEBOOK = Path(__file__).parent / "data" / "tiny_experiment.ipynb"
GRID_2X2 = {"name": "tiny", "notebook": str(NOTEBOOK), "fixed": {"label": "b"},
            "grid": {"rounds": [2, 3], "lr": [0.5, 1.0]}}


def write_grid(directory: Path, spec: dict) -> Path:
    path = directory / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run(directory: Path, spec: dict) -> tuple[Path, list[str]]:
    lines: list[str] = []
    run_dir = ex.run_grid(write_grid(directory, spec), out_root=directory / "runs", progress=lines.append)
    return run_dir, lines


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """The 2x2 grid, run once for the module; tests that change it work on a copy."""
    run_dir, lines = run(tmp_path_factory.mktemp("grid"), GRID_2X2)
    assert all(" done in " in line for line in lines), lines
    return run_dir


def copy_of(finished: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "runs" / "tiny"))


# --- pure functions -------------------------------------------------------------------------------

def test_expand_grid_is_the_cartesian_product_in_sorted_key_order():
    runs = ex.expand({"grid": {"b": ["x", "y"], "a": [1, 2]}, "fixed": {"c": True}})
    assert runs == [{"c": True, "a": 1, "b": "x"}, {"c": True, "a": 1, "b": "y"},
                    {"c": True, "a": 2, "b": "x"}, {"c": True, "a": 2, "b": "y"}]


def test_expand_runs_list_as_given_with_fixed_merged():
    runs = ex.expand({"runs": [{"a": 2}, {"a": 1}], "fixed": {"z": 0}})
    assert runs == [{"z": 0, "a": 2}, {"z": 0, "a": 1}]
    assert ex.expand({"grid": {"a": [1]}, "runs": [{"a": 5}]}) == [{"a": 1}, {"a": 5}]


@pytest.mark.parametrize("spec, match", [
    ({}, "grid"),
    ({"grid": {"a": 3}}, "grid.a"),
    ({"grid": {"a": [1]}, "fixed": {"a": 2}}, "both fixed and varied"),
])
def test_expand_rejects_bad_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        ex.expand(spec)


def test_run_id_is_stable_readable_distinct_and_filesystem_safe():
    a = ex.run_id({"weights": "builtin", "rounds": 3})
    assert a == ex.run_id({"rounds": 3, "weights": "builtin"})
    assert re.fullmatch(r"rounds=3__weights=builtin__[0-9a-f]{8}", a)
    assert a != ex.run_id({"weights": "builtin", "rounds": 4})
    weird = ex.run_id({"path": "../a b/c:d", "xs": [1, 2], "n": None})
    assert re.fullmatch(r"[A-Za-z0-9._=-]+", weird) and "/" not in weird
    assert ex.run_id({"a": "x/y"}) != ex.run_id({"a": "x y"})  # same readable part, different hash


# --- validation before anything runs --------------------------------------------------------------

def test_typo_in_parameter_name_is_caught_before_any_run(tmp_path):
    path = write_grid(tmp_path, {**GRID_2X2, "grid": {"round": [2, 3]}})
    with pytest.raises(ValueError, match=r"unknown parameter 'round'.*did you mean 'rounds'.*output_dir"):
        ex.run_grid(path, out_root=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("params, name", [
    ({"rounds": "three"}, "rounds"), ({"rounds": 2.5}, "rounds"), ({"rounds": True}, "rounds"),
    ({"fail": 1}, "fail"), ({"label": 3}, "label"), ({"output_dir": "/tmp/x"}, "output_dir"),
])
def test_wrong_type_or_reserved_parameter_is_rejected(params, name):
    with pytest.raises(ValueError, match=name):
        ex.check_parameters(NOTEBOOK, [params])


def test_int_is_accepted_for_a_float_parameter():
    ex.check_parameters(NOTEBOOK, [{"lr": 1, "rounds": 2, "label": "x", "fail": False}])


# --- running a grid -------------------------------------------------------------------------------

def test_grid_writes_notebooks_results_and_summary(finished):
    ids = {ex.run_id({"label": "b", "rounds": r, "lr": lr}) for r in (2, 3) for lr in (0.5, 1.0)}
    assert {p.stem for p in finished.glob("*.ipynb")} == ids
    assert {p.stem for p in finished.glob("*.json")} == ids
    record = json.loads((finished / f"{ex.run_id({'label': 'b', 'rounds': 3, 'lr': 0.5})}.json").read_text())
    assert set(record) == {"run_id", "params", "final", "per_round", "seconds", "notebook"}
    assert [p["round"] for p in record["per_round"]] == [1, 2, 3]
    with open(finished / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {"run_id", "rounds", "lr", "label", "test_accuracy"} <= set(rows[0])
    for row in rows:
        expected = 1 - 0.5 * math.exp(-float(row["lr"]) * int(row["rounds"]))
        assert float(row["test_accuracy"]) == pytest.approx(expected)
    assert (finished / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_skips_finished_runs(finished, tmp_path, monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError("papermill was called for a finished run")

    copy_of(finished, tmp_path)
    monkeypatch.setattr(papermill, "execute_notebook", must_not_run)
    _, lines = run(tmp_path, GRID_2X2)
    assert len(lines) == 4 and all(line.endswith("skip (finished)") for line in lines), lines
    assert lines[0].startswith("[1/4] ")


def test_failed_run_leaves_no_result_and_the_grid_goes_on(tmp_path):
    spec = {"name": "tiny", "notebook": str(NOTEBOOK), "fixed": {"rounds": 2},
            "runs": [{"fail": True}, {"fail": False}]}
    bad, good = ex.run_id({"rounds": 2, "fail": True}), ex.run_id({"rounds": 2, "fail": False})
    lines: list[str] = []
    with pytest.raises(RuntimeError, match=re.escape(bad)):
        ex.run_grid(write_grid(tmp_path, spec), out_root=tmp_path / "runs", progress=lines.append)
    run_dir = tmp_path / "runs" / "tiny"
    assert not (run_dir / f"{bad}.json").exists() and not (run_dir / f"{bad}.ipynb").exists()
    assert (run_dir / f"{good}.json").exists()
    assert "FAILED: RuntimeError: asked to fail" in lines[0] and " done in " in lines[1]
    assert len(ex.collect(run_dir)) == 1


def test_missing_metrics_counts_as_failed(tmp_path, monkeypatch):
    monkeypatch.setattr(papermill, "execute_notebook", lambda src, dst, **kw: shutil.copy(src, dst))
    spec = {"name": "tiny", "notebook": str(NOTEBOOK), "runs": [{"rounds": 1}]}
    lines: list[str] = []
    with pytest.raises(RuntimeError, match="1 of 1 runs failed"):
        ex.run_grid(write_grid(tmp_path, spec), out_root=tmp_path / "runs", progress=lines.append)
    assert "no metrics.json" in lines[0]
    assert not list((tmp_path / "runs" / "tiny").glob("*.json"))


def test_deleted_result_is_the_only_run_redone(finished, tmp_path):
    run_dir = copy_of(finished, tmp_path)
    victim = ex.run_id({"label": "b", "rounds": 2, "lr": 1.0})
    (run_dir / f"{victim}.json").unlink()
    _, lines = run(tmp_path, GRID_2X2)
    assert [line for line in lines if " done in " in line] == [line for line in lines if victim in line]
    assert sum(line.endswith("skip (finished)") for line in lines) == 3
    assert (run_dir / f"{victim}.json").exists()


def test_interrupted_run_is_redone(finished, tmp_path):
    run_dir = copy_of(finished, tmp_path)
    victim = ex.run_id({"label": "b", "rounds": 3, "lr": 1.0})
    (run_dir / f"{victim}.json").unlink()
    (run_dir / f"{victim}.ipynb").write_text('{"cells": [')  # half-written notebook
    (run_dir / f".{victim}.partial.ipynb").write_text("{")
    (run_dir / f"{victim}.out" / "metrics.json").write_text('{"final": {"test_accuracy": -1}}')  # stale
    _, lines = run(tmp_path, GRID_2X2)
    assert sum(" done in " in line for line in lines) == 1
    record = json.loads((run_dir / f"{victim}.json").read_text())
    assert record["final"]["test_accuracy"] == pytest.approx(1 - 0.5 * math.exp(-3.0))
    nbformat.validate(nbformat.read(run_dir / f"{victim}.ipynb", as_version=4))
    assert not (run_dir / f".{victim}.partial.ipynb").exists()


# --- command line ---------------------------------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    ({"grid": {"lrr": [0.1]}}, "unknown parameter 'lrr'"),
    ({"grid": {"rounds": ["three"]}}, "'rounds'='three' should be int"),
    ({"colour": "red"}, "unknown key(s) colour"),
    ({"name": "../escape"}, "name='../escape'"),
    ({"notebook": "nope.ipynb"}, "'nope.ipynb' not found"),
    ({"grid": {}}, "non-empty 'grid' or 'runs'"),
])
def test_cli_rejects_bad_grid_with_exit_code_2(tmp_path, capsys, change, message):
    path = write_grid(tmp_path, {**GRID_2X2, **change})
    assert ex.main(["experiments", "run", str(path), "--out", str(tmp_path / "runs")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_cli_rejects_invalid_yaml(tmp_path, capsys):
    path = tmp_path / "grid.yaml"
    path.write_text("name: [unclosed\nruns: 3\n")
    assert ex.main(["experiments", "run", str(path)]) == 2
    err = capsys.readouterr().err
    (line,) = err.splitlines()  # PyYAML's own message is eight lines
    assert line == (f"error: {path}: not valid YAML: expected ',' or ']', but got ':' at line 2, "
                    "column 5 (while parsing a flow sequence)"), line


def test_cli_summary_rewrites_csv_and_png(finished, tmp_path, capsys):
    run_dir = copy_of(finished, tmp_path)
    (run_dir / "summary.csv").unlink()
    assert ex.main(["experiments", "summary", str(run_dir)]) == 0
    assert (run_dir / "summary.csv").read_text().count("\n") == 5


# --- checked up front, one runner per folder, Ctrl-C ----------------------------------------------

CASE_STUDY = Path(__file__).resolve().parent.parent / "notebooks" / "13_case_study.ipynb"


@pytest.mark.parametrize("change, message", [
    ({"grid": {"strategy": ["full", "all"]}}, "run 2 (strategy=all__"),
    ({"grid": {"strategy": ["full", "all"]}}, "ExperimentConfig.strategy='all' is invalid"),
    ({"fixed": {"partition": "dirichlet"}}, "ExperimentConfig.alpha=None is invalid"),  # needs alpha
    ({"grid": {"learning_rate": [0.01, float("inf")]}}, "learning_rate=inf"),
    ({"grid": {"num_clients": [5, 100]}, "fixed": {"n_train": 50}}, "num_clients=100"),
])
def test_grid_values_are_checked_against_the_config_before_any_run(tmp_path, capsys, change, message):
    spec = {"name": "cfg", "notebook": str(CASE_STUDY), "grid": {"seed": [0, 1]}, **change}
    path = write_grid(tmp_path, spec)
    assert ex.main(["experiments", "run", str(path), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()  # nothing ran


def test_a_notebook_without_config_parameters_is_not_config_checked():
    ex.check_config({"lr": {"default": "0.5"}, "label": {"default": "'a'"}}, {"lr": -1.0}, "run 1")
    with pytest.raises(ValueError, match=r"run 1: ExperimentConfig\.rounds=-1"):
        ex.check_config({"rounds": {"default": "3"}}, {"rounds": -1}, "run 1")


def test_second_grid_runner_on_the_same_folder_is_refused(tmp_path, capsys):
    run_dir = tmp_path / "runs" / "tiny"
    run_dir.mkdir(parents=True)
    (run_dir / ".fedtl.lock").write_text(json.dumps(
        {"pid": os.getpid(), "hostname": socket.gethostname(), "what": "grid runner for grid.yaml"}))
    path = write_grid(tmp_path, GRID_2X2)
    assert ex.main(["experiments", "run", str(path), "--out", str(tmp_path / "runs")]) == 2
    assert f"in use by pid {os.getpid()}" in capsys.readouterr().err
    assert sorted(p.name for p in run_dir.iterdir()) == [".fedtl.lock"]  # no run started


def _interrupt_second_run(monkeypatch, exception: BaseException):
    """``_run_one`` finishes the first run (a minimal record) and is interrupted in the second."""
    calls = []

    def fake(notebook, params, run_dir, rid, kernel_name):
        calls.append(rid)
        if len(calls) == 2:
            raise exception
        record = {"run_id": rid, "params": params, "final": {"test_accuracy": 0.5}, "per_round": []}
        (run_dir / f"{rid}.json").write_text(json.dumps(record))
        return {**record, "seconds": 0.0}

    monkeypatch.setattr(ex, "_run_one", fake)
    return calls


def _interrupt_inside_c_code() -> SystemError:
    """Ctrl-C landing inside a C call (NumPy's ``__array__`` under TensorFlow) surfaces like this."""
    try:
        try:
            raise KeyboardInterrupt("signal 2")
        except KeyboardInterrupt as e:
            raise SystemError("<built-in method __array__> returned a result with an exception set") from e
    except SystemError as e:
        return e


@pytest.mark.parametrize("make", [KeyboardInterrupt, _interrupt_inside_c_code], ids=["plain", "inside-c"])
def test_ctrl_c_says_what_was_kept_and_how_to_resume(tmp_path, capsys, monkeypatch, make):
    calls = _interrupt_second_run(monkeypatch, make())
    path = write_grid(tmp_path, GRID_2X2)
    out = str(tmp_path / "runs")
    assert ex.main(["experiments", "run", str(path), "--out", out]) == 130
    err = capsys.readouterr().err
    assert "stopped after 1 of 4 runs finished" in err and "Traceback" not in err
    assert f"Resume with: python -m fedtl_helpers experiments run {path} --out {out}" in err
    assert len(calls) == 2 and not (tmp_path / "runs" / "tiny" / ".fedtl.lock").exists()


def test_ctrl_c_that_reached_the_kernel_first_stops_the_grid(tmp_path, monkeypatch):
    error = RuntimeError("kernel interrupted")
    error.ename = "KeyboardInterrupt"  # what papermill's execution error carries
    calls = _interrupt_second_run(monkeypatch, error)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, GRID_2X2)
    assert len(calls) == 2  # not recorded as a failed run with the grid going on


@pytest.mark.parametrize("notebook", [NOTEBOOK, CASE_STUDY], ids=lambda p: p.name)
def test_parameters_are_read_as_papermill_reads_them(notebook):
    assert ex.declared_parameters(notebook) == {
        k: {"default": v["default"], "inferred_type_name": v["inferred_type_name"]}
        for k, v in papermill.inspect_notebook(str(notebook)).items()}


def test_annotated_parameters_keep_their_type(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("rounds: int = 3\nlabel = 'a'  # comment\nx, y = 1, 2",
                                          metadata={"tags": ["parameters"]})]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    assert ex.declared_parameters(path) == {
        "rounds": {"default": "3", "inferred_type_name": "int"},
        "label": {"default": "'a'", "inferred_type_name": "None"}}


@pytest.mark.parametrize("grid", sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.yaml")))
def test_every_committed_grid_passes_the_checks_made_before_any_run(grid):
    spec = ex.load_grid(grid)
    ex.check_parameters(spec.notebook, spec.runs)  # names, types and ExperimentConfig's rules


def test_a_digits_grid_must_size_its_data_to_the_fixed_split(tmp_path, capsys):
    spec = {"name": "d", "notebook": str(CASE_STUDY), "fixed": {"dataset": "digits"}, "grid": {"seed": [0]}}
    assert ex.main(["experiments", "run", str(write_grid(tmp_path, spec)), "--out", str(tmp_path / "r")]) == 2
    assert "n_train=3000 is invalid: allowed None (all) or an integer in [1, 1297]" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()

"""The tuned benchmarks share one argument check (``benchmarks/_args.py``) and all apply it."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
TUNED = ("bench_strategies", "bench_dp", "bench_compression", "bench_robust")


@pytest.mark.parametrize("name", TUNED)
@pytest.mark.parametrize("bad", [["--last", "0"], ["--rounds", "2", "--last", "3"], ["--tune-rounds", "0"]])
def test_tuned_benchmarks_refuse_bad_rounds_before_any_work(name, bad):
    out = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), *bad], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2
    assert "need --rounds >= --last >= 1, --tune-rounds >= --last and at least one seed" in out.stderr


def _run_optimizer_bench(*args):
    return subprocess.run([sys.executable, str(BENCH / "bench_optimizer.py"), *args], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("bad", [["--last", "0"], ["--rounds", "2", "--last", "3"], ["--seeds"]])
def test_optimizer_benchmark_refuses_bad_rounds_before_any_work(bad):
    out = _run_optimizer_bench(*bad)
    assert out.returncode == 2
    assert "need --rounds >= --last >= 1" in out.stderr or "expected at least one argument" in out.stderr


@pytest.mark.parametrize("grid, message", [
    (["1e-3", "1e-2"], "allowed at least 3 increasing positive learning rates"),
    (["1e-2", "1e-3", "1e-1"], "allowed at least 3 increasing positive learning rates"),
    (["-1", "1e-3", "1e-2", "1e-1"], "allowed at least 3 increasing positive learning rates"),
    (["3e-4", "1e-3", "3e-3"], "--grid must contain every arm's starting rate (sgd=0.1, sgd_momentum=0.01)"),
])
def test_optimizer_benchmark_refuses_a_bad_grid_before_any_work(grid, message):
    out = _run_optimizer_bench("--grid", *grid)
    assert out.returncode == 2 and message in out.stderr
    assert "Traceback" not in out.stderr  # refused by the parser, before TensorFlow is imported


def _widen(monkeypatch):
    """The one widening rule (``workflow.tuning``) that bench_optimizer and bench_peft both run."""
    from fedtl_helpers.workflow.tuning import widen_until_interior

    return widen_until_interior


@pytest.mark.parametrize("peak, start, tried, best, edge", [
    (1e-2, 1e-2, [3e-3, 1e-2, 3e-2], 1e-2, False),                  # interior at once: 3 trials
    (1e-1, 1e-2, [3e-3, 1e-2, 3e-2, 1e-1, 3e-1], 1e-1, False),      # widened upwards twice
    (1e-4, 1e-3, [1e-4, 3e-4, 1e-3, 3e-3], 1e-4, True),             # stops on the grid's end
])
def test_widening_stops_when_the_choice_is_interior(peak, start, tried, best, edge, monkeypatch):
    grid = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
    calls = []

    def score(lr):  # one peak on the log scale
        calls.append(lr)
        return -abs(np.log10(lr) - np.log10(peak))

    chosen, scores, at_edge = _widen(monkeypatch)(grid, start, score)
    assert (chosen, at_edge) == (best, edge)
    assert list(scores) == tried and sorted(calls) == tried  # each rate scored once, in grid order


def _run(script, *args):
    return subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("bad, message", [
    (["--rounds", "5", "--last", "3"], "--rounds 5 is invalid: allowed at least 2 x --last (6)"),
    (["--switch-round", "11"], "--switch-round 11 is invalid: allowed 1 to --rounds - 2"),
    (["--fedbn-holdout", "1.5"], "--fedbn-holdout 1.5 is invalid: allowed a fraction in (0, 1)"),
    (["--grid", "3e-3", "1e-3", "1e-2"],
     "--grid must be increasing and contain every strategy's starting rate"),
    (["--last", "0"], "need --rounds >= --last >= 1"),
])
def test_peft_benchmark_refuses_bad_settings_before_any_work(bad, message):
    out = _run("bench_peft.py", *bad)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr  # the parser's own exit, before TensorFlow is imported


def test_kernel_paths_refuses_an_unknown_rerun_and_a_merge_without_a_file(tmp_path):
    out = _run("bench_kernel_paths.py", "--only", "bench_x/y")
    assert out.returncode == 2
    assert "--only bench_x/y is invalid: allowed any of bench_transfer/pretrained" in out.stderr
    out = _run("bench_kernel_paths.py", "--only", "bench_peft/lora", "--out", str(tmp_path / "none.json"))
    assert out.returncode == 2 and "--only merges into an existing --out file" in out.stderr


@pytest.mark.parametrize("name, bad, start", [
    ("bench_strategies", ["--grid", "1e-2", "3e-2", "1e-1"], "0.001, 0.003"),
    ("bench_robust", ["--grid", "1e-3", "1e-2"], "0.003"),
    ("bench_dp", ["--server-grid", "1", "2", "4"], "0.5"),
    ("bench_transfer", ["--grid", "1e-2", "1e-3", "3e-3"], "all present"),  # not increasing
    ("bench_noniid", ["--gap-grid", "3e-3", "1e-2"], "0.001"),
])
def test_widened_benchmarks_refuse_a_grid_without_their_starts_before_any_work(name, bad, start):
    """Every arm widens on one shared grid from its start: a grid that cannot hold the starts
    is refused by the parser, naming the flag, before TensorFlow is imported."""
    out = _run(f"{name}.py", *bad)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert (f"{bad[0]} {' '.join(f'{float(v):g}' for v in bad[1:])} is invalid: allowed an increasing grid "
            f"that contains every arm's starting value ({start})") in out.stderr


def test_noniid_gap_trials_cover_the_tail_the_runs_report():
    """Part 3's trials default to the run's horizon; shorter than the reported tail is refused."""
    out = _run("bench_noniid.py", "--parts", "3", "--gap-tail", "5", "--gap-tune-rounds", "4")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "--gap-tune-rounds 4 is invalid: allowed >= --gap-tail (5)" in out.stderr
    out = _run("bench_noniid.py", "--parts", "3", "--resume-dir", __file__)
    assert out.returncode == 2 and f"--resume-dir={__file__!r} is a file: allowed a folder" in out.stderr

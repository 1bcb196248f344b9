"""Grids on a Dask cluster (chapter "Running experiments"): a real local cluster of 2 worker
processes, notebooks from tests/data/ that need no TensorFlow."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from fedtl_helpers.workflow import cluster
from fedtl_helpers.workflow import experiments as ex

DATA = Path(__file__).parent / "data"
TINY = DATA / "tiny_experiment.ipynb"
SLEEPY = DATA / "sleepy_experiment.ipynb"
TINY_GRID = {"name": "tiny", "notebook": str(TINY), "fixed": {"label": "b"},
             "grid": {"rounds": [1, 2], "lr": [0.5, 1.0]}}
ROOT = Path(__file__).resolve().parent.parent


def write_grid(directory: Path, spec: dict, name: str = "grid.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(spec))
    return path


def numbers(run_dir: Path) -> dict:
    """Each finished run's metrics, without the timing: what must not depend on who ran it."""
    return {r["run_id"]: (r["params"], r["final"], r["per_round"]) for r in ex.collect(run_dir)}


def driver(grid: Path, out: Path, *options: str) -> subprocess.Popen:
    """The command line, as a user starts it (its own process group, as a terminal job)."""
    return subprocess.Popen([sys.executable, "-m", "fedtl_helpers", "experiments", "run", str(grid),
                             "--out", str(out), *options], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def orphans_of(pid: int) -> list[int]:
    """Kernels started by process ``pid`` (jupyter_client passes JPY_PARENT_PID) still running."""
    found = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if p.environ().get("JPY_PARENT_PID") == str(pid) and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p.pid)
    return found


# --- the rule -------------------------------------------------------------------------------------

@pytest.mark.parametrize("cores, runs, expected", [(2, 2, 1), (2, 1, 2), (16, 4, 4), (16, 3, 5), (2, 3, 1),
                                                   (1, 1, 1)])
def test_threads_per_run_shares_the_hosts_cores(cores, runs, expected):
    assert cluster.threads_per_run(cores, runs) == expected


def test_makespan_schedules_longest_runs_first():
    assert cluster.makespan([3, 3, 2, 2, 2], 2) == 7.0  # {3,2,2} and {3,2}
    assert cluster.makespan([5, 1, 1], 8) == 5.0  # more workers than runs: the longest run
    assert cluster.makespan([2.0] * 6, 1) == 12.0
    with pytest.raises(ValueError, match="workers=0"):
        cluster.makespan([1.0], 0)


def test_thread_env_limits_tensorflow_openmp_and_blas():
    env = cluster.thread_env(3)
    assert env["TF_NUM_INTRAOP_THREADS"] == env["OMP_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == "3"
    assert env["MKL_NUM_THREADS"] == "3" and env["TF_NUM_INTEROP_THREADS"] == "1"
    with pytest.raises(ValueError, match="threads=0"):
        cluster.thread_env(0)


@pytest.mark.parametrize("workers, scheduler, message", [
    (0, None, "--workers=0: allowed a whole number >= 1"),
    (2, "127.0.0.1:8786", "allowed one or the other"),
    (None, "not an address", "--scheduler='not an address': allowed a Dask scheduler address"),
])
def test_bad_cluster_options_are_refused_before_anything_runs(tmp_path, workers, scheduler, message):
    with pytest.raises(ValueError, match=message):
        ex.run_grid(write_grid(tmp_path, TINY_GRID), out_root=tmp_path / "runs", workers=workers,
                    scheduler=scheduler)
    assert not (tmp_path / "runs").exists()


def test_cli_refuses_workers_and_scheduler_together(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        ex.main(["experiments", "run", str(write_grid(tmp_path, TINY_GRID)), "--workers", "2",
                 "--scheduler", "127.0.0.1:1"])
    assert e.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_unreachable_scheduler_is_one_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", 2.0)
    grid = write_grid(tmp_path, TINY_GRID)
    assert ex.main(["experiments", "run", str(grid), "--out", str(tmp_path / "runs"),
                    "--scheduler", "tcp://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert "--scheduler='tcp://127.0.0.1:9': no Dask scheduler answered" in err
    assert not [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]  # nothing ran


# --- a real local cluster -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scheduler():
    """One local cluster of 2 worker processes (1 thread each) for the tests that only need one;
    --workers (which starts its own) is tested through the command line below."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as local:
        yield local.scheduler_address


def test_cluster_grid_equals_sequential_and_each_finishes_the_other(tmp_path, scheduler):
    """A grid started one way is finished the other way, with the same numbers and files."""
    grid = write_grid(tmp_path, TINY_GRID)
    seq = ex.run_grid(grid, out_root=tmp_path / "seq", progress=lambda line: None)
    lines: list[str] = []
    par = ex.run_grid(grid, out_root=tmp_path / "par", scheduler=scheduler, progress=lines.append)
    # The tiny notebook is pure Python arithmetic: equal exactly, whoever runs it.
    assert numbers(par) == numbers(seq) and len(numbers(par)) == 4
    files = sorted(p.name for p in par.iterdir() if p.name != "cluster.log")  # the cluster's own log
    assert files == sorted(p.name for p in seq.iterdir())
    assert lines[0].startswith("cluster: 2 workers, 2 runs at a time, scheduler tcp://127.0.0.1:")
    assert lines[0].endswith("; dashboard: not available (pip install 'bokeh>=3.1' to get Dask's live "
                             "dashboard)") or "; dashboard: http://127.0.0.1:" in lines[0]
    assert sum(" done in " in line for line in lines) == 4
    assert lines[-1].startswith("4/4 done, 0 running, 0 failed")

    # started sequentially, 2 runs deleted (= not finished): the cluster does only those 2
    victims = sorted(numbers(seq))[:2]
    for rid in victims:
        (seq / f"{rid}.json").unlink()
    lines.clear()
    ex.run_grid(grid, out_root=tmp_path / "seq", scheduler=scheduler, progress=lines.append)
    assert sorted(line.split(" ... ")[0].split("] ")[1] for line in lines if " done in " in line) == victims
    assert sum(line.endswith("skip (finished)") for line in lines) == 2
    assert numbers(seq) == numbers(par)

    # and the other way round: a cluster's grid finished sequentially
    (par / f"{victims[0]}.json").unlink()
    lines.clear()
    ex.run_grid(grid, out_root=tmp_path / "par", progress=lines.append)
    assert [line.split(" ... ")[0].split("] ")[1] for line in lines if " done in " in line] == [victims[0]]
    assert numbers(par) == numbers(seq)


def test_failing_run_is_reported_with_its_error_and_the_others_finish(tmp_path, scheduler):
    spec = {"name": "sleepy", "notebook": str(SLEEPY), "grid": {"seed": [0, 1, 2], "fail": [False]},
            "runs": [{"seed": 7, "fail": True}]}
    lines: list[str] = []
    bad = ex.run_id({"seed": 7, "fail": True})
    with pytest.raises(RuntimeError, match=f"1 of 4 runs failed: {bad}"):
        ex.run_grid(write_grid(tmp_path, spec), out_root=tmp_path / "runs", scheduler=scheduler,
                    progress=lines.append)
    (failure,) = [line for line in lines if "FAILED" in line]
    assert failure.startswith(f"[4/4] {bad} ... FAILED: ValueError: seed 7 asked to fail")
    run_dir = tmp_path / "runs" / "sleepy"
    assert (run_dir / f"{bad}.failed.ipynb").exists() and not (run_dir / f"{bad}.json").exists()
    assert [r["final"]["test_accuracy"] for r in ex.collect(run_dir)] == pytest.approx([0.50, 0.51, 0.52])
    assert lines[-1].startswith("3/4 done, 0 running, 1 failed")


def test_existing_scheduler_runs_the_grid_with_each_run_given_its_share_of_the_cores(tmp_path, scheduler):
    """2 workers on this host: every run's thread variables are this host's cores // 2."""
    from dask.system import CPU_COUNT

    spec = {"name": "sleepy", "notebook": str(SLEEPY), "grid": {"seed": [3, 4]}}
    lines: list[str] = []
    run_dir = ex.run_grid(write_grid(tmp_path, spec), out_root=tmp_path / "runs", scheduler=scheduler,
                          progress=lines.append)
    assert [r["final"]["test_accuracy"] for r in ex.collect(run_dir)] == pytest.approx([0.53, 0.54])
    assert lines[0].startswith(f"cluster: 2 workers, 2 runs at a time, scheduler {scheduler}")
    share = str(max(1, CPU_COUNT // 2))
    for out in run_dir.glob("*.out"):
        env = json.loads((out / "env.json").read_text())
        assert env == {"OMP_NUM_THREADS": share, "OPENBLAS_NUM_THREADS": share, "MKL_NUM_THREADS": share,
                       "TF_NUM_INTRAOP_THREADS": share, "TF_NUM_INTEROP_THREADS": "1"}


def test_worker_that_cannot_see_the_folder_is_refused(tmp_path, scheduler, monkeypatch):
    # client.run ships the replaced check by value (cloudpickle), so the workers run this one
    monkeypatch.setattr(cluster, "_worker_check", lambda paths: "cannot see /shared/runs")
    spec = {"name": "sleepy", "notebook": str(SLEEPY), "grid": {"seed": [3]}}
    with pytest.raises(ValueError, match="cannot see /shared/runs .*2 of 2 workers.*shared file system"):
        ex.run_grid(write_grid(tmp_path, spec), out_root=tmp_path / "runs", scheduler=scheduler,
                    progress=lambda line: None)
    assert not list((tmp_path / "runs").rglob("started-*"))  # nothing ran


def test_killed_worker_loses_only_its_run_which_is_run_again(tmp_path):
    """SIGKILL the worker running seed 0 mid-run: Dask gives the run to a worker again, the grid
    completes, and the numbers are those of the sequential run."""
    spec = {"name": "sleepy", "notebook": str(SLEEPY), "runs": [{"seed": 0, "seconds": 4.0}, {"seed": 1},
                                                                  {"seed": 2}, {"seed": 3}]}
    grid = write_grid(tmp_path, spec)
    out = tmp_path / "runs"
    run_dir = out / "sleepy"
    proc = driver(grid, out, "--workers", "2")
    started = run_dir / "started-0.txt"
    try:
        # 180 s: the cluster, a worker and its Jupyter kernel start first; 60 s was not enough once
        # in the full suite beside nbval's TensorFlow notebooks (9 s on a quiet machine)
        wait_for(lambda: started.exists() and started.read_text().endswith("\n"), 180, "seed 0 to start")
        victim = int(started.read_text().split()[0])
        os.kill(victim, signal.SIGKILL)
        output, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, output
    attempts = started.read_text().split()
    assert len(attempts) == 2 and attempts[0] == str(victim) != attempts[1]  # run again, elsewhere
    assert not psutil.pid_exists(victim) or psutil.Process(victim).status() == psutil.STATUS_ZOMBIE
    assert orphans_of(victim) == []  # its kernel noticed its parent died and ended
    for seed in (1, 2, 3):  # the other runs were not redone
        assert len((run_dir / f"started-{seed}.txt").read_text().split()) == 1
    # the numbers a sequential run gives (the notebook's arithmetic; equality with a sequential
    # run of the same notebook is checked in test_cluster_grid_equals_sequential_...)
    assert sorted(r["final"]["test_accuracy"] for r in ex.collect(run_dir)) == \
        pytest.approx([0.50, 0.51, 0.52, 0.53])
    assert "Traceback" not in output and "distributed." not in output, output  # its log, not the terminal
    assert f"Worker process {victim} was killed by signal 9" in (run_dir / "cluster.log").read_text()
    assert "1 worker(s) died, their runs given to others (cluster.log)" in output, output


def test_a_run_that_kills_every_worker_it_gets_is_reported_and_the_others_finish(tmp_path):
    """Dask gives a dead worker's run to another worker up to allowed-failures times (3 by
    default, 1 here to keep the test short), then the run is reported failed; the rest finish."""
    import dask

    spec = {"name": "sleepy", "notebook": str(SLEEPY), "runs": [{"seed": 0, "kill_worker": True},
                                                                  {"seed": 1}, {"seed": 2}]}
    bad = ex.run_id({"seed": 0, "kill_worker": True})
    lines: list[str] = []
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        with pytest.raises(RuntimeError, match=f"1 of 3 runs failed: {bad}"):
            ex.run_grid(write_grid(tmp_path, spec), out_root=tmp_path / "runs", workers=2,
                        progress=lines.append)
    run_dir = tmp_path / "runs" / "sleepy"
    assert len((run_dir / "started-0.txt").read_text().split()) == 2  # tried on 2 workers
    (failure,) = [line for line in lines if "FAILED" in line]
    assert failure.startswith(f"[1/3] {bad} ... FAILED: KilledWorker:"), failure
    assert [r["final"]["test_accuracy"] for r in ex.collect(run_dir)] == pytest.approx([0.51, 0.52])
    assert "2 worker(s) died" in lines[-1] and lines[-1].startswith("2/3 done, 0 running, 1 failed")


def test_ctrl_c_leaves_no_process_and_a_second_driver_is_refused(tmp_path):
    spec = {"name": "sleepy", "notebook": str(SLEEPY), "grid": {"seed": [0, 1, 2]},
            "fixed": {"seconds": 60.0}}
    grid = write_grid(tmp_path, spec)
    out = tmp_path / "runs"
    run_dir = out / "sleepy"
    proc = driver(grid, out, "--workers", "2")
    try:
        wait_for(lambda: len(list(run_dir.glob("started-*.txt"))) == 2, 60, "two runs to start")
        children = psutil.Process(proc.pid).children(recursive=True)
        kernels = [p for p in children if "ipykernel" in " ".join(p.cmdline())]
        assert len(kernels) == 2 and len(children) >= 4  # 2 workers, their 2 kernels (+ helpers)

        # a second driver on the same grid, while the first holds it
        second = subprocess.run([sys.executable, "-m", "fedtl_helpers", "experiments", "run", str(grid),
                                 "--out", str(out), "--workers", "2"], cwd=ROOT, capture_output=True,
                                text=True, timeout=60)
        assert second.returncode == 2 and f"in use by pid {proc.pid}" in second.stderr, second.stderr

        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends the driver
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, output
    assert "stopped after 0 of 3 runs finished" in output and "--workers=2" in output, output
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], [(p.pid, p.cmdline()) for p in alive]
    assert not (run_dir / ".fedtl.lock").exists() and not list(run_dir.glob("*.json"))


def test_terminal_shows_only_the_runners_lines(tmp_path):
    """Kernel warnings and TensorFlow-style C++ log lines go to each run's .log file."""
    spec = {"name": "sleepy", "notebook": str(SLEEPY), "grid": {"seed": [0, 1]}}
    grid = write_grid(tmp_path, spec)
    for options in ([], ["--workers", "2"]):
        out = tmp_path / f"runs{len(options)}"
        result = subprocess.run([sys.executable, "-m", "fedtl_helpers", "experiments", "run", str(grid),
                                 "--out", str(out), *options], cwd=ROOT, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr
        terminal = (result.stdout + result.stderr).splitlines()
        runner = ("[", "cluster: ", str(out))
        progress_line = [line for line in terminal if " done, " in line and " running, " in line]
        assert [line for line in terminal if not line.startswith(runner) and line not in progress_line] == []
        noise = ("cpu_feature_guard", "Kernel is running", "WARNING", "I0000")
        assert not any(word in line for line in terminal for word in noise)
        logs = [p for p in (out / "sleepy").glob("*.log") if p.name != "cluster.log"]
        assert len(logs) == 2
        for log in logs:
            text = log.read_text()
            assert "cpu_feature_guard.cc" in text and "Kernel is running over TCP without encryption" in text

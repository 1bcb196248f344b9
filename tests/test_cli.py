"""The command line (``python -m fedtl_helpers run``): every user error up front, in one line,
exit 2; no silent overwrite; Ctrl-C and divergence keep a valid checkpoint; fast start."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fedtl_helpers.__main__ import main
from fedtl_helpers.core import storage
from fedtl_helpers.core.config import ExperimentConfig

REPO = Path(__file__).resolve().parent.parent
TINY = ["--num-clients", "2", "--n-train", "200", "--n-test", "100", "--strategy", "head",
        "--weights", "none", "--quiet"]


def run_cli(args, capsys):
    """Exit status, stdout and stderr of the command line (argparse's errors exit directly)."""
    try:
        code = main(args)
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_bad_value_is_rejected_naming_the_field(capsys):
    assert main(["run", "--client-fraction", "1.5", "--out", "/nonexistent/never"]) == 2
    err = capsys.readouterr().err
    assert "client_fraction=1.5" in err and "(0, 1]" in err


def saved_run(out: Path, rounds_done: int = 1, **config) -> ExperimentConfig:
    """A checkpoint as run_federated writes it, without training (tests of the checks)."""
    cfg = ExperimentConfig(num_clients=2, n_train=200, n_test=100, strategy="head", weights=None,
                           rounds=rounds_done, **config)
    storage.save_checkpoint(out, [np.zeros(2)], {"config": cfg.to_dict(), "round": rounds_done,
                                                 "history": {"meta": {}, "rows": []}, "seen": []})
    return cfg


@pytest.mark.parametrize("args, names", [
    (["--learning-rate", "inf"], "learning_rate=inf"),
    (["--server-lr", "nan"], "server_lr=nan"),
    (["--partition", "dirichlet", "--alpha", "inf"], "alpha=inf"),
    (["--rounds", "x"], "--rounds"),
    (["--rounds", "1.5"], "--rounds"),
    (["--feature-cache", "yes"], "--feature-cache"),
    (["--strategy", "all"], "strategy='all'"),
    (["--nmu-clients", "3"], "--nmu-clients"),
    (["--weights", "missing.weights.h5"], "--weights='missing.weights.h5': no such file"),
    (["--dataset", "cifar10", "--data-dir", "{tmp}/nothing"], "--dataset=cifar10"),
    (["--data-sha256", "abc"], "--data-sha256='abc'"),
    (["--resume", "--overwrite"], "--resume and --overwrite"),
    (["--compression", "quantize", "--error-feedback", "true"], "error_feedback=True is invalid"),
    (["--error-feedback", "maybe"], "expected true or false or none"),
])
def test_user_errors_are_one_line_exit_2_before_any_tensorflow(args, names, tmp_path, capsys,
                                                               monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # no real CIFAR-10 is found
    monkeypatch.delenv("FEDTL_DATA_DIR", raising=False)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, _, err = run_cli(["run", *args, "--out", str(tmp_path / "out")], capsys)
    assert code == 2
    assert names in one_line_error(err)
    assert not (tmp_path / "out").exists()  # not even an empty folder is left behind


def test_a_refused_run_leaves_no_folder_it_created(tmp_path, capsys):
    """``--out`` (and its missing parents) appear only for a run that really starts."""
    out = tmp_path / "new" / "deeper"
    code, _, err = run_cli(["run", *TINY, "--weights", str(tmp_path / "missing.weights.h5"),
                            "--out", str(out)], capsys)
    assert code == 2 and "no such file" in one_line_error(err)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()  # a folder that existed before stays, empty or not
    code, _, err = run_cli(["run", *TINY, "--weights", str(tmp_path / "missing.weights.h5"),
                            "--out", str(tmp_path / "kept")], capsys)
    assert code == 2 and (tmp_path / "kept").is_dir()


def test_unusable_out_is_refused_before_training(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for out, says in ((a_file, "is a file"), (a_file / "sub", "lies under the file")):
        code, _, err = run_cli(["run", *TINY, "--out", str(out)], capsys)
        assert code == 2 and says in one_line_error(err) and "--out=" in err


def test_folder_holding_a_run_is_refused_without_resume_or_overwrite(tmp_path, capsys):
    saved_run(tmp_path)
    before = (tmp_path / storage.CHECKPOINT_NAME).read_bytes()
    code, _, err = run_cli(["run", *TINY, "--out", str(tmp_path)], capsys)
    assert code == 2 and "already holds a run" in one_line_error(err) and "--overwrite" in err
    assert (tmp_path / storage.CHECKPOINT_NAME).read_bytes() == before


def test_resume_names_every_differing_field_and_refuses_fewer_rounds(tmp_path, capsys):
    saved_run(tmp_path, rounds_done=3)
    code, _, err = run_cli(["run", *TINY, "--seed", "4", "--batch-size", "8", "--rounds", "5",
                            "--resume", "--out", str(tmp_path)], capsys)
    line = one_line_error(err)
    assert code == 2 and "batch_size: saved 32, now 8" in line and "seed: saved 0, now 4" in line
    code, _, err = run_cli(["run", *TINY, "--rounds", "2", "--resume", "--out", str(tmp_path)], capsys)
    assert code == 2 and "rounds=2 is invalid" in one_line_error(err) and ">= 3" in err


def test_live_lock_refuses_and_stale_lock_is_taken_over(tmp_path, capsys):
    lock = tmp_path / storage.LOCK_NAME
    lock.write_text(json.dumps({"pid": os.getpid(), "hostname": os.uname().nodename,
                                "what": "another run"}))
    code, _, err = run_cli(["run", *TINY, "--out", str(tmp_path)], capsys)
    assert code == 2 and f"in use by pid {os.getpid()}" in one_line_error(err)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({"pid": dead.pid, "hostname": os.uname().nodename}))
    saved_run(tmp_path)  # so that the run stops at the next check, without training
    code, _, err = run_cli(["run", *TINY, "--out", str(tmp_path)], capsys)
    assert code == 2 and "taking over a stale lock" in err and "already holds a run" in err
    assert not lock.exists()  # released when the command ended


def test_weights_that_are_not_hdf5_or_do_not_fit_are_refused(tmp_path, capsys):
    garbage = tmp_path / "garbage.weights.h5"
    garbage.write_bytes(b"not weights at all")
    code, _, err = run_cli(["run", *TINY[:-3], "--weights", str(garbage), "--out",
                            str(tmp_path / "o")], capsys)
    assert code == 2 and "is not an HDF5 file" in one_line_error(err)
    import h5py

    with h5py.File(tmp_path / "other.weights.h5", "w") as f:  # HDF5, but another architecture
        f["layers/dense/vars/0"] = np.zeros((3, 4), np.float32)
    code, _, err = run_cli(["run", *TINY[:-3], "--weights", str(tmp_path / "other.weights.h5"),
                            "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "does not fit backbone" in one_line_error(err)
    assert not (tmp_path / "o" / storage.CHECKPOINT_NAME).exists()


def test_cli_run_writes_history_and_prints_json(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", "--rounds", "1", *TINY, "--out", str(out)])
    assert code == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["weights"] == "random init" and "shapes" in last["dataset"]
    saved = json.loads((out / "history.json").read_text())
    assert [r["round"] for r in saved["rows"]] == [0, 1]
    assert (out / "checkpoint.npz").is_file() and not (out / storage.LOCK_NAME).exists()
    # Extending the run: the history's metadata names the rounds now run, and the resume.
    assert main(["run", "--rounds", "2", *TINY, "--out", str(out), "--resume"]) == 0
    saved = json.loads((out / "history.json").read_text())
    assert [r["round"] for r in saved["rows"]] == [0, 1, 2]
    assert saved["meta"]["config"]["rounds"] == 2 and saved["meta"]["resumed_after_rounds"] == [1]
    # --overwrite starts again from round 0.
    assert main(["run", "--rounds", "1", *TINY, "--out", str(out), "--overwrite"]) == 0
    saved = json.loads((out / "history.json").read_text())
    assert [r["round"] for r in saved["rows"]] == [0, 1] and "resumed_after_rounds" not in saved["meta"]


def test_diverged_round_stops_with_exit_1_and_keeps_the_last_good_checkpoint(tmp_path, capsys,
                                                                             monkeypatch):
    from fedtl_helpers.federation.server import Simulation

    calls = []
    real = Simulation.evaluate

    def evaluate(self, weights):  # rounds 0 and 1 are fine, round 2's loss is NaN
        calls.append(1)
        result = real(self, weights)
        return {**result, "loss": float("nan")} if len(calls) == 3 else result

    monkeypatch.setattr(Simulation, "evaluate", evaluate)
    code, _, err = run_cli(["run", "--rounds", "3", *TINY, "--out", str(tmp_path)], capsys)
    line = one_line_error(err)
    assert code == 1 and "diverged in round 2" in line and "holds round 1" in line
    assert storage.read_checkpoint_state(tmp_path)["round"] == 1


def test_a_test_sized_archive_is_labelled_not_official(tmp_path, capsys, monkeypatch):
    from test_data import write_archive

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.delenv("FEDTL_DATA_DIR", raising=False)
    sha = write_archive(tmp_path / "data" / "cifar-10-python.tar.gz")
    base = ["run", "--dataset", "cifar10", "--data-dir", str(tmp_path / "data"), "--n-train", "none",
            "--n-test", "none", "--num-clients", "2", "--rounds", "1", "--strategy", "head",
            "--weights", "none", "--quiet"]
    code, _, err = run_cli([*base, "--out", str(tmp_path / "a")], capsys)  # official checksum
    assert code == 2 and "not the official archive's" in one_line_error(err)
    assert "--data-sha256 skip" in err
    for option, label in ((sha, f"SHA-256 {sha[:12]}"), ("skip", "checksum not checked")):
        code, out, _ = run_cli([*base, "--data-sha256", option, "--out", str(tmp_path / option)],
                               capsys)
        assert code == 0
        dataset = json.loads(out.strip().splitlines()[-1])["dataset"]
        assert "NOT the official CIFAR-10" in dataset and label in dataset, dataset
        assert "NOT the official CIFAR-10" in out.splitlines()[0]  # the table's header
        meta = json.loads((tmp_path / option / "history.json").read_text())["meta"]
        assert "NOT the official" in meta["dataset"] and "NOT the official" in meta["describe"]


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the command line must quiet TensorFlow by itself
    return subprocess.Popen([sys.executable, "-m", "fedtl_helpers", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def test_help_and_config_errors_do_not_import_tensorflow():
    code = ("import sys; from fedtl_helpers.workflow.cli import main\n"
            "try:\n    main(['run', '--learning-rate', 'inf'])\nexcept SystemExit: pass\n"
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, check=True).stdout
    assert out.strip() == "[]"
    t0 = time.perf_counter()
    proc = _cli("--help")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "{run,experiments}" in out and err == ""
    print(f"--help answered in {time.perf_counter() - t0:.2f} s")


def test_ctrl_c_says_what_was_kept_and_how_to_resume(tmp_path):
    args = ["run", "--rounds", "500", "--num-clients", "2", "--n-train", "200", "--n-test", "100",
            "--strategy", "head", "--weights", "none", "--quiet", "--out", str(tmp_path)]
    proc = _cli(*args)
    checkpoint = tmp_path / storage.CHECKPOINT_NAME
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "oneDNN" not in err and "cuda" not in err.lower(), err
    state = storage.read_checkpoint_state(tmp_path)
    assert f"stopped after round {state['round']} of 500" in err
    assert f"--out {tmp_path} --resume" in err
    weights, _ = storage.load_checkpoint(tmp_path)  # the checkpoint is whole
    assert all(np.all(np.isfinite(w)) for w in weights)
    assert not (tmp_path / storage.LOCK_NAME).exists()


def test_ctrl_c_inside_c_code_is_a_stop_not_a_crash(tmp_path, monkeypatch, capsys):
    """A signal that lands inside TensorFlow's C code can surface as a SystemError whose cause is
    the KeyboardInterrupt (seen once in CI); it must end like any Ctrl-C: exit 130, no traceback."""
    from fedtl_helpers.federation import server

    def interrupted(*args, **kwargs):
        try:
            raise KeyboardInterrupt("signal 2")
        except KeyboardInterrupt as e:
            raise SystemError("<built-in method __array__> returned a result with an exception set") from e

    monkeypatch.setattr(server, "run_federated", interrupted)
    code = main(["run", "--rounds", "2", "--num-clients", "2", "--n-train", "100", "--n-test", "50",
                 "--strategy", "head", "--weights", "none", "--quiet", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 130 and "stopped before round 1 finished" in err and "Traceback" not in err, err
    assert not (tmp_path / storage.LOCK_NAME).exists()
    assert storage.is_interrupt(KeyboardInterrupt()) and not storage.is_interrupt(SystemError("x"))


def test_every_public_name_and_submodule_still_resolves_lazily():
    import fedtl_helpers as fl

    # 43 names of the old eager __init__ (add_scaled, nbytes, subtract removed as dead code) and
    # the one round: RoundStreams, ServerState, Stages, run_round, build_stages
    assert len(fl.__all__) == 48 and all(getattr(fl, name) is not None for name in fl.__all__)
    from fedtl_helpers.federation.server import run_federated

    assert fl.run_federated is run_federated and fl.plotting.__name__ == "fedtl_helpers.teaching.plotting"
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        fl.nope  # noqa: B018


def test_a_dp_run_says_its_epsilon_and_the_seeded_noise_warning_on_the_terminal(tmp_path, capsys):
    """Issue 31: the warning and epsilon reach the terminal at start and end, not only history.json;
    the released files lie apart from the server's private state."""
    from fedtl_helpers.transforms import privacy

    out = tmp_path / "dp"
    dp = ["--dp-clip", "0.5", "--dp-noise-multiplier", "1.0", "--client-sampling", "poisson",
          "--client-fraction", "0.5", "--aggregator", "mean"]
    code, stdout, err = run_cli(["run", "--rounds", "2", *TINY, *dp, "--out", str(out)], capsys)
    assert code == 0, err
    eps = privacy.dp_epsilon(1.0, 0.5, 2, 1e-5, num_clients=2)
    lines = err.splitlines()
    start = lines.index(next(line for line in lines if "this run will spend" in line))
    end = lines.index(next(line for line in lines if "differential privacy: spent" in line))
    assert f"epsilon = {eps:.3g} at delta = 1e-05 after 2 rounds" in lines[start] and start < end
    assert sum("WARNING: no privacy: randomness='simulation'" in line for line in lines) == 2
    assert f"{out / 'private'} holds the server's private state" in err
    assert json.loads(stdout.strip().splitlines()[-1])["final_test_accuracy"] > 0  # stdout: JSON last
    assert sorted(p.name for p in out.iterdir()) == ["history.csv", "history.json", "private"]
    # resuming finds the private checkpoint
    code, _, err = run_cli(["run", "--rounds", "3", *TINY, *dp, "--out", str(out), "--resume"], capsys)
    assert code == 0, err
    assert storage.read_checkpoint_state(out)["round"] == 3 and not (out / "checkpoint.npz").exists()
    code, stdout, err = run_cli(["run", "--rounds", "1", *TINY, "--out", str(tmp_path / "plain")], capsys)
    assert code == 0 and "differential privacy" not in err and "WARNING" not in err

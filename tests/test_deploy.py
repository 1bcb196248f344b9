"""The Flower deployment (deploy/): same numbers as the simulation, clear errors, no orphans.

The end-to-end test starts real Flower processes (a SuperLink and two SuperNodes on 127.0.0.1,
secured: TLS and SuperNode authentication; one persistent ClientApp process per node) and
compares with ``run_federated`` on the same config. The tolerance is one test image per
round (1/n_test): both runs use the same seeds and the same code, and the weights cross the
network bit for bit, so only the summation order of multi-threaded CPU kernels could differ
between processes; measured, accuracies and losses are identical.
"""

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import psutil
import pytest

from fedtl_helpers.core.config import ExperimentConfig
from fedtl_helpers.federation.server import Simulation, run_federated
from fedtl_helpers.transforms import robust

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
sys.path.insert(0, str(DEPLOY))

with warnings.catch_warnings():  # typer, imported by flwr, uses a deprecated click API
    warnings.simplefilter("ignore", DeprecationWarning)
    import run_local
    import supernode
    from fedtl_deploy.server_app import private_keras_seeds
    from fedtl_deploy.task import (
        check_partitions,
        encoded_from_records,
        encoded_to_records,
        experiment_config,
        run_config_for,
    )
    from local_federation import FLOWER_POLLS, LOOPBACK_POLLS, LocalFederation, running, strip_colours

# The deployment accepts only randomness="secure" (OS randomness for sampling and DP noise); with
# every client in every round and no DP it repeats the simulation's numbers all the same.
CONFIG = ExperimentConfig(num_clients=2, rounds=2, n_train=600, n_test=300, randomness="secure")


def free_ports(count: int) -> int:
    """A port ``p`` such that ``p .. p + count - 1`` are free on 127.0.0.1 right now."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + count < 65536 and all(_free(base + i) for i in range(count)):
            return base
    raise RuntimeError("no block of free ports found")


def _free(port: int) -> bool:
    """Nothing listens on the port (connections closing in TIME_WAIT do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def test_deployment_matches_simulation(tmp_path):
    """Secured (TLS + node authentication) and with persistent ClientApps: the simulation's History."""
    base = free_ports(3)
    feds = []
    result = run_local.run_local(CONFIG, tmp_path / "deploy", superlink_port=base,
                                 node_port=base + 1, connect_timeout=60, federation=feds, secure=True)
    rows = result["history"]["rows"]
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert result["run_status"] == "finished:completed"
    meta = result["history"]["meta"]
    assert "shapes" in meta["dataset"] and meta["weights"] == "builtin" and meta["runtime"] == "flower"
    assert sorted(meta["nodes"]) == ["0", "1"] and len(set(meta["nodes"].values())) == 2
    assert rows[-1]["test_accuracy"] > 0.3  # 10 classes: chance is 0.1
    assert all(r["clients"] == [0, 1] for r in rows[1:])

    sim = run_federated(CONFIG, progress=False).history.rows
    tolerance = 1 / CONFIG.n_test  # one test image
    print("round, deployed, simulated:", [(d["round"], d["test_accuracy"], s["test_accuracy"])
                                          for d, s in zip(rows, sim)])
    for d, s in zip(rows, sim):
        assert abs(d["test_accuracy"] - s["test_accuracy"]) <= tolerance, (d, s)
        assert d["bytes_up"] == s["bytes_up"] and (d["train_loss"] is None) == (s["train_loss"] is None)
    # Every process the launcher or Flower started is gone, and the ports are free again.
    fed = feds[0]
    assert len(fed.processes()) >= 5  # SuperLink, its SuperExec, 2 SuperNodes, 2 ClientApps at least
    assert running(fed.processes()) == []
    assert all(_free(p) for p in (base, base + 1, base + 2))
    # One ClientApp process per node ran all its messages (the query and one per round).
    for k in range(CONFIG.num_clients):
        log = (tmp_path / "deploy" / "logs" / f"clientapp-{k}.log").read_text()
        done = re.findall(r"ClientApp task done in process (\d+) \((\d+) so far\)", log)
        assert [n for _, n in done] == [str(i) for i in range(1, CONFIG.rounds + 2)], log[-2000:]
        assert len({pid for pid, _ in done}) == 1
    # The connections were TLS and the SuperLink checked node keys.
    superlink = strip_colours((tmp_path / "deploy" / "logs" / "superlink.log").read_text())
    assert f"Uvicorn running on https://127.0.0.1:{base}" in superlink
    assert "SuperNode authentication is disabled" not in superlink


@pytest.mark.slow  # starts Flower processes: 30-100 s on a loaded 2-core machine
def test_secured_superlink_refuses_unknown_and_plain_text_nodes(tmp_path):
    """Only registered keys join; a node without TLS cannot even talk to the SuperLink."""
    from credentials import make_node_key
    from cryptography.hazmat.primitives import serialization

    base = free_ports(4)
    # Flower's own flower-supernode here (its waits, FLOWER_POLLS): it starts and joins with TLS
    # and a registered key; the runs elsewhere use deploy/supernode.py, the same with waits shortened.
    with LocalFederation(tmp_path, 1, superlink_port=base, node_port=base + 1, secure=True,
                         persistent=False, connect_timeout=30, idle_poll=FLOWER_POLLS[0],
                         reply_poll=FLOWER_POLLS[1]) as fed:
        fed.start()  # SuperLink with TLS and --enable-supernode-auth, node 0 registered and online
        assert fed.procs["supernode-0"].args[0].endswith("flower-supernode")
        fed.connect_timeout = 5  # the intruders' --max-wait-time: they give up after 5 s
        stranger = make_node_key(tmp_path / "keys" / "stranger")[0]  # a valid key, never registered
        fed.start_supernode(0, "stranger", ["--root-certificates", str(fed.tls.ca_cert),
                                            "--auth-supernode-private-key", str(stranger)], port=base + 2)
        fed.start_supernode(0, "plain", ["--insecure"], port=base + 3)  # plain HTTP to a TLS port
        codes = {name: fed.procs[name].wait(timeout=90) for name in ("stranger", "plain")}
        nodes = fed.flwr("supernode", "ls")["nodes"]
        logs = {name: strip_colours(fed.logs[name].read_text())
                for name in ("superlink", "stranger", "plain")}
    assert codes["stranger"] != 0 and codes["plain"] != 0
    for name in ("stranger", "plain"):  # Flower's exit code 305: no connection to the SuperLink
        assert "could not establish a connection to the SuperLink" in logs[name], logs[name][-2000:]
    # No TLS handshake: the SuperLink drops the plain-text request. How Flower words the failed
    # attempt depends on timing ("Server disconnected without sending a response", or only
    # "Connection attempt failed" when the drop lands mid-request on a loaded machine: CI, 2026-12-06).
    assert ("Server disconnected without sending a response" in logs["plain"]
            or "Connection attempt failed" in logs["plain"]), logs["plain"][-2000:]
    assert [n["status"] for n in nodes] == ["online"]  # node 0 only
    # The SuperLink turned the stranger's key away (API error 2004, HTTP 412); plain never got in.
    pem = serialization.load_ssh_private_key(stranger.read_bytes(), None).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    refused = [line for line in logs["superlink"].splitlines() if "[ApiError:2004]" in line]
    assert len(refused) >= 1 and all(pem.splitlines()[1][:40] in line for line in refused)
    assert logs["superlink"].count('"POST /v1/fleet/activate-node HTTP/1.1" 200') == 1  # node 0
    assert running(fed.processes()) == []


def test_certificates_and_node_keys(tmp_path):
    from credentials import make_node_key, make_tls
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

    tls = make_tls(tmp_path / "certs", hosts=("127.0.0.1", "superlink.example.org"))
    ca = x509.load_pem_x509_certificate(tls.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(tls.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)  # raises if the CA did not sign it
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["superlink.example.org"]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    private, public = make_node_key(tmp_path / "keys" / "node-0")
    key = load_ssh_private_key(private.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    assert load_ssh_public_key(public.read_bytes()) == key.public_key()
    for secret in (private, tls.server_key, tmp_path / "certs" / "ca.key"):
        assert secret.stat().st_mode & 0o077 == 0  # readable by the owner only
    with pytest.raises(ValueError, match=r"hosts=\(\) is invalid"):
        make_tls(tmp_path, hosts=())
    with pytest.raises(ValueError, match="secure=True is invalid with superlink_address"):
        LocalFederation(tmp_path, 1, superlink_address="127.0.0.1:9093", secure=True)


def test_bench_deploy_summary_numbers():
    sys.path.insert(0, str(DEPLOY.parent / "benchmarks"))
    from bench_deploy import summarise

    local = [{"round": r, "seconds": s, "test_accuracy": a}
             for r, s, a in [(0, None, 0.1), (1, 5.0, 0.4), (2, 4.0, 0.5), (3, 6.0, 0.6), (4, 5.0, 0.7)]]
    remote = [{**r, "seconds": None if r["seconds"] is None else r["seconds"] + 2.5} for r in local]
    got = summarise(local, 20.0, remote, 50.0)
    assert got["deploy_round_ratio"] == 1.5 and got["deploy_overhead_s"] == 2.5  # medians 5 and 7.5
    assert got["deploy_total_ratio"] == 2.5 and got["accuracy_equal"] is True
    assert got["transport_and_polling_s"] is None  # not reported
    flower = [2.9, 2.0, 2.6, 2.4]  # per round 1..4; rounds 2 and later count
    assert summarise(local, 20.0, remote, 50.0, flower)["transport_and_polling_s"] == 2.4
    remote[2]["test_accuracy"] = 0.5 + 1e-9
    assert summarise(local, 20.0, remote, 50.0)["accuracy_equal"] is False


def test_port_in_use_is_named_and_nothing_starts(tmp_path):
    base = free_ports(4)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", base))
        taken.listen()
        feds = []
        with pytest.raises(run_local.DeploymentError,
                           match=rf"port {base} on 127\.0\.0\.1 is already in use.*--superlink-port"):
            run_local.run_local(CONFIG, tmp_path, superlink_port=base, node_port=base + 1,
                                federation=feds, secure=False)
        assert feds[0].procs == {}
        taken2 = socket.socket()
        taken2.bind(("127.0.0.1", base + 2))  # SuperNode 1's port
        taken2.listen()
        with taken2, pytest.raises(run_local.DeploymentError,
                                   match=rf"port {base + 2} .* SuperNode 1 .*--node-port"):
            run_local.run_local(CONFIG, tmp_path, superlink_port=base + 3, node_port=base + 1, secure=False)


def test_supernode_that_cannot_reach_the_superlink_stops_cleanly(tmp_path):
    base = free_ports(3)  # nothing listens on base: the "SuperLink" is unreachable
    feds = []
    t0 = time.monotonic()
    with pytest.raises(run_local.DeploymentError,
                       match=rf"supernode-\d stopped .*could not reach the SuperLink at "
                             rf"127\.0\.0\.1:{base}.*--superlink-address"):
        run_local.run_local(CONFIG, tmp_path, superlink_address=f"127.0.0.1:{base}",
                            node_port=base + 1, connect_timeout=3, federation=feds, secure=False)
    assert time.monotonic() - t0 < 60
    fed = feds[0]
    assert sorted(fed.procs) == ["clientapp-0", "clientapp-1", "supernode-0", "supernode-1"]
    assert running(fed.processes()) == []


def test_a_run_that_fails_after_it_started_is_an_error(tmp_path, monkeypatch):
    """`flwr run` reports success when the run is submitted; the ServerApp fails afterwards."""
    import fedtl_deploy.task

    monkeypatch.setattr(fedtl_deploy.task, "run_config_for", lambda c: '{"nmu_clients": 1}')
    base = free_ports(2)
    feds = []
    with pytest.raises(run_local.DeploymentError,
                       match=r"(?s)ended as finished:failed.*result file missing.*nmu_clients"):
        run_local.run_local(ExperimentConfig(num_clients=1, n_train=100, n_test=50, randomness="secure"),
                            tmp_path,
                            superlink_port=base, node_port=base + 1, federation=feds, secure=False)
    assert not (tmp_path / "result.json").exists()
    assert running(feds[0].processes()) == []


def is_supernode(cmdline: str) -> bool:
    """Flower's own SuperNode, or ``deploy/supernode.py`` (the same, its waits shortened)."""
    return "flower-supernode" in cmdline or str(DEPLOY / "supernode.py") in cmdline


def _cmdline(p: psutil.Process) -> str:
    """The command line, or "" for a process that exited since it was listed (a zombie too)."""
    try:
        return " ".join(p.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return ""


def test_an_interrupt_while_a_process_starts_waits_until_it_is_recorded():
    """Ctrl-C between fork and recording the new process would orphan it: it is held to the
    end of the block, then raised as usual."""
    from local_federation import signals_deferred

    done = []
    # Python's own Ctrl-C handler, as in the launcher (a pytest-xdist worker ignores SIGINT)
    runner = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with signals_deferred():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # a handler would have run by now
                done.append("recorded")
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    finally:
        signal.signal(signal.SIGINT, runner)
    assert done == ["recorded"]


def start_launcher(tmp_path: Path, base: int) -> tuple[subprocess.Popen, dict[int, psutil.Process]]:
    """``run_local.py`` with two SuperNodes, once every Flower process runs; and those processes."""
    # Enough rounds that the run is still going when the signal arrives (one round can finish first).
    cmd = [sys.executable, str(DEPLOY / "run_local.py"), "--randomness", "secure", "--num-clients", "2",
           "--rounds", "100",
           "--n-train", "200", "--n-test", "100", "--out", str(tmp_path),
           "--superlink-port", str(base), "--node-port", str(base + 1)]
    launcher = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    root = psutil.Process(launcher.pid)
    seen: dict[int, psutil.Process] = {}
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and launcher.poll() is None:
        for p in root.children(recursive=True):
            seen.setdefault(p.pid, p)
        names = [_cmdline(p) for p in running(seen.values())]
        if sum(is_supernode(n) for n in names) == 2 and any("superexec" in n for n in names):
            return launcher, seen
        time.sleep(0.2)
    pytest.fail(f"the federation did not start: {launcher.communicate()[0][-3000:]}")


def test_ctrl_c_stops_every_process(tmp_path):
    launcher, seen = start_launcher(tmp_path, free_ports(3))
    launcher.send_signal(signal.SIGINT)
    out, _ = launcher.communicate(timeout=60)
    assert launcher.returncode == 130, out[-3000:]
    assert "interrupted: every Flower process was stopped" in out
    assert running(seen.values()) == []


def test_initial_model_does_not_depend_on_other_threads():
    """Flower's heartbeat thread draws from Python's global random while the server builds."""
    config = ExperimentConfig(num_clients=2, n_train=100, n_test=50)
    plain = Simulation(config).model.get_weights()
    stop = threading.Event()

    def heartbeat():  # what flwr.supercore.heartbeat does, much more often
        while not stop.is_set():
            random.uniform(-0.1, 0.1)

    thread = threading.Thread(target=heartbeat)
    thread.start()
    try:
        with private_keras_seeds(config.seed):
            guarded = Simulation(config).model.get_weights()
    finally:
        stop.set()
        thread.join()
    assert all(np.array_equal(a, b) for a, b in zip(plain, guarded))


def test_run_config_round_trip_and_partition_check():
    config = ExperimentConfig(num_clients=3, rounds=4, strategy="head")
    assert experiment_config({"experiment": run_config_for(config)}) == config
    with pytest.raises(ValueError, match="ExperimentConfig has no field"):
        experiment_config({"experiment": '{"rounds": 2, "nmu_clients": 3}'})
    check_partitions({0: 11, 1: 12, 2: 13}, {3}, 3)
    with pytest.raises(ValueError, match=r"hold partitions \[0, 1\] of \[3\].*num_clients=3"):
        check_partitions({0: 11, 1: 12}, {3}, 3)  # two nodes claimed partition 1
    with pytest.raises(ValueError, match="num-partitions=2"):
        check_partitions({0: 11, 1: 12}, {2, 3}, 2)


# --- no orphans, whatever kills the launcher; leftovers found; bad options refused -------------

FAKE_LAUNCHER = """
import sys, time
sys.path.insert(0, {deploy!r})
from local_federation import LocalFederation
fed = LocalFederation({workdir!r}, 1)
fed.workdir.mkdir(parents=True, exist_ok=True)
fed._spawn("a", ["sh", "-c", "sleep 300 & sleep 300"])  # a child with a grandchild, as Flower's
fed._spawn("b", ["sleep", "300"])
print(fed.watchdog.pid, *(p.pid for p in fed.processes()), flush=True)
time.sleep(300)
"""


def test_sigkill_of_the_launcher_leaves_no_process_behind(tmp_path):
    """The watchdog sees the launcher's pipe close and stops every session it started."""
    launcher = subprocess.Popen([sys.executable, "-c", FAKE_LAUNCHER.format(
        deploy=str(DEPLOY), workdir=str(tmp_path))], stdout=subprocess.PIPE, text=True)
    watchdog, *pids = map(int, launcher.stdout.readline().split())
    procs = [psutil.Process(p) for p in pids]
    assert len(running(procs)) == 4  # sh, its two sleeps, and the other sleep
    launcher.kill()  # SIGKILL: no handler, no `finally` runs in the launcher
    launcher.wait()
    deadline = time.monotonic() + 30

    def watchdog_running() -> bool:  # it exits right after the last process it stopped
        try:
            return psutil.Process(watchdog).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    while (running(procs) or watchdog_running()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert running(procs) == []
    assert not watchdog_running()
    assert "launcher gone: stopping 4 process(es)" in (tmp_path / "logs" / "watchdog.log").read_text()


def test_leftovers_of_an_earlier_launch_are_reported_and_stopped(tmp_path):
    from local_federation import LocalFederation

    def sleeper(home: Path) -> subprocess.Popen:
        return subprocess.Popen(["sleep", "300"], env={**os.environ, "FLWR_HOME": str(home)},
                                start_new_session=True)

    ours, other = sleeper(tmp_path / "flwr_home" / "supernode-0"), sleeper(tmp_path / "elsewhere")
    try:
        notes = []
        fed = LocalFederation(tmp_path, 1, notify=notes.append)
        assert fed.stop_leftovers() == [ours.pid]
        assert ours.wait(timeout=10) is not None and other.poll() is None  # only ours
        assert len(notes) == 1 and f"left 1 process(es) running: {ours.pid} (sleep 300)" in notes[0]
        assert fed.stop_leftovers() == []
    finally:
        other.kill()
        ours.kill()
        other.wait()
        ours.wait()


@pytest.mark.parametrize("args, message", [
    (["--superlink-port", "80"], "--superlink-port=80 is invalid: allowed a port in 1024..65535"),
    (["--node-port", "65535", "--num-clients", "3"], "--node-port=65535 is invalid with 3 clients"),
    (["--superlink-port", "9095", "--node-port", "9094"], "collides with the SuperNodes' ports"),
    (["--superlink-address", "localhost"], "--superlink-address='localhost' is invalid"),
    (["--secure", "--superlink-address", "127.0.0.1:9093"],
     "--secure is invalid with --superlink-address"),
    (["--run-timeout", "inf"], "--run-timeout=inf is invalid"),
    (["--connect-timeout", "0"], "--connect-timeout=0.0 is invalid"),
    (["--idle-poll", "0"], "--idle-poll=0.0 is invalid: allowed a finite number of seconds > 0"),
    (["--reply-poll", "inf"], "--reply-poll=inf is invalid"),
    (["--learning-rate", "nan"], "learning_rate=nan is invalid"),
    (["--num-clients", "0"], "num_clients=0 is invalid"),
    (["--rounds", "two"], "argument --rounds: 'two' is invalid: allowed an integer"),
])
def test_bad_launcher_options_are_one_line_exit_2_before_anything_starts(tmp_path, capsys, args,
                                                                         message):
    try:
        code = run_local.main([*args, "--randomness", "secure", "--out", str(tmp_path / "out")])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()  # nothing started, no folder left behind


# A fresh launcher process, as a user starts it: (arguments, exit status, what its one line names)
FRESH = [
    (["--help"], 0, None),
    (["--nonsense"], 2, "--nonsense"),
    (["--rounds", "two"], 2, "--rounds"),
    (["--aggregator", "nope"], 2, "aggregator='nope'"),
    (["--learning-rate", "inf"], 2, "learning_rate=inf"),
    (["--randomness", "simulation"], 2, "randomness='simulation'"),
    (["--secure-aggregation", "true"], 2, "secure_aggregation=True"),
    (["--strategy", "lpft"], 2, "strategy='lpft'"),
    (["--superlink-port", "80"], 2, "--superlink-port=80"),
    (["--out", "{file}"], 2, "--out="),
]
# TensorFlow's and absl's start-up lines ("I0000 00:00:... port.cc:153] oneDNN custom operations",
# "WARNING: All log messages before absl::InitializeLog() ...", "cpu_feature_guard", "cudart_stub")
TF_LOG = re.compile(r"^[IWEF]\d{4} |absl::|oneDNN|cudart|cuda drivers|cpu_feature_guard|"
                    r"TensorFlow binary", re.M)


def test_a_fresh_launcher_answers_help_and_errors_without_tensorflow(tmp_path):
    """Issue 19 item 6: ``--help`` and every error needing neither data nor a model are fast
    (TensorFlow, Flower and dp-accounting are not imported) and print no TensorFlow log line."""
    a_file = tmp_path / "file"
    a_file.write_text("x")
    env = {**os.environ, "PYTHONPATH": str(DEPLOY.parent)}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the launcher must quiet TensorFlow by itself
    seconds = {}
    for args, status, names in FRESH:
        args = [a.replace("{file}", str(a_file)) for a in args]
        args += [] if "--randomness" in args else ["--randomness", "secure"]
        args += [] if "--out" in args else ["--out", str(tmp_path / "out")]
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(DEPLOY / "run_local.py"), *args],
                              capture_output=True, text=True, env=env, timeout=120)
        seconds[" ".join(args[:2])] = round(time.perf_counter() - t0, 2)
        assert proc.returncode == status, (args, proc.stderr)
        assert not TF_LOG.search(proc.stderr + proc.stdout), proc.stderr
        if status == 0:
            assert proc.stderr == "" and proc.stdout.startswith("usage: python deploy/run_local.py")
        else:
            (line,) = proc.stderr.splitlines()
            assert line.startswith("error: ") and names in line, line
    assert not (tmp_path / "out").exists()
    print("seconds per fresh launcher:", seconds)  # shown with pytest -s; not asserted (shared CPUs)
    # The deployability check itself, in a fresh process: nothing heavy was imported for it.
    code = ("import sys; sys.path.insert(0, {deploy!r}); import run_local\n"
            "assert run_local.main(['--randomness', 'secure', '--strategy', 'lora', "
            "'--out', {out!r}]) == 2\n"
            "print(sorted(m for m in ('tensorflow', 'keras', 'flwr', 'dp_accounting') "
            "if m in sys.modules))").format(deploy=str(DEPLOY), out=str(tmp_path / "out"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.stdout.strip() == "[]" and "strategy='lora'" in proc.stderr, proc.stderr


def test_launcher_refuses_an_existing_result_a_locked_folder_and_a_file(tmp_path, capsys):
    (tmp_path / "result.json").write_text("{}")
    assert run_local.main(["--randomness", "secure", "--out", str(tmp_path)]) == 2
    assert "already holds a result (result.json): allowed --overwrite" in capsys.readouterr().err
    (tmp_path / "result.json").unlink()
    (tmp_path / ".fedtl.lock").write_text(json.dumps(
        {"pid": os.getpid(), "hostname": socket.gethostname(), "what": "deploy/run_local.py"}))
    assert run_local.main(["--randomness", "secure", "--out", str(tmp_path)]) == 2
    assert f"in use by pid {os.getpid()}" in capsys.readouterr().err
    assert run_local.main(["--randomness", "secure", "--out", str(tmp_path / ".fedtl.lock")]) == 2
    assert "is a file" in capsys.readouterr().err
    assert not (tmp_path / "logs").exists()


def test_sigkill_of_the_real_launcher_stops_the_flower_processes(tmp_path):
    """End to end with Flower: SuperLink, SuperNodes and what they started all end."""
    base = free_ports(3)
    launcher, seen = start_launcher(tmp_path, base)
    launcher.kill()
    launcher.wait()
    deadline = time.monotonic() + 60
    while running(seen.values()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert running(seen.values()) == [], (tmp_path / "logs" / "watchdog.log").read_text()
    assert all(_free(p) for p in (base, base + 1, base + 2))


# One combination runs end to end over real Flower processes (30-90 s of CPU): robust
# aggregation, a node that sends NaN (dropped by the ServerApp, which used to hang on it under
# DP), top-k with error feedback (sparse indices and values over the wire) and a server
# optimiser with state. The whole feature matrix runs in process through
# the same ServerApp/ClientApp code in test_conformance.py (Krum needs 5 SuperNodes, so it is
# covered there only), and every encoding's records round-trip bit for bit below.
E2E = {
    "median+nan+topk_ef+fedadam": ExperimentConfig(
        randomness="secure", num_clients=3, rounds=2, n_train=450, n_test=200, strategy="head",
        aggregator="median", attack="nan", malicious_fraction=0.34, compression="topk",
        sparsity=0.1, server_optimizer="adam", server_lr=0.01),
}


@pytest.mark.parametrize("name", sorted(E2E))
def test_deployment_runs_the_simulations_stages_end_to_end(name, tmp_path):
    config = E2E[name]
    base = free_ports(config.num_clients + 1)
    feds: list = []
    result = run_local.run_local(config, tmp_path / "deploy", superlink_port=base, node_port=base + 1,
                                 connect_timeout=60, federation=feds, secure=False)
    # the launcher's default: Flower's SuperNode through deploy/supernode.py, its waits shortened
    commands = [" ".join(map(str, p.args)) for n, p in feds[0].procs.items() if n.startswith("supernode")]
    assert len(commands) == config.num_clients
    assert all(f"supernode.py --idle-poll {LOOPBACK_POLLS[0]}" in c for c in commands), commands
    rows = result["history"]["rows"]
    sim = run_federated(config, progress=False).history.rows
    assert [r["round"] for r in rows] == [r["round"] for r in sim] == [0, 1, 2]
    for d, s in zip(rows, sim):
        assert abs(d["test_accuracy"] - s["test_accuracy"]) <= 1e-6, (d, s)
        assert abs(d["test_loss"] - s["test_loss"]) <= 1e-6, (d, s)
        for key in ("clients", "dropped", "bytes_up", "bytes_down"):
            assert d[key] == s[key], (key, d, s)
    assert rows[-1]["test_accuracy"] > rows[0]["test_accuracy"]
    if config.attack == "nan":  # the NaN node's update was dropped in every round, named
        (bad,) = robust.malicious_clients(config.num_clients, config.malicious_fraction, config.seed)
        assert [r["dropped"] for r in rows] == [[], [bad], [bad]]


# What secure aggregation cannot run (robust rules, DP, compression, two nodes) is refused
# before anything starts: tests/test_deploy_secagg.py.


def test_encoded_updates_cross_the_wire_bit_for_bit():
    from fedtl_helpers.transforms import compression
    rng = np.random.default_rng(0)
    delta = [rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=5).astype(np.float32)]
    for encoded in (compression.encode_dense(delta), compression.encode_float16(delta),
                    compression.encode_quantized(delta, 4, stochastic=True, rng=rng),
                    compression.encode_topk(delta, 0.3, value_bits=8)):
        back = encoded_from_records(*encoded_to_records(encoded))
        assert (back.kind, back.shapes, back.nbytes, back.meta) == (
            encoded.kind, encoded.shapes, encoded.nbytes, encoded.meta)
        for a, b in zip(compression.decode(back), compression.decode(encoded)):
            assert a.dtype == b.dtype and np.array_equal(a, b)


def test_supernode_wrapper_shortens_exactly_flowers_two_waits(monkeypatch):
    from flwr.supernode import start_client_internal as loop

    slept = []
    monkeypatch.setattr(supernode.time, "sleep", slept.append)
    clock = supernode.LoopClock(idle_poll=0.1, reply_poll=0.05)
    for seconds in (3, 0.5, 1, 0.2):
        clock.sleep(seconds)
    assert slept == [0.1, 0.05, 1, 0.2] and clock.monotonic is time.monotonic
    monkeypatch.setattr(loop, "time", loop.time)  # restored after the test
    supernode.patch_loop(0.1, 0.05)  # the pinned Flower still has both sleeps where we patch them
    assert isinstance(loop.time, supernode.LoopClock) and loop.time.waits == {3: 0.1, 0.5: 0.05}
    assert supernode.split_options(["--idle-poll", "0.2", "--insecure", "--reply-poll=0.01"]) == (
        0.2, 0.01, ["--insecure"])
    assert supernode.split_options(["--superlink", "x:1"]) == (3.0, 0.5, ["--superlink", "x:1"])
    with pytest.raises(SystemExit, match="--idle-poll='0' is invalid: allowed a number of seconds > 0"):
        supernode.split_options(["--idle-poll", "0"])
    monkeypatch.setattr(supernode, "version", lambda name: "1.43.0")
    with pytest.raises(SystemExit, match="written for flwr 1.42.0 and found 1.43.0"):
        supernode.patch_loop(0.1, 0.05)


def test_tls_and_node_keys_are_the_default_from_python_too():
    """The command line turns TLS and node authentication on unless --insecure; so does
    ``run_local()`` unless ``secure=False`` is written out (the loopback tests above do)."""
    import inspect

    assert inspect.signature(run_local.run_local).parameters["secure"].default is True


def test_a_dp_deployment_says_its_epsilon_on_the_terminal(tmp_path, capsys):
    """Issue 31: the privacy spent is printed when a DP deployment starts (and ends), not only
    written into result.json. Here the run is refused right after (--out is a file)."""
    from fedtl_helpers.transforms import privacy

    target = tmp_path / "a-file"
    target.write_text("")
    code = run_local.main(["--num-clients", "4", "--rounds", "3", "--dp-clip", "0.5",
                           "--dp-noise-multiplier", "1.0", "--client-sampling", "poisson",
                           "--client-fraction", "0.5", "--aggregator", "mean", "--out", str(target)])
    err = capsys.readouterr().err
    eps = privacy.dp_epsilon(1.0, 0.5, 3, 1e-5, num_clients=4)
    assert code == 2 and f"this run will spend epsilon = {eps:.3g} at delta = 1e-05 after 3 rounds" in err
    assert "WARNING" not in err  # the deployment's noise comes from the OS (randomness='secure')
    assert err.index("this run will spend") < err.index("error: ")

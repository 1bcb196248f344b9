"""Run the Flower app on this machine: one SuperLink, N SuperNodes, one run, its result.

Chapter: "From simulation to deployment". ::

    python deploy/run_local.py --num-clients 2 --rounds 3 --n-train 1000 --out runs/deploy

Every ``ExperimentConfig`` field is an option, as for ``python -m fedtl_helpers run``. The
processes are real Flower processes talking over sockets, on 127.0.0.1 only and in insecure
mode (no TLS): a local rehearsal of a deployment (the chapter shows the commands for real
machines). The launcher

1. checks the config and that the ports are free (``--superlink-port``, ``--node-port``:
   SuperNode ``k`` uses ``node-port + k``) before starting anything;
2. starts ``flower-superlink`` and ``flower-supernode`` processes, each in its own process
   group, logging to ``<out>/logs/``; SuperNode ``k`` holds partition ``k`` of the data
   (node config ``partition-id=k num-partitions=N``);
3. waits until every SuperNode is online, submits the app with ``flwr run`` and follows the
   run's status with ``flwr ls`` (``flwr run`` can print ``"success": false`` and still exit 0,
   and a run can fail after it started: only the final status ``finished:completed`` *and* the
   ServerApp's result file count as success);
4. stops every process it started (terminate, then kill after ``--stop-timeout`` seconds,
   children included), on success, on failure and on Ctrl-C.

The last line printed is one JSON object with the final accuracy and where the result is.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

APP_DIR = Path(__file__).resolve().parent
REPO = APP_DIR.parent
HOST = "127.0.0.1"
CONNECTION = "fedtl"  # name of the SuperLink connection in the launcher's Flower config


class DeploymentError(RuntimeError):
    """The local deployment could not start, lost a process, or the run did not complete."""


def flower_executable(name: str) -> str:
    """Path of a Flower command installed next to this Python (the project's venv)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise DeploymentError(f"{name} not found next to {sys.executable}: install Flower with "
                              "`pip install -r requirements.txt` (it pins flwr).")
    return str(path)


def check_port_free(port: int, what: str, option: str) -> None:
    """Raise ``DeploymentError`` if something already listens on ``HOST:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            s.bind((HOST, port))
        except OSError as e:
            raise DeploymentError(
                f"port {port} on {HOST} is already in use ({e.strerror}), so the {what} cannot "
                f"listen there. Stop the process using it (find it with `ss -ltnp 'sport = "
                f":{port}'`) or choose another port with {option}.") from None


def can_connect(address: str, timeout: float = 1.0) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)  # Flower colours its log lines


def _tail(path: Path, lines: int = 12) -> str:
    try:
        text = _plain(path.read_text(errors="replace")).splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:])


class LocalFederation:
    """A SuperLink and ``num_nodes`` SuperNodes on this machine, stopped on exit.

    Use as a context manager: ``with LocalFederation(...) as fed: fed.start(); fed.run(...)``.

    Parameters
    ----------
    workdir
        Where logs, the processes' Flower homes and the run config go.
    num_nodes
        SuperNodes to start; node ``k`` holds partition ``k`` of ``num_nodes``.
    superlink_port, node_port
        Ports on 127.0.0.1: the SuperLink's (Fleet, Control and Runtime API share it) and the
        first SuperNode's own Runtime API (node ``k`` uses ``node_port + k``).
    superlink_address
        ``host:port`` of a SuperLink that is already running; then none is started here.
    connect_timeout
        Seconds a SuperNode keeps trying to reach the SuperLink before it gives up.
    stop_timeout
        Seconds between terminate and kill when stopping.
    """

    def __init__(self, workdir: str | os.PathLike, num_nodes: int, *, superlink_port: int = 9093,
                 node_port: int = 9094, superlink_address: str | None = None,
                 connect_timeout: float = 60.0, stop_timeout: float = 10.0):
        self.workdir = Path(workdir).resolve()
        self.num_nodes = num_nodes
        self.superlink_port = superlink_port
        self.node_port = node_port
        self.external = superlink_address is not None
        self.address = superlink_address or f"{HOST}:{superlink_port}"
        self.connect_timeout = connect_timeout
        self.stop_timeout = stop_timeout
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        self._seen: dict[int, psutil.Process] = {}  # every descendant ever observed
        self.cli_home = self.workdir / "flwr_home" / "cli"

    def __enter__(self) -> LocalFederation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- processes --------------------------------------------------------------------------

    def _env(self, name: str) -> dict[str, str]:
        env = dict(os.environ)
        env["FLWR_HOME"] = str(self.workdir / "flwr_home" / name)
        # The ServerApp and ClientApps import fedtl_helpers from this checkout.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        # Flower starts flower-superexec, flwr-serverapp and flwr-clientapp by name.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        return env

    def _spawn(self, name: str, args: Sequence[str]) -> None:
        log = self.workdir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        self.logs[name] = log
        with open(log, "wb") as out:
            # Own process group (session): Ctrl-C in the terminal reaches only the launcher,
            # which then stops everything in order.
            self.procs[name] = subprocess.Popen(list(args), stdout=out, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, env=self._env(name),
                                                cwd=self.workdir, start_new_session=True)
        self._track()

    def _track(self) -> None:
        """Remember every descendant (Flower starts SuperExec, ServerApp and ClientApps)."""
        for proc in self.procs.values():
            try:
                root = psutil.Process(proc.pid)
                for p in [root, *root.children(recursive=True)]:
                    self._seen.setdefault(p.pid, p)
            except psutil.NoSuchProcess:
                pass

    def check_alive(self) -> None:
        """Raise ``DeploymentError`` naming the process, the address and what to do."""
        self._track()
        for name, proc in self.procs.items():
            code = proc.poll()
            if code is None:
                continue
            log = self.logs[name]
            if name == "superlink":
                raise DeploymentError(f"the SuperLink on {self.address} stopped (exit code {code}). "
                                      f"Its log ({log}) ends with:\n{_tail(log)}")
            raise DeploymentError(
                f"{name} stopped (exit code {code}): it could not reach the SuperLink at "
                f"{self.address} or lost it. Check that the SuperLink runs and listens on that "
                f"address (--superlink-address / --superlink-port) and that no firewall blocks the "
                f"port. Its log ({log}) ends with:\n{_tail(log)}")

    def start(self) -> None:
        """Check ports, start the SuperLink (unless external) and the SuperNodes, wait for them."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.external:
            check_port_free(self.superlink_port, "SuperLink", "--superlink-port")
        for k in range(self.num_nodes):
            check_port_free(self.node_port + k, f"SuperNode {k}", "--node-port")
        self._write_cli_config()
        if not self.external:
            self._spawn("superlink", [
                flower_executable("flower-superlink"), "--insecure", "--host", HOST,
                "--port", str(self.superlink_port),
                # The app's code comes with this checkout; never `uv sync` at run time.
                "--disable-runtime-dependency-installation"])
            self._wait_listening()
        for k in range(self.num_nodes):
            self._spawn(f"supernode-{k}", [
                flower_executable("flower-supernode"), "--insecure", "--superlink", self.address,
                "--host", HOST, "--port", str(self.node_port + k),
                "--max-wait-time", str(self.connect_timeout),
                "--node-config", f"partition-id={k} num-partitions={self.num_nodes}"])
        self._wait_nodes_online()

    def _wait_listening(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not can_connect(self.address):
            self.check_alive()
            if time.monotonic() > deadline:
                raise DeploymentError(f"the SuperLink did not listen on {self.address} within "
                                      f"{timeout:.0f} s; see {self.logs['superlink']}")
            time.sleep(0.2)

    def _wait_nodes_online(self) -> None:
        deadline = time.monotonic() + self.connect_timeout + 30
        online: list = []
        while True:
            self.check_alive()  # a SuperNode that cannot connect exits after connect_timeout
            # While the SuperLink is unreachable the SuperNodes keep retrying (it may start
            # late); they give up after connect_timeout and check_alive reports it.
            if can_connect(self.address):
                nodes = self.flwr("supernode", "ls")["nodes"]
                online = [n for n in nodes if n.get("status") == "online"]
                if len(online) >= self.num_nodes:
                    return
            if time.monotonic() > deadline:
                raise DeploymentError(f"only {len(online)} of {self.num_nodes} SuperNodes came "
                                      f"online at {self.address}; see the logs in "
                                      f"{self.workdir / 'logs'}")
            time.sleep(1.0)

    def stop(self) -> None:
        """Terminate every process started here and its children; kill what is left."""
        self._track()
        procs = [p for p in self._seen.values() if p.is_running()]
        for p in procs:
            try:
                p.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=self.stop_timeout)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
        for proc in self.procs.values():  # reap our direct children, close the groups
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()

    def pids(self) -> list[int]:
        """Every process id started here, directly or by Flower (for tests: none may survive)."""
        self._track()
        return sorted(self._seen)

    # -- the flwr command line ----------------------------------------------------------------

    def _write_cli_config(self) -> None:
        self.cli_home.mkdir(parents=True, exist_ok=True)
        (self.cli_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "{self.address}"\ninsecure = true\n')

    def flwr(self, *args: str, timeout: float = 120.0) -> dict[str, Any]:
        """Run ``flwr <args> fedtl --format json``; its JSON, or ``DeploymentError``."""
        cmd = [flower_executable("flwr"), *args, CONNECTION, "--format", "json"]
        env = {**self._env("cli"), "FLWR_HOME": str(self.cli_home)}
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout,
                                 cwd=self.workdir, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise DeploymentError(f"`flwr {' '.join(args)}` did not answer within {timeout:.0f} s "
                                  f"(SuperLink at {self.address})") from None
        try:
            reply = json.loads(out.stdout)
        except json.JSONDecodeError:
            raise DeploymentError(f"`flwr {' '.join(args)}` exited {out.returncode} without a JSON "
                                  f"answer:\n{out.stdout[-2000:]}{out.stderr[-2000:]}") from None
        if not reply.get("success"):
            raise DeploymentError(f"`flwr {' '.join(args)}` failed (SuperLink at {self.address}): "
                                  f"{reply.get('error-message', reply)}")
        return reply

    def submit(self, run_config: dict[str, Any]) -> str:
        """``flwr run`` the app with ``run_config`` overrides; the run id."""
        path = self.workdir / "run_config.toml"
        path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in run_config.items()))
        return self.flwr("run", str(APP_DIR), "--run-config", str(path))["run-id"]

    def wait(self, run_id: str, timeout: float, result_path: Path | None = None,
             poll: float = 5.0) -> dict[str, Any]:
        """Follow the run until it is finished; its ``flwr ls`` record.

        Every ``flwr ls`` starts a Python process, so the status is asked every ``poll``
        seconds, and at once when ``result_path`` appears; the processes are checked twice a
        second.
        """
        deadline = time.monotonic() + timeout
        asked = float("-inf")
        while True:
            self.check_alive()
            done = result_path is not None and result_path.exists()
            if done or time.monotonic() - asked > poll:
                asked = time.monotonic()
                run = self.flwr("ls", "--run-id", run_id)["runs"][0]
                if run["status"].startswith("finished"):
                    return run
                if time.monotonic() > deadline:
                    self.flwr("stop", run_id)
                    raise DeploymentError(f"run {run_id} did not finish within {timeout:.0f} s "
                                          f"(status {run['status']}); it was stopped.")
            time.sleep(0.5)

    def serverapp_log(self, run_id: str) -> str:
        """The ServerApp's output, as the SuperLink keeps it (``flwr log``)."""
        cmd = [flower_executable("flwr"), "log", run_id, CONNECTION, "--show"]
        env = {**self._env("cli"), "FLWR_HOME": str(self.cli_home)}
        try:
            return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60,
                                  stdin=subprocess.DEVNULL).stdout
        except subprocess.TimeoutExpired:
            return "(flwr log did not answer)"


def run_local(config, out: str | os.PathLike, *, superlink_port: int = 9093, node_port: int = 9094,
              superlink_address: str | None = None, connect_timeout: float = 60.0,
              run_timeout: float = 900.0, stop_timeout: float = 10.0,
              federation: list[LocalFederation] | None = None) -> dict[str, Any]:
    """Deploy ``config`` (an ``ExperimentConfig``) locally and return the ServerApp's result.

    One SuperNode per client (``config.num_clients``). The result is the JSON the ServerApp
    wrote (``<out>/result.json``: per-round history, dataset and weights) plus ``run_id`` and
    ``status``. ``federation``, if given, receives the ``LocalFederation`` (tests use it to
    check that no process outlives the call).

    Raises
    ------
    DeploymentError
        A port in use, a process that stopped, a SuperNode that cannot reach the SuperLink, a
        run that did not finish as ``finished:completed`` or left no result; every process
        is stopped before it propagates.
    """
    from fedtl_deploy.task import run_config_for

    out = Path(out).resolve()
    result_path = out / "result.json"
    result_path.unlink(missing_ok=True)  # its presence must mean *this* run finished
    t0 = time.perf_counter()
    with LocalFederation(out, config.num_clients, superlink_port=superlink_port,
                         node_port=node_port, superlink_address=superlink_address,
                         connect_timeout=connect_timeout, stop_timeout=stop_timeout) as fed:
        if federation is not None:
            federation.append(fed)
        fed.start()
        run_id = fed.submit({"experiment": run_config_for(config), "result-path": str(result_path),
                             "node-timeout": float(connect_timeout)})
        run = fed.wait(run_id, run_timeout, result_path)
        log = _plain(fed.serverapp_log(run_id))
        (out / "logs" / "serverapp.log").write_text(log)
        if run["status"] != "finished:completed" or not result_path.is_file():
            raise DeploymentError(
                f"run {run_id} ended as {run['status']} ({run.get('status-details')}); "
                f"result file {'present' if result_path.is_file() else 'missing'}. The ServerApp's "
                f"log ends with:\n" + "\n".join("    " + s for s in log.splitlines()[-15:]))
    result = json.loads(result_path.read_text())
    rows = result["history"]["rows"]
    if result.get("status") != "completed" or len(rows) != config.rounds + 1:
        raise DeploymentError(f"{result_path} holds {len(rows)} rows for {config.rounds} rounds")
    result.update(run_id=run_id, run_status=run["status"], seconds=time.perf_counter() - t0,
                  result_path=str(result_path))
    return result


def build_parser() -> argparse.ArgumentParser:
    from fedtl_helpers.__main__ import add_config_options

    parser = argparse.ArgumentParser(prog="python deploy/run_local.py",
                                     description=__doc__.split("\n\n")[0])
    add_config_options(parser, num_clients=2, rounds=3, n_train=1000, n_test=500)
    for name, default, what in (
            ("--out", "runs/deploy", "folder for logs, Flower homes and result.json"),
            ("--superlink-port", 9093, "the SuperLink's port on 127.0.0.1"),
            ("--node-port", 9094, "SuperNode k's Runtime API port is node-port + k"),
            ("--superlink-address", None, "host:port of a running SuperLink (none is started)"),
            ("--connect-timeout", 60.0, "seconds a SuperNode tries to reach the SuperLink"),
            ("--run-timeout", 900.0, "seconds the run may take"),
            ("--stop-timeout", 10.0, "seconds between terminate and kill at shutdown")):
        kind = type(default) if default is not None else str
        parser.add_argument(name, type=kind, default=default, help=f"{what} (default: {default})")
    return parser


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    from fedtl_helpers.config import ExperimentConfig
    from fedtl_helpers.history import History

    args = vars(build_parser().parse_args(argv))
    options = {k: args.pop(k) for k in ("out", "superlink_port", "node_port", "superlink_address",
                                         "connect_timeout", "run_timeout", "stop_timeout")}
    try:
        config = ExperimentConfig(**args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _raise_interrupt)  # `kill` stops the federation like Ctrl-C
    try:
        result = run_local(config, options.pop("out"), **options)
    except DeploymentError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: every Flower process was stopped", file=sys.stderr)
        return 130
    print(History.from_dict(result["history"]).table())
    print(json.dumps({"final_test_accuracy": result["final_test_accuracy"], "rounds": config.rounds,
                      "dataset": result["history"]["meta"]["dataset"],
                      "weights": result["history"]["meta"]["weights"], "runtime": "flower",
                      "run_id": result["run_id"], "seconds": round(result["seconds"], 1),
                      "result": result["result_path"]}))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(APP_DIR))  # fedtl_deploy, when run as a script
    sys.exit(main())

"""A local federation: a SuperLink and N SuperNodes as real processes, and the flwr CLI.

Chapter: "From simulation to deployment". ``LocalFederation`` starts Flower's processes on
127.0.0.1, checks its ports first, names the address and what to do when a process stops,
follows a run through the ``flwr`` command line (JSON output) and stops every process it or
Flower started: terminate, then kill after a timeout. ``run_local.py`` uses it to deploy one
experiment.

Persistent ClientApps (``persistent=True``, the default): each SuperNode runs with
``--isolation process`` and next to it one ``persistent_clientapp.py`` process that runs all
of that node's messages with the app (TensorFlow, the node's data and model) loaded once;
with ``persistent=False`` Flower starts a fresh ``flwr-clientapp`` process per message.
Secured (``secure=True``): TLS on every connection to the SuperLink (a CA and a server
certificate made with ``credentials.make_tls``) and SuperNode authentication (each node's key
registered with ``flwr supernode register`` before it starts; the SuperLink runs with
``--enable-supernode-auth``). Without it the SuperLink speaks plain HTTP and accepts any node:
acceptable on 127.0.0.1 only.

No orphans, whatever kills the launcher: a watchdog process (this file run with
``--watchdog``, in its own session) holds the read end of a pipe from the launcher and learns
every session the launcher starts. When the launcher dies by any signal, SIGKILL and the
out-of-memory killer included, the kernel closes the pipe; the watchdog reads end-of-file and
stops every process of those sessions (Flower's SuperExec, ServerApp and ClientApps stay in
the session of the process that started them). A new launch into the same folder also finds
processes an earlier launch left there (their working folder is the launch folder) and stops
them, saying so.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:  # imported where used: the watchdog (this file run alone) needs none of it
    from credentials import TlsFiles

APP_DIR = Path(__file__).resolve().parent
REPO = APP_DIR.parent
HOST = "127.0.0.1"
CONNECTION = "fedtl"  # name of the SuperLink connection in the launcher's Flower config
# Seconds between a SuperExec's task claims (Flower's FLWR_SUPEREXEC_TASK_POLL_INTERVAL, default
# 1 s): the SuperLink's SuperExec starts the ServerApp this much sooner.
SUPEREXEC_POLL = "0.1"


SECURITY_ENV = "FEDTL_DEPLOY_SECURITY"  # the SuperLink's transport and authentication, as JSON


def security_record(tls: bool, control_api: str, fleet_api: str) -> dict[str, str]:
    """What a SuperLink was started with: the record the History and ``result.json`` keep.

    Node authentication needs TLS in Flower (``--enable-supernode-auth`` is refused with
    ``--insecure``), so the launchers turn both on or both off.
    """
    return {"transport": "tls" if tls else "insecure (plain HTTP)",
            "node_authentication": "registered keys only" if tls else "none (any SuperNode may join)",
            "control_api": control_api, "fleet_api": fleet_api}


def security_banner(record: dict[str, str]) -> str:
    """One line for the terminal, printed on every start."""
    warn = ("" if record["transport"] == "tls"
            else "  WARNING: --insecure: anyone on the network can read, join and control")
    return (f"transport: {record['transport']}; node authentication: {record['node_authentication']}; "
            f"Control API: {record['control_api']}; Fleet API: {record['fleet_api']}{warn}")


class DeploymentError(RuntimeError):
    """The local deployment could not start, lost a process, or the run did not complete."""


# A SuperNode's two waits in seconds (supernode.py): Flower's hard-coded ones, and the launcher's.
FLOWER_POLLS = (3.0, 0.5)
LOOPBACK_POLLS = (0.1, 0.05)


def flower_executable(name: str) -> str:
    """Path of a Flower command installed next to this Python (the project's venv)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise DeploymentError(f"{name} not found next to {sys.executable}: install Flower with "
                              "`pip install -r requirements.txt` (it pins flwr).")
    return str(path)


def check_port_free(port: int, what: str, option: str, host: str = HOST) -> None:
    """Raise ``DeploymentError`` if something already listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            s.bind((host, port))
        except OSError as e:
            raise DeploymentError(
                f"port {port} on {host} is already in use or unavailable ({e.strerror}), so "
                f"the {what} cannot listen there. Stop the process using it (find it with `ss -ltnp 'sport = "
                f":{port}'`) or choose another port with {option}.") from None


def can_connect(address: str, timeout: float = 1.0) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def strip_colours(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)  # Flower colours its log lines


def _tail(path: Path, lines: int = 12) -> str:
    try:
        text = strip_colours(path.read_text(errors="replace")).splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:])


def running(procs) -> list[psutil.Process]:
    """The processes still running; a zombie has exited (only its table entry is left)."""
    alive = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            pass
    return alive


def _wait_gone(procs, timeout: float) -> list[psutil.Process]:
    """Wait up to ``timeout`` s for ``procs`` to exit; those still running."""
    deadline = time.monotonic() + timeout
    while (alive := running(procs)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


@contextmanager
def signals_deferred(signums=(signal.SIGINT, signal.SIGTERM)):
    """Hold Ctrl-C and ``kill`` (SIGINT, SIGTERM) that arrive inside the block; when it ends,
    deliver them again to whatever handlers were there before, so the block runs whole.
    Outside the main thread (where handlers cannot be set) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {n: signal.signal(n, lambda signum, frame: caught.append(signum)) for n in signums}
    try:
        yield
    finally:
        for n, handler in previous.items():
            signal.signal(n, handler)
        for n in dict.fromkeys(caught):  # each signal once, in the order it came
            signal.raise_signal(n)


def _stop(procs: list[psutil.Process], timeout: float) -> None:
    """Terminate ``procs``, kill those still running after ``timeout`` s."""
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    for p in _wait_gone(procs, timeout):
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    _wait_gone(procs, 5.0)


def _name(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline()[:2]) or p.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "?"


def in_sessions(sessions: set[int]) -> list[psutil.Process]:
    """Running processes whose session is one of ``sessions``."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.pid != os.getpid() and os.getsid(p.pid) in sessions:
                found.append(p)
        except (ProcessLookupError, PermissionError, psutil.NoSuchProcess):
            pass
    return running(found)


def with_home(home: str) -> list[psutil.Process]:
    """Running processes whose ``FLWR_HOME`` lies under ``home`` (a launch folder's ``flwr_home/``).

    Every process a launcher starts gets that variable, and everything Flower starts from them
    inherits it, including the processes Flower detaches into sessions of their own (its
    SuperExec and the ``flwr-serverapp`` it starts: ``start_new_session=True``).
    """
    found = []
    for p in psutil.process_iter():
        try:
            if p.pid != os.getpid() and p.environ().get("FLWR_HOME", "").startswith(home):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            pass
    return running(found)


def watchdog(stop_timeout: float, home: str | None = None) -> None:
    """Read session ids from stdin until end-of-file, then stop every process in them and
    every process whose ``FLWR_HOME`` lies under ``home``.

    End-of-file comes when the launcher closes the pipe after stopping everything itself, or
    when the launcher dies, however it dies: the kernel closes its end of the pipe. The
    sessions alone missed Flower's ServerApp (issue 31: ``flwr-serverapp`` still running 2 min
    after a SIGKILL of ``run_local.py``): Flower starts its SuperExec in a new session.
    """
    sessions = {int(line) for line in sys.stdin if line.strip()}
    for _ in range(5):  # a process may start another while it is being stopped
        procs = in_sessions(sessions)
        if home:
            pids = {p.pid for p in procs}
            procs += [p for p in with_home(home) if p.pid not in pids]
        if not procs:
            return
        print(f"launcher gone: stopping {len(procs)} process(es): "
              + ", ".join(f"{p.pid} ({_name(p)})" for p in procs), flush=True)
        _stop(procs, stop_timeout)


class LocalFederation:
    """A SuperLink and ``num_nodes`` SuperNodes on this machine, stopped on exit.

    Use as a context manager: ``with LocalFederation(...) as fed:``, then ``fed.start()``,
    ``run_id = fed.submit(run_config)`` and ``fed.wait(run_id, timeout)``.

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
    persistent
        One long-running ClientApp process per SuperNode (``--isolation process``), instead of
        Flower's fresh process per message.
    secure
        TLS and SuperNode authentication (with ``superlink_address``: give ``ca_cert``).
    ca_cert
        The CA certificate that signed an external SuperLink's certificate (``secure`` with
        ``superlink_address``: the ``flwr`` connection and SuperNodes trust it).
    idle_poll, reply_poll
        Seconds a SuperNode waits before asking the SuperLink again when it found no message,
        and between looks for its ClientApp's reply. Flower hard-codes 3 and 0.5; on one
        machine they are most of a round's overhead, so the defaults here are 0.1 and 0.05,
        through ``supernode.py`` (Flower's SuperNode with those two sleeps shortened).
        ``idle_poll=3, reply_poll=0.5`` starts Flower's own ``flower-supernode``.

    Raises
    ------
    ValueError
        ``secure=True`` with ``superlink_address`` (the launcher can register node keys and
        trust a certificate only on a SuperLink it started).
    """

    def __init__(self, workdir: str | os.PathLike, num_nodes: int, *, superlink_port: int = 9093,
                 node_port: int = 9094, superlink_address: str | None = None,
                 connect_timeout: float = 60.0, stop_timeout: float = 10.0,
                 persistent: bool = True, secure: bool = False, idle_poll: float = LOOPBACK_POLLS[0],
                 reply_poll: float = LOOPBACK_POLLS[1], notify=None,
                 ca_cert: str | os.PathLike | None = None):
        if secure and superlink_address is not None and ca_cert is None:
            raise ValueError("secure=True is invalid with superlink_address: allowed only with the "
                             "SuperLink the launcher starts (it makes its certificate and registers "
                             "the node keys), or with ca_cert (the CA that signed the external "
                             "SuperLink's certificate)")
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
        self.watchdog: subprocess.Popen | None = None
        self.notify = notify or (lambda message: print(message, file=sys.stderr))
        self.persistent = persistent
        self.secure = secure
        self.polls = (idle_poll, reply_poll)
        self.tls: TlsFiles | None = None  # made by start() when secure
        if secure and ca_cert is not None:  # an external SuperLink whose certificate we trust
            from credentials import TlsFiles

            self.tls = TlsFiles(Path(ca_cert).resolve(), Path(), Path())
        self.extra_env: dict[str, str] = {}  # more environment for every process started here
        self.clientapp_args: list[str] = []  # more options for each persistent ClientApp process

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
        env.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", SUPEREXEC_POLL)
        env.update(self.extra_env)
        return env

    def spawn(self, name: str, args: Sequence[str]) -> None:
        """Start ``args`` as process ``name`` (log ``logs/<name>.log``), stopped with the others."""
        log = self.workdir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        self.logs[name] = log
        # Ctrl-C (or kill) waits until the new process is recorded and the watchdog told: an
        # interrupt between fork and `self.procs[name] = ...` would leave a process stop() never sees.
        with signals_deferred(), open(log, "wb") as out:
            # Own process group (session): Ctrl-C in the terminal reaches only the launcher,
            # which then stops everything in order.
            self.procs[name] = subprocess.Popen(list(args), stdout=out, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, env=self._env(name),
                                                cwd=self.workdir, start_new_session=True)
            self._watch(self.procs[name].pid)
        self._track()

    _spawn = spawn  # the earlier name (tests/test_deploy.py's fake launcher calls it)

    def _watch(self, session: int) -> None:
        """Tell the watchdog (started on first use) about a new session to stop if we die."""
        if self.watchdog is None:
            log = open(self.workdir / "logs" / "watchdog.log", "ab")  # noqa: SIM115 (the child owns it)
            with log:
                self.watchdog = subprocess.Popen(
                    [sys.executable, str(Path(__file__).resolve()), "--watchdog",
                     str(self.stop_timeout), self.home_prefix], stdin=subprocess.PIPE, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self.watchdog.stdin.write(f"{session}\n".encode())
            self.watchdog.stdin.flush()
        except BrokenPipeError:  # the watchdog died: stop() still cleans up, as before it existed
            self.notify(f"warning: the watchdog (pid {self.watchdog.pid}) is gone; if this launcher "
                        "is killed, stop the Flower processes by hand")

    def leftovers(self) -> list[psutil.Process]:
        """Processes still running from an earlier launch into this folder (not ours).

        Recognised by ``FLWR_HOME`` under this folder's ``flwr_home/``, which every process
        started here (and everything Flower starts from them) has in its environment.
        """
        ours = {os.getpid(), *(p.pid for p in self._seen.values())}
        return [p for p in with_home(self.home_prefix) if p.pid not in ours]

    @property
    def home_prefix(self) -> str:
        """What every process started here has its ``FLWR_HOME`` under."""
        return str(self.workdir / "flwr_home") + os.sep

    def stop_leftovers(self) -> list[int]:
        """Stop what an earlier launch left running in this folder; their pids (reported)."""
        left = self.leftovers()
        if left:
            names = ", ".join(f"{p.pid} ({_name(p)})" for p in left)
            self.notify(f"note: an earlier launch in {self.workdir} left {len(left)} process(es) "
                        f"running: {names}; stopping them")
            _stop(left, self.stop_timeout)
        return [p.pid for p in left]

    def _track(self) -> None:
        """Remember every descendant (Flower starts SuperExec, ServerApp and ClientApps).

        Also every process in the sessions we started (each spawned process leads its own): a
        child whose parent died first is no longer a descendant, but it keeps the session.
        """
        sessions = {proc.pid for proc in self.procs.values()}
        for proc in self.procs.values():
            try:
                root = psutil.Process(proc.pid)
                for p in [root, *root.children(recursive=True)]:
                    self._seen.setdefault(p.pid, p)
            except psutil.NoSuchProcess:
                pass
        for p in psutil.process_iter():
            try:
                if os.getsid(p.pid) in sessions:
                    self._seen.setdefault(p.pid, p)
            except (ProcessLookupError, PermissionError, psutil.NoSuchProcess):
                pass

    def check_alive(self) -> None:
        """Raise ``DeploymentError`` naming the process, the address and what to do."""
        self._track()
        for name, proc in self.procs.items():
            code = proc.poll()
            if code is None:
                continue
            log = self.logs[name]
            if name.startswith("clientapp-"):
                raise DeploymentError(f"{name} (the persistent ClientApp process of SuperNode "
                                      f"{name.removeprefix('clientapp-')}) stopped (exit code "
                                      f"{code}). Its log ({log}) ends with:\n{_tail(log)}")
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
        self.stop_leftovers()  # before the port checks: leftovers may hold our ports
        if not self.external:
            check_port_free(self.superlink_port, "SuperLink", "--superlink-port")
        for k in range(self.num_nodes):
            check_port_free(self.node_port + k, f"SuperNode {k}", "--node-port")
        if self.secure and self.tls is None:
            from credentials import make_tls

            self.tls = make_tls(self.workdir / "certs")
        if not self.external:  # the ServerApp records what its SuperLink was started with
            self.extra_env[SECURITY_ENV] = json.dumps(self.security())
            self.notify(security_banner(self.security()))
        self._write_cli_config()
        if not self.external:
            self.spawn("superlink", [
                flower_executable("flower-superlink"), *self.superlink_security(), "--host", HOST,
                "--port", str(self.superlink_port),
                # The app's code comes with this checkout; never `uv sync` at run time.
                "--disable-runtime-dependency-installation"])
            self._wait_listening()
        for k in range(self.num_nodes):
            if self.secure:  # only registered keys may join
                self.flwr("supernode", "register", str(self.node_key(k)[1]))
            self.start_supernode(k, f"supernode-{k}", self.supernode_security(k))
        self._wait_nodes_online()

    def security(self) -> dict[str, str]:
        """The record of this federation's transport and authentication (``security_record``)."""
        return security_record(self.tls is not None, f"{self.address} (loopback)",
                               f"{self.address} (loopback)")

    def superlink_security(self) -> list[str]:
        """The SuperLink's TLS and node-authentication options (``--insecure`` when not secure)."""
        if self.tls is None:
            return ["--insecure"]
        return ["--ssl-ca-certfile", str(self.tls.ca_cert), "--ssl-certfile", str(self.tls.server_cert),
                "--ssl-keyfile", str(self.tls.server_key), "--enable-supernode-auth"]

    def node_key(self, k: int) -> tuple[Path, Path]:
        """SuperNode ``k``'s key pair (private, public), made on first use."""
        from credentials import make_node_key

        private = self.workdir / "keys" / f"node-{k}"
        if not private.exists():
            return make_node_key(private)
        return private, private.with_name(private.name + ".pub")

    def supernode_security(self, k: int) -> list[str]:
        """SuperNode ``k``'s options: trust the CA and sign with its key (``--insecure`` when not secure)."""
        if self.tls is None:
            return ["--insecure"]
        return ["--root-certificates", str(self.tls.ca_cert),
                "--auth-supernode-private-key", str(self.node_key(k)[0])]

    def start_supernode(self, k: int, name: str, security: Sequence[str],
                        port: int | None = None) -> None:
        """Start a SuperNode holding partition ``k`` (and its persistent ClientApp process)."""
        port = self.node_port + k if port is None else port
        isolation = ["--isolation", "process"] if self.persistent else []
        if self.polls == FLOWER_POLLS:
            supernode = [flower_executable("flower-supernode")]
        else:
            supernode = [sys.executable, str(Path(__file__).with_name("supernode.py")),
                         "--idle-poll", str(self.polls[0]), "--reply-poll", str(self.polls[1])]
        self.spawn(name, [
            *supernode, *security, "--superlink", self.address,
            "--host", HOST, "--port", str(port), *isolation,
            "--max-wait-time", str(self.connect_timeout),
            "--node-config", f"partition-id={k} num-partitions={self.num_nodes}"])
        if self.persistent:  # it claims the node's tasks on its Runtime API, TensorFlow loaded once
            self.spawn("clientapp-" + name.removeprefix("supernode-"), [
                sys.executable, str(APP_DIR / "persistent_clientapp.py"),
                "--runtime-api-address", f"{HOST}:{port}",
                "--parent-pid", str(self.procs[name].pid), *self.clientapp_args])

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
        """Terminate every process started here and its children; kill what is left.

        Repeated until nothing is left: a process may start another while it is being stopped.
        """
        for _ in range(5):
            self._track()
            procs = running(self._seen.values())
            if not procs:
                break
            _stop(procs, self.stop_timeout)
        if self.watchdog is not None:  # nothing left to guard: end-of-file lets it exit
            try:
                self.watchdog.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self.watchdog.wait(timeout=self.stop_timeout + 10)
            except subprocess.TimeoutExpired:
                self.watchdog.kill()
                self.watchdog.wait()
        for proc in self.procs.values():  # reap our direct children, close the groups
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()

    def processes(self) -> list[psutil.Process]:
        """Every process started here, directly or by Flower (tests check none survives)."""
        self._track()
        return list(self._seen.values())

    # -- the flwr command line ----------------------------------------------------------------

    def _write_cli_config(self) -> None:
        self.cli_home.mkdir(parents=True, exist_ok=True)
        (self.cli_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "{self.address}"\n'
            + (f'root-certificates = "{self.tls.ca_cert}"\n' if self.tls else "insecure = true\n"))

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


if __name__ == "__main__" and sys.argv[1:2] == ["--watchdog"]:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only end-of-file ends the watch
    watchdog(float(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None)

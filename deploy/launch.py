"""Run the federation across machines: one command per role, TLS and node keys by default.

Chapter: "From simulation to deployment" (section "On real machines"). ::

    # operator, once (keeps ca.key; copies ca.crt to everyone, server.* to the SuperLink host)
    python deploy/launch.py credentials --out certs --host superlink.example.org
    python deploy/launch.py node-key --out node-0        # on each SuperNode host: node-0, node-0.pub
    # SuperLink host: Fleet API on the public address, Control API on its loopback only
    python deploy/launch.py superlink --out runs/link --certs certs --public 0.0.0.0:9092
    # operator, on the SuperLink host or through `ssh -L 9093:127.0.0.1:9093 superlink-host`
    python deploy/launch.py register --ca certs/ca.crt node-0.pub node-1.pub
    # each SuperNode host
    python deploy/launch.py supernode --out runs/node --superlink superlink.example.org:9092 \\
        --ca ca.crt --key node-0 --partition 0 --num-partitions 2
    # operator
    python deploy/launch.py run --ca certs/ca.crt --out runs/exp --num-clients 2 --rounds 3 ...

Roles:

- ``credentials``: a CA and the SuperLink's server certificate for ``--host`` names (and
  127.0.0.1, the loopback the Control API listens on); ``node-key``: a SuperNode's key pair.
- ``superlink``: ``flower-superlink`` bound to ``127.0.0.1:--control-port`` (Fleet, Control
  and Runtime API share that port in Flower 1.42), with TLS and ``--enable-supernode-auth``,
  plus ``fleet_gateway.py`` on ``--public``: TLS, Fleet routes only. Runs until SIGINT/SIGTERM.
- ``supernode``: ``flower-supernode`` to ``--superlink`` (the gateway) with the CA and the
  node's private key, and its persistent ClientApp process. Runs until stopped; exits 1 when
  the SuperNode stops (refused key, SuperLink gone for ``--connect-timeout`` seconds).
- ``register`` / ``run``: the operator's ``flwr supernode register`` and ``flwr run`` against
  the Control API (``--control``, default ``127.0.0.1:9093``).

``--insecure`` (every role) turns TLS *and* node authentication off; it is only for a
rehearsal on a closed network and is printed as a warning on every start. Every start prints
its transport and authentication; the SuperLink's are handed to the ServerApp, which records
them in the History (``meta["security"]``) and in ``result.json``. A bad option is one line on
stderr and exit 2 before anything starts. Every role stops what it started, also when it is
killed with SIGKILL (``local_federation``'s watchdog).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import sys
import time
from pathlib import Path

from local_federation import (
    APP_DIR,
    FLOWER_POLLS,
    HOST,
    SECURITY_ENV,
    DeploymentError,
    LocalFederation,
    can_connect,
    check_port_free,
    flower_executable,
    security_banner,
    security_record,
)

ADDRESS = re.compile(r"[^\s:]+:\d{1,5}")


class UsageError(ValueError):
    """A bad option: one line, exit 2, nothing started."""


def _address(text: str, option: str) -> str:
    if not ADDRESS.fullmatch(text) or not 0 < int(text.rpartition(":")[2]) < 65536:
        raise UsageError(f"{option}={text!r} is invalid: allowed host:port, e.g. 10.0.0.1:9092")
    return text


def _file(path: str | None, option: str) -> Path:
    if path is None or not Path(path).is_file():
        raise UsageError(f"{option}={path!r} is invalid: allowed an existing file"
                         + (" (or --insecure)" if option in ("--ca", "--key", "--certs") else ""))
    return Path(path).resolve()


def _seconds(value: float, option: str) -> float:
    if not 0 < value < math.inf:
        raise UsageError(f"{option}={value} is invalid: allowed a finite number of seconds > 0")
    return value


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _serve(fed: LocalFederation, what: str) -> None:
    """Watch the processes until one stops (``DeploymentError``) or we are told to stop."""
    print(f"{what} running; stop with Ctrl-C or SIGTERM", flush=True)
    while True:
        fed.check_alive()
        time.sleep(0.5)


# -- roles --------------------------------------------------------------------------------------

def superlink(args: argparse.Namespace) -> int:
    public = _address(args.public, "--public")
    _seconds(args.stop_timeout, "--stop-timeout")
    certs = None
    if not args.insecure:
        if args.certs is None or not Path(args.certs).is_dir():
            raise UsageError(f"--certs={args.certs!r} is invalid: allowed the folder `launch.py "
                             "credentials` wrote (ca.crt, server.pem, server.key), or --insecure")
        from credentials import TlsFiles

        folder = Path(args.certs).resolve()
        certs = TlsFiles(*(_file(str(folder / name), "--certs")
                           for name in ("ca.crt", "server.pem", "server.key")))
    control = f"{HOST}:{args.control_port}"
    record = security_record(certs is not None, f"{control} (loopback only: on this host or over SSH)",
                             f"{public} (gateway: Fleet routes only)")
    with LocalFederation(args.out, 0, superlink_port=args.control_port,
                         stop_timeout=args.stop_timeout) as fed:
        fed.workdir.mkdir(parents=True, exist_ok=True)
        fed.stop_leftovers()
        check_port_free(args.control_port, "SuperLink (Control API)", "--control-port")
        host, _, port = public.rpartition(":")
        check_port_free(int(port), "Fleet gateway", "--public", host=host)
        fed.extra_env[SECURITY_ENV] = json.dumps(record)
        print(security_banner(record), flush=True)
        security = (["--insecure"] if certs is None else
                    ["--ssl-ca-certfile", str(certs.ca_cert), "--ssl-certfile", str(certs.server_cert),
                     "--ssl-keyfile", str(certs.server_key), "--enable-supernode-auth"])
        database = ["--database", str(Path(args.database).resolve())] if args.database else []
        fed.spawn("superlink", [flower_executable("flower-superlink"), *security, "--host", HOST,
                                "--port", str(args.control_port), *database,
                                "--disable-runtime-dependency-installation"])
        fed._wait_listening()
        gateway = (["--insecure"] if certs is None else
                   ["--certfile", str(certs.server_cert), "--keyfile", str(certs.server_key),
                    "--ca-certfile", str(certs.ca_cert)])
        fed.spawn("gateway", [sys.executable, str(APP_DIR / "fleet_gateway.py"), "--listen", public,
                              "--superlink", control, *gateway])
        deadline = time.monotonic() + 30
        probe = f"{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
        while not can_connect(probe):
            fed.check_alive()
            if time.monotonic() > deadline:
                raise DeploymentError(f"the Fleet gateway did not listen on {public} within 30 s")
            time.sleep(0.2)
        _serve(fed, f"SuperLink (Control API {control}, Fleet API {public})")
    return 0


def supernode(args: argparse.Namespace) -> int:
    address = _address(args.superlink, "--superlink")
    if not 0 <= args.partition < args.num_partitions:
        raise UsageError(f"--partition={args.partition} is invalid: allowed 0..{args.num_partitions - 1} "
                         f"(--num-partitions={args.num_partitions})")
    for name in ("connect_timeout", "stop_timeout", "idle_poll", "reply_poll", "task_input_timeout"):
        _seconds(getattr(args, name), "--" + name.replace("_", "-"))
    security = ["--insecure"]
    if not args.insecure:
        security = ["--root-certificates", str(_file(args.ca, "--ca")),
                    "--auth-supernode-private-key", str(_file(args.key, "--key"))]
    record = security_record(not args.insecure, "(not used by a SuperNode)", address)
    with LocalFederation(args.out, args.num_partitions, superlink_address=address,
                         node_port=args.runtime_port - args.partition,
                         connect_timeout=args.connect_timeout, stop_timeout=args.stop_timeout,
                         idle_poll=args.idle_poll, reply_poll=args.reply_poll) as fed:
        fed.workdir.mkdir(parents=True, exist_ok=True)
        fed.stop_leftovers()
        check_port_free(args.runtime_port, "SuperNode's Runtime API", "--runtime-port")
        print(security_banner(record), flush=True)
        fed.clientapp_args = ["--input-timeout", str(args.task_input_timeout)]
        fed.start_supernode(args.partition, f"supernode-{args.partition}", security)
        _serve(fed, f"SuperNode (partition {args.partition} of {args.num_partitions}, SuperLink {address})")
    return 0


def _operator(args: argparse.Namespace) -> LocalFederation:
    control = _address(args.control, "--control")
    ca = None if args.insecure else _file(args.ca, "--ca")
    fed = LocalFederation(args.out, 0, superlink_address=control, secure=not args.insecure, ca_cert=ca)
    fed.workdir.mkdir(parents=True, exist_ok=True)
    fed._write_cli_config()
    print(security_banner(security_record(not args.insecure, control, "(not used by the operator)")),
          file=sys.stderr, flush=True)
    return fed


def register(args: argparse.Namespace) -> int:
    keys = [_file(k, "KEY.pub") for k in args.keys]
    fed = _operator(args)
    for key in keys:
        reply = fed.flwr("supernode", "register", str(key))
        print(json.dumps({"registered": str(key), "node-id": reply.get("node-id")}), flush=True)
    return 0


def run(args: argparse.Namespace, config) -> int:
    from fedtl_deploy.task import run_config_for

    _seconds(args.run_timeout, "--run-timeout")
    _seconds(args.node_timeout, "--node-timeout")
    _seconds(args.round_timeout, "--round-timeout")
    from fedtl_helpers.workflow.cli import privacy_lines

    fed = _operator(args)
    for line in privacy_lines(config, "start"):  # a DP run says its epsilon on the terminal
        print(line, file=sys.stderr, flush=True)
    result_path = Path(args.result_path or fed.workdir / "result.json").resolve()
    result_path.unlink(missing_ok=True)
    run_config = {"experiment": run_config_for(config), "result-path": str(result_path),
                  "node-timeout": args.node_timeout, "round-timeout": args.round_timeout}
    if args.checkpoint_dir:
        run_config.update({"checkpoint-dir": str(Path(args.checkpoint_dir).resolve()),
                           "resume": bool(args.resume)})
    run_id = fed.submit(run_config)
    print(json.dumps({"run_id": run_id, "submitted": True}), flush=True)
    record = fed.wait(run_id, args.run_timeout, result_path, poll=2.0)
    if record["status"] != "finished:completed":
        raise DeploymentError(f"run {run_id} ended as {record['status']} ({record.get('status-details')}); "
                              "its ServerApp's log: `flwr log " + run_id + "`")
    summary = {"run_id": run_id, "status": record["status"], "result": str(result_path)}
    if result_path.is_file():  # on the SuperLink host (the operator there, or a shared folder)
        result = json.loads(result_path.read_text())
        summary.update(final_test_accuracy=result["final_test_accuracy"], security=result.get("security"))
    for line in privacy_lines(config, "end", Path(args.checkpoint_dir) if args.checkpoint_dir else None):
        print(line, file=sys.stderr, flush=True)
    print(json.dumps(summary), flush=True)
    return 0


# -- command line -------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from fedtl_helpers.workflow.cli import Parser, add_config_options

    parser = Parser(prog="python deploy/launch.py", description=__doc__.split("\n\n")[0])
    roles = parser.add_subparsers(dest="role", required=True, parser_class=Parser)
    p = roles.add_parser("credentials", help="a CA and the SuperLink's server certificate")
    p.add_argument("--out", required=True, help="folder for ca.crt, ca.key, server.pem, server.key")
    p.add_argument("--host", action="append", required=True,
                   help="a name or IP address the SuperNodes reach the SuperLink by (repeatable)")
    p.add_argument("--days", type=int, default=30, help="validity in days (default: 30)")
    p = roles.add_parser("node-key", help="a SuperNode's key pair (OUT and OUT.pub)")
    p.add_argument("--out", required=True, help="path of the private key")

    def common(p: argparse.ArgumentParser, out: str) -> None:
        p.add_argument("--out", default=out, help=f"folder for logs and Flower homes (default: {out})")
        p.add_argument("--insecure", action="store_true",
                       help="no TLS and no node authentication (a rehearsal on a closed network only)")
        p.add_argument("--stop-timeout", type=float, default=10.0,
                       help="seconds between terminate and kill at shutdown (default: 10)")

    p = roles.add_parser("superlink", help="the SuperLink host: Control API on loopback, Fleet API public")
    common(p, "runs/superlink")
    p.add_argument("--public", default="0.0.0.0:9092",
                   help="host:port where SuperNodes reach the Fleet API (default: 0.0.0.0:9092)")
    p.add_argument("--control-port", type=int, default=9093,
                   help="the SuperLink's port on 127.0.0.1 (Control, Runtime, Fleet; default: 9093)")
    p.add_argument("--certs", help="folder with ca.crt, server.pem, server.key (launch.py credentials)")
    p.add_argument("--database", help="SQLite file for the SuperLink's state (registered keys, runs) "
                   "so that it survives a restart (default: in memory)")

    p = roles.add_parser("supernode", help="a SuperNode host")
    common(p, "runs/supernode")
    p.add_argument("--superlink", required=True, help="host:port of the SuperLink's Fleet API (gateway)")
    p.add_argument("--ca", help="the CA certificate (ca.crt)")
    p.add_argument("--key", help="this node's private key (launch.py node-key); its .pub must be registered")
    p.add_argument("--partition", type=int, required=True, help="which partition of the data this node holds")
    p.add_argument("--num-partitions", type=int, required=True, help="how many partitions (= num_clients)")
    p.add_argument("--runtime-port", type=int, default=9094, help="the node's Runtime API port on 127.0.0.1")
    p.add_argument("--connect-timeout", type=float, default=300.0,
                   help="seconds the node keeps retrying an unreachable SuperLink (default: 300)")
    p.add_argument("--task-input-timeout", type=float, default=300.0,
                   help="seconds a message may take to reach the ClientApp before its task fails "
                        "(default: 300)")
    p.add_argument("--idle-poll", type=float, default=FLOWER_POLLS[0],
                   help=f"seconds between asks for messages (default: Flower's {FLOWER_POLLS[0]:g})")
    p.add_argument("--reply-poll", type=float, default=FLOWER_POLLS[1],
                   help=f"seconds between looks for the ClientApp's reply (default: {FLOWER_POLLS[1]:g})")

    for name, what in (("register", "register SuperNode public keys (operator)"),
                       ("run", "submit the experiment and follow it (operator)")):
        p = roles.add_parser(name, help=what)
        common(p, "runs/operator")
        p.add_argument("--control", default=f"{HOST}:9093",
                       help="host:port of the Control API: the SuperLink host's loopback, or the local "
                            "end of an SSH tunnel to it (default: 127.0.0.1:9093)")
        p.add_argument("--ca", help="the CA certificate (ca.crt)")
        if name == "register":
            p.add_argument("keys", nargs="+", metavar="KEY.pub", help="public keys to register")
        else:
            add_config_options(p, num_clients=2, rounds=3, n_train=1000, n_test=500, randomness="secure")
            p.add_argument("--result-path", help="where the ServerApp writes result.json, a path on the "
                           "SuperLink host (default: OUT/result.json)")
            p.add_argument("--run-timeout", type=float, default=3600.0, help="seconds the run may take")
            p.add_argument("--node-timeout", type=float, default=300.0,
                           help="seconds the ServerApp waits for num_clients SuperNodes")
            p.add_argument("--round-timeout", type=float, default=600.0,
                           help="seconds the ServerApp waits for one round's replies")
            p.add_argument("--checkpoint-dir", help="the ServerApp saves its state there after every round "
                           "(a path on the SuperLink host)")
            p.add_argument("--resume", action="store_true", help="continue from --checkpoint-dir")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse, check, run the role; exit status 0, 1 (failed), 2 (usage), 130 (stopped)."""
    import dataclasses

    from fedtl_helpers.workflow.cli import quiet_tensorflow

    quiet_tensorflow()
    from fedtl_helpers.core.config import ExperimentConfig

    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    try:
        if args.role == "credentials":
            from credentials import make_tls

            hosts = tuple(dict.fromkeys([*args.host, "127.0.0.1", "localhost"]))
            files = make_tls(args.out, hosts, args.days)
            print(json.dumps({"ca_cert": str(files.ca_cert), "server_cert": str(files.server_cert),
                              "server_key": str(files.server_key),
                              "ca_key": str(Path(args.out).resolve() / "ca.key"),
                              "note": "ca.key stays with the operator; ca.crt goes to every host"}))
            return 0
        if args.role == "node-key":
            from credentials import make_node_key

            private, public = make_node_key(args.out)
            print(json.dumps({"private": str(private), "public": str(public),
                              "note": "register the .pub with `launch.py register`"}))
            return 0
        if args.role == "superlink":
            return superlink(args)
        if args.role == "supernode":
            return supernode(args)
        if args.role == "register":
            return register(args)
        fields = {f.name for f in dataclasses.fields(ExperimentConfig)}
        try:
            config = ExperimentConfig(**{k: v for k, v in vars(args).items() if k in fields})
            from fedtl_helpers.federation.stages import DEPLOYMENT, check_supported

            check_supported(config, DEPLOYMENT)
        except ValueError as e:
            raise UsageError(str(e)) from e
        return run(args, config)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except DeploymentError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"stopped: every process of this {args.role} was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())

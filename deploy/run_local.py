"""Run the Flower app on this machine: one SuperLink, N SuperNodes, one run, its result.

Chapter: "From simulation to deployment". ::

    python deploy/run_local.py --num-clients 2 --rounds 3 --n-train 1000 --out runs/deploy
    python deploy/run_local.py --insecure ...   # plain HTTP, any SuperNode may join

Every ``ExperimentConfig`` field is an option, as for ``python -m fedtl_helpers run``. The
processes are real Flower processes talking over sockets, on 127.0.0.1 only: a local
rehearsal of a deployment (``launch.py`` runs each role on its own machine). By default it
makes a CA and a server certificate (TLS on every connection to the SuperLink) and a key pair
per SuperNode, and the SuperLink accepts only the registered keys; ``--insecure`` (plain
HTTP, any SuperNode may join) only when asked. The transport and authentication are printed
when the federation starts and recorded in ``result.json`` and the History. Each
SuperNode's messages run in one persistent ClientApp process (``persistent_clientapp.py``:
TensorFlow, data and model loaded once);
``--fresh-clientapps`` gives Flower's default, a new process per message. The SuperNodes ask
for messages every ``--idle-poll`` seconds and for their ClientApp's reply every
``--reply-poll`` (0.1 and 0.05 here, through ``supernode.py``; Flower hard-codes 3 and 0.5,
which ``--idle-poll 3 --reply-poll 0.5`` restores with Flower's own ``flower-supernode``). The
launcher

1. checks the config and that the ports are free (``--superlink-port``, ``--node-port``:
   SuperNode ``k`` uses ``node-port + k``) before starting anything;
2. starts ``flower-superlink`` and ``flower-supernode`` processes (and a persistent ClientApp
   process per SuperNode), each in its own process group, logging to ``<out>/logs/``;
   SuperNode ``k`` holds partition ``k`` of the data (node config
   ``partition-id=k num-partitions=N``);
3. waits until every SuperNode is online, submits the app with ``flwr run`` and follows the
   run's status with ``flwr ls`` (``flwr run`` can print ``"success": false`` and still exit 0,
   and a run can fail after it started: only the final status ``finished:completed`` *and* the
   ServerApp's result file count as success);
4. stops every process it started (terminate, then kill after ``--stop-timeout`` seconds,
   children included), on success, on failure and on Ctrl-C; a watchdog process stops them
   too when the launcher itself is killed (SIGKILL, out of memory), and a new launch stops
   what an earlier one left behind in ``--out``, saying so.

A bad option is one line on stderr naming it and what is allowed, exit 2, before anything
starts; neither TensorFlow nor Flower is imported for these checks (nor for ``--help``), so
they answer in well under a second and no TensorFlow log line reaches the terminal. ``--out``
is created only when the launch takes it (and removed again if a check leaves it empty), is
locked while a launch uses it, and a folder that already holds a result is refused unless
``--overwrite``.

The last line printed is one JSON object with the final accuracy and where the result is.
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
from typing import Any

from local_federation import FLOWER_POLLS, LOOPBACK_POLLS, DeploymentError, LocalFederation, strip_colours

__all__ = ["DeploymentError", "LocalFederation", "run_local", "main"]


def run_local(config, out: str | os.PathLike, *, superlink_port: int = 9093, node_port: int = 9094,
              superlink_address: str | None = None, connect_timeout: float = 60.0,
              run_timeout: float = 900.0, stop_timeout: float = 10.0, persistent: bool = True,
              secure: bool = True, idle_poll: float = LOOPBACK_POLLS[0],
              reply_poll: float = LOOPBACK_POLLS[1],
              federation: list[LocalFederation] | None = None) -> dict[str, Any]:
    """Deploy ``config`` (an ``ExperimentConfig``) locally and return the ServerApp's result.

    One SuperNode per client (``config.num_clients``). The result is the JSON the ServerApp
    wrote (``<out>/result.json``: per-round history, dataset and weights) plus ``run_id`` and
    ``status``. ``persistent``, ``secure``, ``idle_poll`` and ``reply_poll`` are
    ``LocalFederation``'s (one long-running ClientApp process per node; TLS and node
    authentication, on unless ``secure=False`` is asked for, as on the command line; the
    SuperNodes' waits). ``federation``, if given,
    receives the ``LocalFederation`` (tests use it to check that no process outlives the call).

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
                         connect_timeout=connect_timeout, stop_timeout=stop_timeout,
                         persistent=persistent, secure=secure, idle_poll=idle_poll,
                         reply_poll=reply_poll) as fed:
        if federation is not None:
            federation.append(fed)
        fed.start()
        run_id = fed.submit({"experiment": run_config_for(config), "result-path": str(result_path),
                             "node-timeout": float(connect_timeout)})
        run = fed.wait(run_id, run_timeout, result_path)
        log = strip_colours(fed.serverapp_log(run_id))
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
    from fedtl_helpers.workflow.cli import Parser, add_config_options

    parser = Parser(prog="python deploy/run_local.py", description=__doc__.split("\n\n")[0])
    # The deployment accepts only randomness="secure": its default here, so it need not be typed.
    add_config_options(parser, num_clients=2, rounds=3, n_train=1000, n_test=500, randomness="secure")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the result already in --out")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    parser.add_argument("--secure", action="store_true",
                        help="TLS on every connection and SuperNode authentication (certificates and "
                             "node keys made in --out): the default, kept for old command lines")
    parser.add_argument("--insecure", action="store_true",
                        help="plain HTTP and no SuperNode authentication (loopback rehearsal only)")
    parser.add_argument("--fresh-clientapps", action="store_true",
                        help="Flower's default: a new ClientApp process (TensorFlow import, data, "
                             "model) for every message, instead of one persistent process per node")
    for name, default, what in (
            ("--out", "runs/deploy", "folder for logs, Flower homes and result.json"),
            ("--superlink-port", 9093, "the SuperLink's port on 127.0.0.1"),
            ("--node-port", 9094, "SuperNode k's Runtime API port is node-port + k"),
            ("--superlink-address", None, "host:port of a running SuperLink (none is started)"),
            ("--connect-timeout", 60.0, "seconds a SuperNode tries to reach the SuperLink"),
            ("--run-timeout", 900.0, "seconds the run may take"),
            ("--stop-timeout", 10.0, "seconds between terminate and kill at shutdown"),
            ("--idle-poll", LOOPBACK_POLLS[0], "seconds a SuperNode waits when the SuperLink had no "
             f"message for it (Flower's own: {FLOWER_POLLS[0]:g})"),
            ("--reply-poll", LOOPBACK_POLLS[1], "seconds between a SuperNode's looks for its "
             f"ClientApp's reply (Flower's own: {FLOWER_POLLS[1]:g})")):
        kind = type(default) if default is not None else str
        parser.add_argument(name, type=kind, default=default, help=f"{what} (default: {default})")
    return parser


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def check_options(options: dict[str, Any], num_clients: int) -> None:
    """Ports and timeouts make sense (before anything starts).

    Raises
    ------
    UserError
        Naming the option and the allowed values.
    """
    from fedtl_helpers.core.storage import UserError

    for name in ("superlink_port", "node_port"):
        port = options[name]
        if not 1024 <= port <= 65535:
            raise UserError(f"--{name.replace('_', '-')}={port} is invalid: allowed a port in "
                            "1024..65535")
    if options["node_port"] + num_clients - 1 > 65535:
        raise UserError(f"--node-port={options['node_port']} is invalid with {num_clients} clients: "
                        f"allowed at most {65536 - num_clients} (SuperNode k uses node-port + k)")
    if options["superlink_address"] is None and (
            options["superlink_port"] - options["node_port"]) in range(num_clients):
        raise UserError(f"--superlink-port={options['superlink_port']} collides with the SuperNodes' "
                        f"ports {options['node_port']}..{options['node_port'] + num_clients - 1}: "
                        "allowed a port outside them")
    address = options["superlink_address"]
    if address is not None and options.get("secure"):
        raise UserError("--secure is invalid with --superlink-address: allowed only with the "
                        "SuperLink the launcher starts (it makes the certificate and registers the "
                        "node keys); secure an external SuperLink as the chapter shows")
    if address is not None and not re.fullmatch(r"[^\s:]+:\d{1,5}", address):
        raise UserError(f"--superlink-address={address!r} is invalid: allowed host:port, e.g. "
                        "127.0.0.1:9093")
    if options.get("secure") and options.get("insecure"):
        raise UserError("--secure is invalid with --insecure: allowed one of them (TLS is the default)")
    if address is not None and not options.get("insecure"):
        raise UserError("--superlink-address is invalid without --insecure: allowed only for a plain "
                        "HTTP rehearsal; SuperNodes joining a SuperLink with TLS and node keys are "
                        "started with `python deploy/launch.py supernode` (see the chapter)")
    for name in ("connect_timeout", "run_timeout", "stop_timeout", "idle_poll", "reply_poll"):
        value = options[name]
        if not 0 < value < math.inf:
            raise UserError(f"--{name.replace('_', '-')}={value} is invalid: allowed a finite "
                            "number of seconds > 0")


def main(argv: list[str] | None = None) -> int:
    """Check every option, then deploy; the exit status (0, 1 failed, 2 usage, 130 interrupted).

    Nothing before ``run_local`` imports TensorFlow or Flower, so ``--help`` and a refused
    option answer in a fraction of a second; the Flower processes quiet TensorFlow themselves.
    """
    from fedtl_helpers.workflow.cli import privacy_lines, quiet_tensorflow

    quiet_tensorflow()  # first: if anything below ever imports TensorFlow, its C++ logger is quiet
    # stages.check_supported is what fedtl_deploy.task.check_deployable (the ServerApp's check)
    # calls; imported from here, it answers without Flower, dp-accounting or Keras.
    from fedtl_helpers.core import storage
    from fedtl_helpers.core.config import ExperimentConfig
    from fedtl_helpers.core.history import History
    from fedtl_helpers.federation.stages import DEPLOYMENT, check_supported

    args = vars(build_parser().parse_args(argv))
    options = {k: args.pop(k) for k in ("out", "superlink_port", "node_port", "superlink_address",
                                         "connect_timeout", "run_timeout", "stop_timeout",
                                         "idle_poll", "reply_poll")}
    overwrite, debug = args.pop("overwrite"), args.pop("debug")
    options.update(secure=args.pop("secure"), insecure=args.pop("insecure"),
                   persistent=not args.pop("fresh_clientapps"))
    out = options.pop("out")
    signal.signal(signal.SIGTERM, _raise_interrupt)  # `kill` stops the federation like Ctrl-C
    # Installed explicitly: a process started in the background by a non-interactive shell
    # inherits SIGINT *ignored*, and Python then never raises KeyboardInterrupt on Ctrl-C.
    signal.signal(signal.SIGINT, _raise_interrupt)
    try:
        try:
            config = ExperimentConfig(**args)
            check_supported(config, DEPLOYMENT)  # what the Flower app cannot run, refused up front
        except ValueError as e:
            raise storage.UserError(str(e)) from e
        check_options(options, config.num_clients)
        options["secure"] = not options.pop("insecure")  # TLS and node keys unless --insecure
        for line in privacy_lines(config, "start"):  # a DP run says its epsilon on the terminal
            print(line, file=sys.stderr)
        folder = storage.check_output_dir(out)
        with storage.FolderLock(folder, "deploy/run_local.py"):
            if (folder / "result.json").exists() and not overwrite:
                raise storage.UserError(f"--out={out!r} already holds a result (result.json): "
                                        "allowed --overwrite to replace it, or another --out")
            result = run_local(config, folder, **options)
    except storage.UserError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except DeploymentError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: every Flower process was stopped", file=sys.stderr)
        return 130
    print(History.from_dict(result["history"]).table())
    for line in privacy_lines(config, "end"):
        print(line, file=sys.stderr)
    print(json.dumps({"final_test_accuracy": result["final_test_accuracy"], "rounds": config.rounds,
                      "dataset": result["history"]["meta"]["dataset"],
                      "weights": result["history"]["meta"]["weights"], "runtime": "flower",
                      "secure": options["secure"], "transport": result["security"]["transport"],
                      "node_authentication": result["security"]["node_authentication"],
                      "persistent_clientapps": options["persistent"],
                      "run_id": result["run_id"], "seconds": round(result["seconds"], 1),
                      "result": result["result_path"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

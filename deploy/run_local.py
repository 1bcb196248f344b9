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
import signal
import sys
import time
from pathlib import Path
from typing import Any

from local_federation import DeploymentError, LocalFederation, strip_colours

__all__ = ["DeploymentError", "LocalFederation", "run_local", "main"]


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
    from fedtl_deploy.task import check_deployable

    from fedtl_helpers.config import ExperimentConfig
    from fedtl_helpers.history import History

    args = vars(build_parser().parse_args(argv))
    options = {k: args.pop(k) for k in ("out", "superlink_port", "node_port", "superlink_address",
                                         "connect_timeout", "run_timeout", "stop_timeout")}
    try:
        config = ExperimentConfig(**args)
        check_deployable(config)  # what the Flower app cannot run, refused before any process starts
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _raise_interrupt)  # `kill` stops the federation like Ctrl-C
    # Installed explicitly: a process started in the background by a non-interactive shell
    # inherits SIGINT *ignored*, and Python then never raises KeyboardInterrupt on Ctrl-C.
    signal.signal(signal.SIGINT, _raise_interrupt)
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
    sys.exit(main())

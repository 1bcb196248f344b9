"""One long-running ClientApp process for a SuperNode started with ``--isolation process``.

Chapter: "From simulation to deployment". Flower 1.42 runs every message a SuperNode receives
as a *task*: by default (``--isolation subprocess``) the SuperNode's SuperExec starts a fresh
``flwr-clientapp`` process for each one, which imports the app (here: TensorFlow), runs it once
and exits (``flwr.supernode.runtime.run_clientapp`` ends in ``flwr_exit``; even Flower's warm
executor pools, Kubernetes only, start a fresh single-use worker per task). With
``--isolation process`` the SuperNode starts no SuperExec: some other process claims its
tasks through the SuperNode's Runtime API. This is that process, and it stays up: it claims
each ClientApp task (``AcquireTask``, every ``poll`` seconds), then runs it exactly as
``flwr-clientapp`` does, with Flower's own functions (``pull_task_input``, a task heartbeat,
``push_message``, ``push_task_output``), but with the app loaded once: the Python modules,
and what the app keeps in them (``fedtl_deploy.client_app`` keeps its node's data, model and
traced train step), survive from one message to the next.

One app (FAB) per process: a task of another FAB is handed to Flower's own ``flwr-clientapp``
(a fresh process, as Flower would run it), since Python cannot unload the first app's modules.
The process exits with the SuperNode (``--parent-pid``: Flower's parent monitor) and on
SIGTERM; ``deploy/local_federation.py`` starts one per SuperNode and stops it with the others.

**Private Flower internals, and why.** Flower 1.42's public surface for a ClientApp is
``flwr.clientapp.ClientApp`` (and ``mod``), ``flwr.app``'s records, and the ``flwr-clientapp``
command, which runs exactly one task and exits. ``--isolation process`` lets another process
claim a SuperNode's tasks, but the protocol for it (``AcquireTask`` on the Runtime API, the
task token, pulling the task's input, the task heartbeat, pushing the reply and the task's
status) is exposed only through internal modules; there is no public way to keep one
ClientApp process across tasks. This file therefore uses, and only these:
``flwr.proto.runtime_pb2.AcquireTaskRequest``, ``flwr.supercore`` (``log``,
``app_utils.start_parent_process_monitor``, ``constant.TaskType``, ``heartbeat``,
``interceptors``, ``retry``, ``runtime.RuntimeHttpClient``),
``flwr.supernode.runtime.run_clientapp`` (``pull_task_input``, ``push_message``,
``push_task_output``), ``flwr.cli.install.install_from_fab``,
``flwr.clientapp.utils.get_load_client_app_fn`` and ``flwr.common.constant``. It refuses to
start under another Flower version than ``FLOWER`` (the pin in ``requirements.txt``) or when
one of them is missing, naming the public fallback: ``run_local.py --fresh-clientapps`` (or a
SuperNode without ``--isolation process``), Flower's own fresh ``flwr-clientapp`` per message,
slower (TensorFlow imported for every message) but public.
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from importlib.metadata import version
from logging import ERROR, INFO

FLOWER = "1.42.0"  # the version whose internals this was written against (requirements.txt pins it)
FALLBACK = ("run the SuperNode without --isolation process (run_local.py --fresh-clientapps): "
            "Flower's own flwr-clientapp, a fresh process per message")
if version("flwr") != FLOWER:
    sys.exit(f"deploy/persistent_clientapp.py was written for flwr {FLOWER}'s internal modules and "
             f"found flwr {version('flwr')}: {FALLBACK}, or check the modules it names and update FLOWER.")
try:
    from flwr.app import Error, Message
    from flwr.cli.install import install_from_fab
    from flwr.clientapp.utils import get_load_client_app_fn
    from flwr.common.constant import ErrorCode, SubStatus
    from flwr.proto.runtime_pb2 import AcquireTaskRequest  # pylint: disable=E0611
    from flwr.supercore import log
    from flwr.supercore.app_utils import start_parent_process_monitor
    from flwr.supercore.constant import TaskType
    from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
    from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message, push_task_output
except ImportError as e:  # an internal module moved although the version matches (a patched install)
    sys.exit(f"deploy/persistent_clientapp.py: Flower's internal {e.name or e} is missing: {FALLBACK}.")


@contextmanager
def interrupt_after(seconds: float):
    """Raise ``KeyboardInterrupt`` in this (the main) thread if the block runs past ``seconds``.

    ``pull_task_input`` pulls the message's objects with unbounded retries: when the SuperLink
    restarted while a message was half delivered (its run gone), they never come, and this
    process hung there for good, taking no further task (found by tests/test_multihost.py's
    fault test). Past the deadline the task fails and the process serves the next one.
    """
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _client(address: str, component: str, token: str | None = None) -> RuntimeHttpClient:
    """A Runtime API client (plain HTTP: the SuperNode's Runtime API listens on loopback only)."""
    interceptors = [RuntimeVersionHttpInterceptor(component_name=component)]
    if token is not None:
        interceptors.append(RuntimeTokenHttpInterceptor(token))
    return RuntimeHttpClient.from_server_address(
        server_address=address, insecure=True, root_certificates=None, interceptors=interceptors,
        retry_invoker=make_simple_http_retry_invoker())


class PersistentClientApp:
    """Claims a SuperNode's ClientApp tasks and runs them in this process, app loaded once.

    Parameters
    ----------
    runtime_api_address
        The SuperNode's Runtime API, ``host:port`` (its ``--host`` / ``--port``).
    parent_pid
        The SuperNode's pid: this process exits when it does.
    """

    def __init__(self, runtime_api_address: str, parent_pid: int | None = None,
                 input_timeout: float = 300.0):
        self.address = runtime_api_address
        self.input_timeout = input_timeout
        self.parent_pid = parent_pid
        self.fab_hash: str | None = None  # the app this process has loaded
        self.app = None
        self.tasks = 0

    def serve(self, poll: float) -> None:
        """Claim and run tasks until stopped; ``poll`` seconds between claims when idle."""
        if self.parent_pid is not None:
            start_parent_process_monitor(self.parent_pid)  # SIGINT when the SuperNode is gone
        acquire = _client(self.address, "SuperExec")  # it claims tasks, as a SuperExec does
        log(INFO, "persistent ClientApp process %d serving %s", os.getpid(), self.address)
        while True:
            res = acquire.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP]))
            if not (res.HasField("task") and res.token):
                time.sleep(poll)
            elif self.fab_hash not in (None, res.task.fab_hash):
                self._hand_to_flower(res.token)  # another app: Flower's fresh process runs it
            else:
                self.run_task(res.token)

    def run_task(self, token: str) -> None:
        """One task, as ``flwr-clientapp --token`` runs it, in this process."""
        client = _client(self.address, "flwr-clientapp", token)
        heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
        heartbeat.start()
        message = context = reply = None
        status, details = SubStatus.FAILED, "ClientApp task failed due to unknown reason"
        try:
            with interrupt_after(self.input_timeout):  # Flower's pull retries forever
                message, context, run, fab = pull_task_input(client)
            if self.app is None:
                install_from_fab(fab.content, skip_prompt=True)
                load = get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)
                self.app = load(run.fab_id, run.fab_version, fab.hash_str)
                self.fab_hash = fab.hash_str
            reply = self.app(message=message, context=context)
            status, details = SubStatus.COMPLETED, ""
        except (Exception, KeyboardInterrupt) as ex:  # noqa: BLE001 (reported to the server, as Flower does)
            if isinstance(ex, KeyboardInterrupt) and not self._parent_alive():
                raise  # the SuperNode is gone: stop serving
            # A refused heartbeat (the run was stopped) also arrives as SIGINT: fail this task only.
            details = f"{type(ex)}:<'{ex}'>"
            log(ERROR, "ClientApp raised an exception", exc_info=ex)
            if message is not None:
                reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=details),
                                reply_to=message)
        else:
            self.tasks += 1
            log(INFO, "ClientApp task done in process %d (%d so far)", os.getpid(), self.tasks)
        finally:
            try:
                if reply is not None and context is not None:
                    push_message(client, reply, context)
            finally:
                heartbeat.stop()  # before the task ends: a late heartbeat would be refused
                push_task_output(client=client, context=context, sub_status=status, details=details)
                client.close()

    def _hand_to_flower(self, token: str) -> None:
        """Run a claimed task the way Flower's SuperExec does: ``flwr-clientapp --token``."""
        subprocess.run(["flwr-clientapp", "--runtime-api-address", self.address, "--token", token,
                        "--insecure", *(["--parent-pid", str(self.parent_pid)] if self.parent_pid else [])],
                       check=False)

    def _parent_alive(self) -> bool:
        if self.parent_pid is None:
            return True
        try:
            os.kill(self.parent_pid, 0)
            return True
        except ProcessLookupError:
            return False


def main(argv: list[str] | None = None) -> None:
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>`: where is it? (stack to the log)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runtime-api-address", required=True, help="the SuperNode's Runtime API, host:port")
    p.add_argument("--parent-pid", type=int, default=None, help="exit when this process (the SuperNode) does")
    p.add_argument("--poll", type=float, default=0.05, help="seconds between task claims when idle")
    p.add_argument("--input-timeout", type=float, default=300.0,
                   help="seconds a task's message may take to arrive before the task fails")
    args = p.parse_args(argv)
    try:
        PersistentClientApp(args.runtime_api_address, args.parent_pid, args.input_timeout).serve(args.poll)
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()

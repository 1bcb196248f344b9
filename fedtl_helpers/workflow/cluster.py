"""Run a grid's unfinished runs as Dask tasks: ``experiments run GRID --workers N | --scheduler ADDR``.

Chapter: "Running experiments" (14), section "When one machine is not enough". One run is one
task. The task calls the same ``experiments._run_one`` as the sequential runner, on a worker, so a
run's files (``<run_id>.ipynb``, ``.json``, ``.log``, ``.out/``) are the same whichever ran it,
and a grid started one way can be finished the other.

What a worker needs: ``fedtl_helpers`` installed (same version), and the notebook and the run
folder (``--out``) at the same absolute path as the driver: a shared file system, as on every
Slurm cluster. The driver checks both on every worker before it submits anything. The driver keeps
the grid's lock; workers write a run's result atomically and last, as the sequential runner does.

Threads: each run gets ``cores of its host // runs the host executes at once`` threads
(at least 1) for TensorFlow's intra-op pool, OpenMP and BLAS; inter-op is 1. Without the limit two
runs on two cores each start pools sized for the whole machine and fight over it.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import math
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..core.storage import UserError
from . import experiments as ex

# Every variable a run's numeric libraries read for their thread pools.
BLAS_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
             "NUMEXPR_NUM_THREADS")
POLL_SECONDS = 1.0
CONNECT_TIMEOUT = 20.0  # seconds to wait for --scheduler to answer


def threads_per_run(host_cores: int, runs_on_host: int) -> int:
    """The rule: a host's cores shared evenly by the runs it executes at once, at least 1.

    >>> threads_per_run(16, 4), threads_per_run(2, 2), threads_per_run(2, 3)
    (4, 1, 1)
    """
    return max(1, int(host_cores) // max(1, int(runs_on_host)))


def thread_env(threads: int) -> dict[str, str]:
    """Environment variables that hold one run to ``threads`` threads (TensorFlow, OpenMP, BLAS).

    TensorFlow reads ``TF_NUM_INTRAOP_THREADS`` / ``TF_NUM_INTEROP_THREADS`` when it creates its
    thread pools; inter-op is 1 because a Keras training step is a chain of ops with little to run
    side by side, and every inter-op thread can itself run an op's kernel.
    """
    if threads < 1:
        raise ValueError(f"threads={threads!r}: allowed a whole number >= 1")
    return {**{name: str(threads) for name in BLAS_VARS},
            "TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": "1"}


def makespan(run_seconds: list[float], workers: int) -> float:
    """Seconds until the last run ends when ``workers`` workers each take the next run as they
    free up, longest first (what a scheduler with the whole grid queued achieves, within 4/3 of
    the best order). Computed from measured per-run times, not measured: no start-up, no transfer.

    >>> makespan([3, 3, 2, 2, 2], 2)
    7.0
    """
    if workers < 1:
        raise ValueError(f"workers={workers!r}: allowed a whole number >= 1")
    finish = [0.0] * workers
    for seconds in sorted(run_seconds, reverse=True):
        heapq.heappush(finish, heapq.heappop(finish) + float(seconds))
    return max(finish)


def _host(address: str) -> str:
    return address.split("://")[-1].rsplit(":", 1)[0]


def _worker_check(paths: list[str]) -> str | None:
    """Run on every worker before the grid: what this worker cannot see, or None."""
    missing = [p for p in paths if not Path(p).exists()]
    return f"cannot see {', '.join(missing)}" if missing else None


def run_task(notebook: str, params: dict, run_dir: str, rid: str, kernel_name: str,
             runs_by_host: dict[str, int]) -> dict:
    """One run, executed on a Dask worker; a notebook error is returned, not raised.

    Returned, because a notebook error is deterministic: Dask's retries would only repeat it. A
    worker that dies is a different matter: the scheduler gives the task to another worker.
    """
    from dask.system import CPU_COUNT
    from distributed import get_worker

    worker = get_worker()
    threads = threads_per_run(CPU_COUNT, runs_by_host.get(_host(worker.address), worker.state.nthreads))
    where = {"worker": worker.address, "threads": threads}
    try:
        record = ex._run_one(Path(notebook), params, Path(run_dir), rid, kernel_name, env=thread_env(threads))
    except Exception as e:
        return {"status": "failed", "error": ex._first_line(e), **where}
    return {"status": "done", "record": record, **where}


def _fmt(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    """The live line: ``done / running / failed, elapsed, left``; rewritten in place on a terminal,
    else emitted through ``progress`` only when a count changes (logs and tests stay readable)."""

    def __init__(self, total: int, skipped: int, slots: int, progress: Callable[[str], Any], live: bool):
        self.total, self.done, self.failed, self.slots = total, skipped, 0, max(1, slots)
        self.running, self.times, self.start = 0, [], time.monotonic()
        self.progress, self.live, self._last, self._shown = progress, live, None, False
        self.lost: Callable[[], int] = lambda: 0  # workers that died so far
        self.last_finish = self.start

    def finished(self, seconds: float | None) -> None:
        """A run ended: done (with its time) or failed (``None``)."""
        if seconds is None:
            self.failed += 1
        else:
            self.done += 1
            self.times.append(seconds)
        self.last_finish = time.monotonic()

    def text(self) -> str:
        left = self.total - self.done - self.failed
        eta = None
        if self.times:  # waves of runs still to go at the mean run time, less what the current wave has done
            eta = (sum(self.times) / len(self.times)) * math.ceil(left / self.slots)
            eta = max(0.0, eta - (time.monotonic() - self.last_finish))
        lost = self.lost()
        return (f"{self.done}/{self.total} done, {self.running} running, {self.failed} failed, "
                f"elapsed {_fmt(time.monotonic() - self.start)}, left ~{_fmt(eta if left else 0)}"
                + (f"; {lost} worker(s) died, their runs given to others (cluster.log)" if lost else ""))

    def show(self) -> None:
        if self.live:
            sys.stdout.write("\r\033[K" + self.text())
            sys.stdout.flush()
            self._shown = True
        elif (key := (self.done, self.running, self.failed, self.lost())) != self._last:
            self._last = key
            self.progress(self.text())

    def line(self, text: str) -> None:
        """A permanent line (a run finished or failed) above the live line."""
        if self._shown:
            sys.stdout.write("\r\033[K")
            self._shown = False
        self.progress(text)

    def close(self) -> None:
        if self._shown:
            sys.stdout.write("\n")
            sys.stdout.flush()


class _LogFile(logging.Handler):
    """Appends records to a file, opened at the first one. Deliberately not a ``StreamHandler``:
    distributed's ``silence_logs`` lowers every ``StreamHandler`` of its logger, this one too."""

    def __init__(self, path: Path):
        super().__init__(logging.INFO)
        self.path, self._file = path, None
        self.workers_lost = 0  # local workers that died (the nanny says so): for the progress line
        self.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.name == "distributed.nanny" and ("was killed by signal" in message
                                                       or "exited with status" in message):
                self.workers_lost += 1
            if self._file is None:
                self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
            self._file.write(self.format(record) + "\n")
            self._file.flush()
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        super().close()


@contextlib.contextmanager
def _quiet_distributed(log_path: Path) -> Iterator[_LogFile]:
    """Distributed's own log lines go to ``cluster.log`` in the run folder, not the terminal."""
    from distributed.utils import silence_logging_cmgr

    logger = logging.getLogger("distributed")
    handler = _LogFile(log_path)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(min(logging.INFO, logger.getEffectiveLevel()))
    try:
        with silence_logging_cmgr(logging.CRITICAL):
            yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        handler.close()


def _descendants(exclude: frozenset[int] = frozenset()) -> list:
    """This process's descendants, less ``exclude`` and Python's multiprocessing resource tracker
    (one per process, shared with whatever else uses multiprocessing here; it exits with us)."""
    import psutil

    found = []
    try:
        for p in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if p.pid not in exclude and "resource_tracker" not in " ".join(p.cmdline()):
                    found.append(p)
    except psutil.Error:
        pass
    return found


def _reap(processes: list, grace: float = 5.0) -> None:
    """Terminate, then kill, whatever of ``processes`` outlived the cluster's own shutdown."""
    import psutil

    alive = [p for p in processes if p.is_running()]
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(alive, timeout=grace)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=grace)


@contextlib.contextmanager
def open_client(workers: int | None, scheduler: str | None) -> Iterator[Any]:
    """A ``distributed.Client``: on a new local cluster of ``workers`` processes (1 thread each, on
    127.0.0.1) or on the scheduler at ``scheduler``. Leaving it closes a local cluster and ends
    every process it started (also the Jupyter kernels of runs in progress), also on Ctrl-C."""
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as e:
            raise UserError(f"--scheduler={scheduler!r}: no Dask scheduler answered within "
                            f"{CONNECT_TIMEOUT:.0f} s ({type(e).__name__}: {e}); allowed the address "
                            "of a running one, e.g. tcp://10.0.0.5:8786 (start it with "
                            "`dask scheduler`)") from e
        with client:
            yield client
        return
    cluster = client = None
    before = frozenset(p.pid for p in _descendants())  # not ours to end (e.g. another grid's kernel)
    try:
        # 127.0.0.1 and free ports: nothing listens beyond this machine, and two grids (or two
        # users) on one machine do not collide on 8786/8787.
        # worker-saturation 1.0: a worker holds only the run it executes (Dask's default 1.1 gives
        # a 1-thread worker a second, queued run), so a killed worker loses only that run.
        import dask

        with dask.config.set({"distributed.scheduler.worker-saturation": 1.0}):
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   host="127.0.0.1", scheduler_port=0, dashboard_address="127.0.0.1:0",
                                   silence_logs=logging.CRITICAL)
        client = Client(cluster)
        yield client
    finally:
        # Workers are children of this process and kernels are theirs: take the list before the
        # workers go, since a dead worker's kernel is no longer our descendant.
        processes = _descendants(before)
        for closeable in (client, cluster):
            if closeable is not None:
                with contextlib.suppress(Exception):
                    closeable.close(timeout=10)
        _reap(processes)


def _has_bokeh() -> bool:
    import importlib.util

    return importlib.util.find_spec("bokeh") is not None


def dashboard_line(client: Any, local: bool) -> str:
    """Where the Dask dashboard is, or why there is none."""
    import importlib.util

    link = getattr(client, "dashboard_link", "") or ""
    try:  # the scheduler serves the dashboard: is bokeh installed where it runs?
        has_bokeh = (importlib.util.find_spec("bokeh") is not None if local
                     else client.run_on_scheduler(_has_bokeh))
    except Exception:
        has_bokeh = True  # cannot tell: give the address, its page says what is missing
    if not has_bokeh:
        return "dashboard: not available (pip install 'bokeh>=3.1' to get Dask's live dashboard)"
    return f"dashboard: {link}" if link else "dashboard: not available (the scheduler serves none)"


def run_distributed(spec: ex.GridSpec, run_dir: Path, kernel_name: str, progress: Callable[[str], Any], *,
                    workers: int | None = None, scheduler: str | None = None,
                    live: bool = False) -> list[str]:
    """Run the unfinished runs of ``spec`` as Dask tasks, write the summary; the failed run ids."""
    run_dir = run_dir.resolve()
    todo, skipped = [], 0
    for i, params in enumerate(spec.runs, 1):
        rid = ex.run_id(params)
        if ex._is_finished(run_dir / f"{rid}.json"):
            progress(f"[{i}/{len(spec.runs)}] {rid} ... skip (finished)")
            skipped += 1
        else:
            todo.append((i, params, rid))
    failed: list[str] = []
    if todo:
        with _quiet_distributed(run_dir / "cluster.log") as log:
            # No idle workers: 3 runs left on --workers 8 start 3 (with more threads each).
            with open_client(min(workers, len(todo)) if workers else None, scheduler) as client:
                failed = _submit_and_wait(client, spec, run_dir, todo, skipped, kernel_name, progress,
                                          local=scheduler is None, live=live, log=log)
    ex.write_summary(run_dir, spec.name)
    return failed


def _submit_and_wait(client, spec, run_dir, todo, skipped, kernel_name, progress, *, local,
                     live, log=None) -> list[str]:
    from distributed import wait

    info = client.scheduler_info(n_workers=-1)
    runs_by_host: dict[str, int] = {}
    for address, worker in info["workers"].items():
        runs_by_host[_host(address)] = runs_by_host.get(_host(address), 0) + worker["nthreads"]
    slots = sum(runs_by_host.values())
    if not local:
        _check_workers(client, [str(run_dir), str(spec.notebook.resolve())])
    progress(f"cluster: {len(info['workers'])} workers, {slots} runs at a time, scheduler "
             f"{client.scheduler.address}; {dashboard_line(client, local)}")
    n = len(spec.runs)
    futures = {}
    for i, params, rid in todo:
        future = client.submit(run_task, str(spec.notebook.resolve()), params, str(run_dir), rid, kernel_name,
                               runs_by_host, key=f"run-{rid}-{secrets.token_hex(4)}", pure=False,
                               retries=0)
        futures[future] = (i, rid)
    bar = Progress(n, skipped, slots, progress, live)
    bar.lost = (lambda: log.workers_lost) if log is not None else (lambda: 0)
    failed: list[str] = []
    killed = 0  # worker deaths the scheduler has told us of (KilledWorker): the nanny's count catches up
    pending = set(futures)
    try:
        while pending:
            bar.running = _running(client, pending)
            bar.show()
            try:
                done, pending = wait(pending, timeout=POLL_SECONDS, return_when="FIRST_COMPLETED")
            except TimeoutError:
                continue
            for future in done:
                i, rid = futures[future]
                prefix = f"[{i}/{n}] {rid} ..."
                try:
                    result = future.result()
                except Exception as e:  # KilledWorker: the run's worker died allowed-failures times
                    killed += getattr(e, "allowed_failures", -1) + 1
                    result = {"status": "failed", "error": ex._first_line(e), "worker": "?", "threads": "?"}
                where = f"[{result['worker']}, {result['threads']} thread(s)]"
                if result["status"] == "done":
                    record = result["record"]
                    bar.finished(record["seconds"])
                    bar.line(f"{prefix} done in {record['seconds']:.1f} s (final: {_final(record)}) {where}")
                else:
                    bar.finished(None)
                    failed.append(rid)
                    bar.line(f"{prefix} FAILED: {result['error']} {where}")
        bar.running = 0
        if log is not None:  # local cluster: its nannies log the deaths
            _settle(bar.lost, killed)
        bar.show()
    except BaseException:
        if not local:  # a remote run keeps going unless its worker is restarted (needs a nanny)
            _stop_remote(client, pending, progress)
        raise
    finally:
        bar.close()
    return failed


def _settle(lost: Callable[[], int], at_least: int, timeout: float = 10.0) -> None:
    """Wait (up to ``timeout`` s) until the nannies have logged ``at_least`` deaths. The scheduler
    learns a worker died (its connection drops) before the worker's nanny logs the exit, so the
    last line would otherwise count one death short."""
    deadline = time.monotonic() + timeout
    while lost() < at_least and time.monotonic() < deadline:
        time.sleep(0.1)


def _final(record: dict) -> str:
    return ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in record["final"].items())


def _running(client, pending) -> int:
    """Runs executing now: our tasks on each worker, at most its threads."""
    keys = {f.key for f in pending}
    try:
        processing = client.processing()
        nthreads = client.nthreads()
    except Exception:
        return 0
    return sum(min(len(keys & set(tasks)), nthreads.get(w, 1)) for w, tasks in processing.items())


def _check_workers(client, paths: list[str]) -> None:
    try:
        problems = client.run(_worker_check, paths)
    except Exception as e:  # typically: fedtl_helpers cannot be imported on a worker
        raise UserError(f"--scheduler: the workers cannot run the grid ({ex._first_line(e)}); every "
                        "worker needs fedtl_helpers installed, the same version as here") from e
    bad = {w: p for w, p in problems.items() if p}
    if bad:
        worker, problem = next(iter(bad.items()))
        raise UserError(f"--scheduler: worker {worker} {problem} ({len(bad)} of {len(problems)} workers): "
                        "--out and the notebook must be on a path every worker sees at the same "
                        "place (a shared file system)")


def _stop_remote(client, pending, progress) -> None:
    """Ctrl-C with --scheduler: cancel queued runs and restart the workers running ours."""
    keys = {f.key for f in pending}
    with contextlib.suppress(Exception):
        busy = [w for w, tasks in client.processing().items() if keys & set(tasks)]
        client.cancel(list(pending), force=True)
        if busy:
            client.restart_workers(busy, timeout=30, raise_for_error=False)
            progress(f"stopped: restarted {len(busy)} worker(s) that were running runs of this grid")

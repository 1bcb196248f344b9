"""Run a grid of parameter sets through a notebook with papermill.

Chapter: "Running experiments". A grid is a small YAML file::

    name: weights-vs-rounds          # slug; results go to <out_root>/<name>/
    notebook: notebooks/case_study.ipynb   # relative to the current directory (the repo root)
    description: optional free text
    fixed: {rounds: 10}              # merged into every run
    grid: {weights: [builtin, none], lr: [0.1, 0.5]}   # cartesian product ...
    runs: [{weights: builtin, lr: 1.0}]                # ... and/or an explicit list

Every run executes the notebook with its parameters plus ``output_dir``, a fresh folder the
notebook must write ``metrics.json`` into: ``{"final": {...}, "per_round": [{"round": 1, ...}]}``.
A run is finished iff ``<run_id>.json`` exists and parses; it is written atomically and last, so
an interrupted or failed run is simply done again next time and finished runs are skipped.
The kernel's own output (TensorFlow's logs) goes to ``<run_id>.log``. ``--workers N`` /
``--scheduler ADDRESS`` run the same runs as Dask tasks (``cluster.py``).
"""

from __future__ import annotations

import argparse
import ast
import csv
import dataclasses
import difflib
import hashlib
import io
import itertools
import json
import os
import re
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ..core.figures import png_metadata
from ..core.storage import FolderLock, UserError, atomic_write_bytes, atomic_write_text, is_interrupt

ALLOWED_KEYS = {"name", "notebook", "grid", "runs", "fixed", "description"}
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
# Papermill type names -> the Python types a YAML value may have for them.
_ACCEPTS = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,),
            "list": (list, tuple), "tuple": (list, tuple), "dict": (dict,)}


@dataclasses.dataclass(frozen=True)
class GridSpec:
    """A parsed grid file: ``notebook`` is relative to the current directory, not the YAML."""

    name: str
    notebook: Path
    runs: list[dict]
    description: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not _SLUG.match(self.name):
            raise ValueError(f"name={self.name!r}: must be a slug of letters, digits, '-' and '_'")
        if not self.runs:
            raise ValueError(f"grid {self.name!r} has no runs")
        ids = [run_id(p) for p in self.runs]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"grid {self.name!r} lists the same run twice: {', '.join(dupes)}")


def expand(spec: dict) -> list[dict]:
    """Turn the ``grid`` / ``runs`` / ``fixed`` keys of a grid file into a list of parameter dicts.

    ``grid`` gives the cartesian product over its keys in sorted order (the first key varies
    slowest); ``runs`` is appended as given; ``fixed`` is merged into every run.

    Raises
    ------
    ValueError
        Neither ``grid`` nor ``runs``, a grid value that is not a non-empty list, or a parameter
        that is both fixed and varied.
    """
    fixed = spec.get("fixed") or {}
    grid = spec.get("grid") or {}
    runs = spec.get("runs") or []
    if not isinstance(fixed, dict) or not isinstance(grid, dict) or not isinstance(runs, list):
        raise ValueError("fixed and grid must be mappings, runs a list of mappings")
    if not grid and not runs:
        raise ValueError("the grid file needs a non-empty 'grid' or 'runs'")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"grid.{key}={values!r}: must be a non-empty list (use 'fixed' for one value)")
    keys = sorted(grid)
    # product() of no lists is one empty run, hence the `if keys`
    varied = [dict(zip(keys, c)) for c in itertools.product(*(grid[k] for k in keys))] if keys else []
    for i, run in enumerate(runs, 1):
        if not isinstance(run, dict):
            raise ValueError(f"runs[{i}]={run!r}: must be a mapping of parameter: value")
    out = []
    for run in varied + runs:
        both = sorted(set(run) & set(fixed))
        if both:
            raise ValueError(f"parameter(s) {', '.join(both)} are both fixed and varied")
        out.append({**fixed, **run})
    return out


def run_id(params: dict) -> str:
    """Readable, filesystem-safe and stable id: ``lr=0.5__rounds=3__<8 hex of sha1>``."""
    def short(value: Any) -> str:
        text = value if isinstance(value, str) else json.dumps(value) if isinstance(value, list | dict) \
            else str(value)
        return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "-"

    readable = "__".join(f"{short(str(k))}={short(v)}" for k, v in sorted(params.items()))
    digest = hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{readable[:80]}__{digest}" if readable else digest


def _yaml_problem(error: Exception) -> str:
    """PyYAML's multi-line error as one line: the problem and where (1-based line, column)."""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    context = getattr(error, "context", None)
    return f"{problem}{where}" + (f" ({context})" if context else "")


def load_grid(path: str | Path, root: str | Path | None = None) -> GridSpec:
    """Read and validate a grid YAML file (no notebook is run).

    A relative ``notebook`` path is taken relative to ``root`` (default: the working folder,
    normally the repository root).

    Raises
    ------
    ValueError
        Bad YAML, unknown top-level keys, bad name, empty grid or a missing notebook.
    """
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {_yaml_problem(e)}") from None
    except OSError as e:
        raise ValueError(f"grid file {str(path)!r} cannot be read ({e.strerror}): allowed an "
                         "existing YAML file, e.g. experiments/smoke.yaml") from None
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: expected a mapping with keys {sorted(ALLOWED_KEYS)}")
    unknown = sorted(set(spec) - ALLOWED_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(map(str, unknown))}; "
                         f"allowed: {', '.join(sorted(ALLOWED_KEYS))}")
    for key in ("name", "notebook"):
        if key not in spec:
            raise ValueError(f"{path}: missing {key!r}")
    base = Path(root) if root is not None else Path.cwd()
    notebook = base / str(spec["notebook"])  # an absolute path stays absolute
    if not notebook.is_file():
        raise ValueError(f"{path}: notebook={str(spec['notebook'])!r} not found (relative paths "
                         f"start at {base})")
    return GridSpec(spec["name"], notebook, expand(spec), str(spec.get("description") or ""))


def _expected_type(declared: dict) -> str | None:
    """The type a parameter's value must have, or None for "anything"."""
    name = declared.get("inferred_type_name", "None")
    if name == "None":  # no annotation: fall back to the type of the default value
        try:
            default = ast.literal_eval(declared.get("default", "None"))
        except (ValueError, SyntaxError):
            return None
        name = "None" if default is None else type(default).__name__
    return name if name in _ACCEPTS else None


def declared_parameters(notebook: str | Path) -> dict[str, dict[str, str]]:
    """The assignments of the notebook's ``parameters`` cell: name -> ``{"default": source,
    "inferred_type_name": annotation or "None"}``, as ``papermill.inspect_notebook`` reports them.

    Read with ``json`` and ``ast``: importing papermill alone takes a second, and a grid's
    mistakes should be reported faster than that.

    Raises
    ------
    ValueError
        The notebook is not JSON or its parameters cell is not valid Python.
    """
    try:
        cells = json.loads(Path(notebook).read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError, AttributeError) as e:
        raise ValueError(f"{notebook}: not a readable notebook ({e})") from None
    for cell in cells:
        if cell.get("cell_type") != "code" or "parameters" not in cell.get("metadata", {}).get("tags", []):
            continue
        source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        try:
            tree = ast.parse(source)
        except SyntaxError as e:
            raise ValueError(f"{notebook}: the parameters cell is not valid Python ({e})") from None
        declared = {}
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, annotation = node.targets[0], "None"
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                target, annotation = node.target, ast.get_source_segment(source, node.annotation)
            else:
                continue
            if isinstance(target, ast.Name):
                declared[target.id] = {"default": ast.get_source_segment(source, node.value),
                                       "inferred_type_name": annotation}
        return declared
    return {}


def check_parameters(notebook: str | Path, runs: list[dict]) -> None:
    """Check every run's parameter names and value types against the notebook's parameters cell.

    Raises
    ------
    ValueError
        A name the notebook does not declare (or the reserved ``output_dir``), a value of the wrong
        type (an int is fine for a float, anything for a ``None`` default, ``None`` for anything),
        or a notebook without an ``output_dir`` parameter.
    """
    declared = declared_parameters(notebook)
    names = ", ".join(declared) or "(none)"
    if "output_dir" not in declared:
        raise ValueError(f"{notebook} must declare `output_dir` in its parameters cell (declares: {names})")
    for i, params in enumerate(runs, 1):
        where = f"run {i} ({run_id(params)})"
        for key, value in params.items():
            if key == "output_dir":
                raise ValueError(f"{where}: output_dir is set by the runner, not the grid")
            if key not in declared:
                close = difflib.get_close_matches(key, list(declared), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"{where}: unknown parameter {key!r}{hint}; {notebook} declares: {names}")
            expected = _expected_type(declared[key])
            bad_bool = isinstance(value, bool) and expected in ("int", "float")
            # None is accepted everywhere: in our notebooks it always means "not set" (all the
            # data, random init, no resize), whatever the type of the default.
            if value is not None and expected and (bad_bool or not isinstance(value, _ACCEPTS[expected])):
                raise ValueError(f"{where}: parameter {key!r}={value!r} should be {expected} "
                                 f"(default in {notebook}: {declared[key]['default']})")
        check_config(declared, params, where)


def check_config(declared: dict, params: dict, where: str) -> None:
    """Check a run's values against ``ExperimentConfig``'s rules, as the notebook will see them.

    The notebook's parameters that are ``ExperimentConfig`` fields (its defaults, overridden by
    the run's values) must make a valid config; so an unknown strategy fails before the first
    run starts, not when its run is reached. A notebook with no such parameters is not checked.

    Raises
    ------
    ValueError
        ``where`` followed by the config's own message (field, value, what is allowed).
    """
    from ..core.config import ExperimentConfig

    fields = {f.name for f in dataclasses.fields(ExperimentConfig)}
    values = {}
    for key in fields & set(declared):
        try:
            values[key] = ast.literal_eval(declared[key].get("default", ""))
        except (ValueError, SyntaxError):
            continue  # a default computed by code: the notebook decides, the config checks later
    values.update({k: v for k, v in params.items() if k in fields})
    if not values:
        return
    try:
        ExperimentConfig(**values)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def _is_finished(result: Path) -> bool:
    try:
        return isinstance(json.loads(result.read_text(encoding="utf-8")), dict)
    except (OSError, ValueError):
        return False


def _first_line(e: BaseException) -> str:
    if getattr(e, "ename", None):  # papermill's execution error: the notebook's own exception
        return f"{e.ename}: {e.evalue}"
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def kernel_manager_class(log_path: Path, env: dict[str, str] | None = None) -> type:
    """A Jupyter kernel manager whose kernel writes its stdout/stderr into ``log_path``.

    TensorFlow's C++ and absl logs and ipykernel's own warnings ("Kernel is running over TCP
    without encryption") are written by the kernel process to its inherited file descriptors:
    without this they land on the grid runner's terminal between its progress lines. ``env``
    is added to the kernel's environment (the thread limits of ``cluster.thread_env``).
    """
    from jupyter_client.manager import AsyncKernelManager

    class LoggedKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw):
            log = open(log_path, "ab")  # noqa: SIM115 - the kernel process holds it; closed below
            try:
                kw.setdefault("env", os.environ.copy())
                kw["env"] = {**kw["env"], **(env or {})}
                return await super().start_kernel(stdout=log, stderr=log, **kw)
            finally:
                log.close()  # Popen has duplicated the descriptor into the kernel by now

    return LoggedKernelManager


def _run_one(notebook: Path, params: dict, run_dir: Path, rid: str, kernel_name: str,
             env: dict[str, str] | None = None) -> dict:
    """Execute one run; ``env`` is added to the kernel's environment (thread limits)."""
    import papermill

    out_dir = (run_dir / f"{rid}.out").resolve()
    shutil.rmtree(out_dir, ignore_errors=True)  # a partial run's metrics must not be read as ours
    out_dir.mkdir(parents=True)
    final_nb, tmp_nb = run_dir / f"{rid}.ipynb", run_dir / f".{rid}.partial.ipynb"
    final_nb.unlink(missing_ok=True)
    log_path = run_dir / f"{rid}.log"  # the kernel's own output: TF/absl logs, warnings
    log_path.write_bytes(b"")  # this attempt's log only
    start = time.perf_counter()
    try:
        # cwd = the notebook's folder, as when the book executes it
        papermill.execute_notebook(str(notebook), str(tmp_nb),
                                   parameters={**params, "output_dir": str(out_dir)}, kernel_name=kernel_name,
                                   progress_bar=False, cwd=str(notebook.parent),
                                   kernel_manager_class=kernel_manager_class(log_path, env))
    except BaseException:
        if tmp_nb.exists():  # keep the traceback readable, under a name that cannot look finished
            tmp_nb.replace(run_dir / f"{rid}.failed.ipynb")
        raise
    seconds = time.perf_counter() - start
    tmp_nb.replace(final_nb)
    metrics_path = out_dir / "metrics.json"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"the notebook wrote no metrics.json into output_dir ({out_dir})")
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    if not isinstance(metrics, dict) or not isinstance(metrics.get("final"), dict):
        raise ValueError(f"{metrics_path}: expected {{'final': {{...}}, 'per_round': [...]}}")
    record = {"run_id": rid, "params": params, "final": metrics["final"],
              "per_round": metrics.get("per_round", []), "seconds": round(seconds, 3),
              "notebook": str(notebook)}
    (run_dir / f"{rid}.failed.ipynb").unlink(missing_ok=True)
    atomic_write_text(run_dir / f"{rid}.json", json.dumps(record, indent=2) + "\n")  # last: marks it finished
    return record


def run_grid(path: str | Path, *, out_root: str | Path = "runs", root: str | Path | None = None,
             kernel_name: str = "python3", progress: Callable[[str], Any] = print,
             workers: int | None = None, scheduler: str | None = None, live: bool = False) -> Path:
    """Run every unfinished run of the grid file ``path``; return ``<out_root>/<name>/``.

    Parameters are checked before anything runs. Failed runs leave no ``<run_id>.json`` and do
    not stop the grid; ``summary.csv`` and ``summary.png`` are written at the end. Each run's
    kernel output (TensorFlow's logs) goes to ``<run_id>.log``, not the terminal.

    ``workers=N`` runs them as tasks on a new local Dask cluster of N processes, ``scheduler``
    on an existing Dask scheduler (``cluster.run_distributed``); neither: one after another, here.
    ``live`` rewrites the cluster's progress line in place (a terminal).

    Raises
    ------
    ValueError
        Bad grid file or parameters, including values the config refuses (nothing has run, no
        folder was created); ``storage.LockedError`` when another runner works in the folder.
    KeyboardInterrupt
        Ctrl-C: finished runs are kept, the interrupted one is redone next time.
    RuntimeError
        After the summary, when some runs failed; it lists their ids.
    """
    check_cluster_options(workers, scheduler)
    spec = load_grid(path, root)
    check_parameters(spec.notebook, spec.runs)
    run_dir = Path(out_root) / spec.name
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out={str(out_root)!r}: {run_dir} is a file: allowed a folder")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out={str(out_root)!r}: cannot create {run_dir} ({e.strerror}): allowed "
                        "a folder you can write to") from e
    with FolderLock(run_dir, f"grid runner for {path}"):  # a second runner would redo every run
        if workers is None and scheduler is None:
            failed = _run_all(spec, run_dir, kernel_name, progress)
        else:
            from .cluster import run_distributed

            failed = run_distributed(spec, run_dir, kernel_name, progress, workers=workers,
                                     scheduler=scheduler, live=live)
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(spec.runs)} runs failed: {', '.join(failed)}")
    return run_dir


def check_cluster_options(workers: int | None, scheduler: str | None) -> None:
    """``--workers`` and ``--scheduler``: one or the other, a positive count, a Dask address.

    Raises
    ------
    ValueError
        Both given, ``workers`` not a whole number >= 1, or an address that is not ``host:port``
        / ``tcp://host:port`` (or ``tls://``, ``inproc://``).
    """
    if workers is not None and scheduler is not None:
        raise ValueError(f"--workers={workers} and --scheduler={scheduler!r}: allowed one or the other "
                         "(--workers starts a local cluster, --scheduler uses a running one)")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"--workers={workers!r}: allowed a whole number >= 1")
    if scheduler is not None and not re.fullmatch(r"((tcp|tls|inproc|ucx)://)?[^\s:/]+:\d+(/\S*)?",
                                                  str(scheduler)):
        raise ValueError(f"--scheduler={scheduler!r}: allowed a Dask scheduler address such as "
                         "tcp://10.0.0.5:8786 or 127.0.0.1:8786")


def _run_all(spec: GridSpec, run_dir: Path, kernel_name: str, progress: Callable[[str], Any]) -> list[str]:
    """Run the unfinished runs, write the summary; the ids of the runs that failed."""
    failed = []
    for i, params in enumerate(spec.runs, 1):
        rid = run_id(params)
        prefix = f"[{i}/{len(spec.runs)}] {rid} ..."
        if _is_finished(run_dir / f"{rid}.json"):
            progress(f"{prefix} skip (finished)")
            continue
        try:
            record = _run_one(spec.notebook, params, run_dir, rid, kernel_name)
        except Exception as e:  # one broken run must not cost the rest of the grid
            if getattr(e, "ename", None) == "KeyboardInterrupt" or is_interrupt(e):  # Ctrl-C
                raise KeyboardInterrupt from e
            failed.append(rid)
            progress(f"{prefix} FAILED: {_first_line(e)}")
            continue
        final = ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in record["final"].items())
        progress(f"{prefix} done in {record['seconds']:.1f} s (final: {final})")
    write_summary(run_dir, spec.name)
    return failed


def collect(run_dir: str | Path) -> list[dict]:
    """The result records of the finished runs in ``run_dir``, sorted by run id."""
    records = []
    for path in sorted(Path(run_dir).glob("*.json")):
        if _is_finished(path) and "run_id" in (record := json.loads(path.read_text(encoding="utf-8"))):
            records.append(record)
    return records


SUMMARY_DPI = 200


def summary_labels(records: list[dict]) -> list[str]:
    """Legend labels for ``summary.png``: each run's *varied* parameters, ``weights=builtin``.

    A run id repeats every fixed parameter and a hash (90 characters); only what differs between
    the runs tells the curves apart. A single run, or runs that differ in nothing, keep their id.
    """
    def text(value: Any) -> str:
        return json.dumps(value) if isinstance(value, list | dict) else str(value)  # None as run_id has it

    keys = list(dict.fromkeys(k for r in records for k in r["params"]))
    varied = [k for k in keys if len({text(r["params"].get(k)) for r in records}) > 1]
    if not varied:
        return [r["run_id"] for r in records]
    return [", ".join(f"{k}={text(r['params'].get(k))}" for k in varied) for r in records]


def write_summary(run_dir: str | Path, name: str) -> tuple[Path, Path]:
    """Write ``summary.csv`` (run_id, parameters, final metrics) and ``summary.png`` into ``run_dir``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator


    run_dir = Path(run_dir)
    records = collect(run_dir)
    params = list(dict.fromkeys(k for r in records for k in r["params"]))
    finals = list(dict.fromkeys(k for r in records for k in r["final"]))
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["run_id", *params, *(f"final_{k}" if k in params else k for k in finals)])
    for r in records:
        cells = [r["params"].get(k, "") for k in params] + [r["final"].get(k, "") for k in finals]
        writer.writerow([r["run_id"], *(json.dumps(c) if isinstance(c, list | dict) else c for c in cells)])
    csv_path = run_dir / "summary.csv"
    atomic_write_text(csv_path, buf.getvalue())

    fig = Figure(figsize=(7, 4.5))  # no pyplot: no global figure state, works headless
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for r, label in zip(records, summary_labels(records)):
        points = [(p["round"], p["test_accuracy"]) for p in r["per_round"]
                  if "round" in p and "test_accuracy" in p]
        if points:
            ax.plot(*zip(*points), marker="o", label=label)
    ax.set(xlabel="round", ylabel="test accuracy (fraction)", title=f"Grid {name!r}: test accuracy per round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if ax.lines:  # beside the axes, at the axis labels' size: it never hides a curve
        ax.legend(fontsize="medium", loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    png = io.BytesIO()
    # 200 dpi: the book shows the file as it is, so it must stay sharp on high-density screens.
    fig.savefig(png, format="png", dpi=SUMMARY_DPI, bbox_inches="tight",
                metadata=png_metadata(fig, SUMMARY_DPI))  # its smallest text, for the layout test
    png_path = run_dir / "summary.png"
    atomic_write_bytes(png_path, png.getvalue())
    return csv_path, png_path


def add_cli(subparsers, add_debug_option: Callable | None = None) -> argparse.ArgumentParser:
    """Add ``experiments run GRID.yaml [--out runs]`` and ``experiments summary DIR``; dispatch with
    ``args.handler(args)``, which returns the exit code. ``add_debug_option(parser)`` adds the
    command line's ``--debug`` to both."""
    parser = subparsers.add_parser("experiments", help="run a grid of notebook parameters with papermill")
    sub = parser.add_subparsers(dest="experiments_command", required=True)
    run = sub.add_parser("run", help="run the unfinished runs of a grid file")
    run.add_argument("grid", help="grid YAML file")
    run.add_argument("--out", default="runs", help="output root (default: runs)")
    run.add_argument("--kernel", default="python3", help="Jupyter kernel (default: python3)")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_positive_int, metavar="N",
                       help="run on a local Dask cluster of N worker processes (default: one "
                            "run after another, in this process)")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="run on a running Dask scheduler, e.g. tcp://10.0.0.5:8786; workers "
                            "need fedtl_helpers and see --out and the notebook at the same path")
    summary = sub.add_parser("summary", help="rewrite summary.csv and summary.png of a run folder")
    summary.add_argument("run_dir", help="folder of a grid, e.g. runs/<name>")
    for sub_parser in (run, summary) if add_debug_option else ():
        add_debug_option(sub_parser)
    parser.set_defaults(handler=handle)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: allowed a whole number >= 1")
    return value


def handle(args: argparse.Namespace) -> int:
    if args.experiments_command == "summary":
        run_dir = Path(args.run_dir)
        if not run_dir.is_dir():
            print(f"error: {run_dir} is not a folder", file=sys.stderr)
            return 2
        for path in write_summary(run_dir, run_dir.name):
            print(path)
        return 0
    try:  # run_grid validates the whole grid before anything runs: ValueError means nothing ran
        run_dir = run_grid(args.grid, out_root=args.out, kernel_name=args.kernel,
                           workers=getattr(args, "workers", None), scheduler=getattr(args, "scheduler", None),
                           live=sys.stdout.isatty())
    except BaseException as e:
        if is_interrupt(e):  # Ctrl-C, also when it surfaced from C code as another error
            print(_stopped_message(args), file=sys.stderr)
            return 130
        if not isinstance(e, (ValueError, OSError, RuntimeError)) or getattr(args, "debug", False):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1 if isinstance(e, RuntimeError) else 2
    print(run_dir / "summary.csv")
    return 0


def _stopped_message(args: argparse.Namespace) -> str:
    """What Ctrl-C kept: the finished runs, and the command that runs the rest."""
    where = [f"--workers={args.workers}"] if getattr(args, "workers", None) else \
        [f"--scheduler={args.scheduler}"] if getattr(args, "scheduler", None) else []
    command = "python -m fedtl_helpers experiments run " + shlex.join([args.grid, "--out", args.out, *where])
    try:
        spec = load_grid(args.grid)
    except ValueError:
        return f"stopped; finished runs are kept. Resume with: {command}"
    done = sum(_is_finished(Path(args.out) / spec.name / f"{run_id(p)}.json") for p in spec.runs)
    return (f"stopped after {done} of {len(spec.runs)} runs finished (kept in "
            f"{Path(args.out) / spec.name}; the interrupted run is redone). Resume with: {command}")


def main(argv: list[str] | None = None) -> int:
    """``main(["experiments", "run", "grid.yaml"])``: the same as ``python -m fedtl_helpers ...``."""
    parser = argparse.ArgumentParser(prog="python -m fedtl_helpers")
    add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())

"""Command line: ``python -m fedtl_helpers run --rounds 5 --out runs/demo``.

``python -m fedtl_helpers experiments run experiments/smoke.yaml`` runs a grid of notebook
parameters with papermill (see ``experiments.py``).

Every ``ExperimentConfig`` field is an option (``--num-clients 20``, ``--weights none``, ...).
Before any data is loaded or model built, the config, the output folder, a resume, the weights
file and the data are checked; a mistake is one line on stderr naming the option and what is
allowed, exit status 2 (``--debug`` shows the traceback). The run writes ``history.json``,
``history.csv`` and ``checkpoint.npz`` into ``--out`` and prints a table whose header names the
dataset and weights. A folder that already holds a run is refused unless ``--resume``
(continue from its checkpoint, also to extend it with more rounds) or ``--overwrite``; a lock
file stops a second run in the same folder. Ctrl-C says which round was kept and how to resume
(exit 130); a run whose loss or weights become NaN or infinite stops there (exit 1), keeping
the last good checkpoint. The last line printed is one JSON object with the final accuracy.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import signal
import sys
import tempfile
import threading
from pathlib import Path

from ..core import storage
from ..core.config import ExperimentConfig
from . import experiments, preflight

PROG = "python -m fedtl_helpers"
EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED = 2, 1, 130

# Fields that accept None (``--weights none``), with their value type spelled out. Other fields
# keep "none" as a string: ``--compression none`` and ``--attack none`` are choices, not None.
_TYPES = {"data_dir": str, "alpha": float, "input_size": int, "n_train": int, "n_test": int,
          "weights": str, "quantity_alpha": float, "dp_clip": float, "secagg_threshold": int,
          "error_feedback": bool}
_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block), exit status 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"error: {message} (see {self.prog} --help)\n")


def _parser_for(field: dataclasses.Field):
    kind = _TYPES.get(field.name, type(field.default))
    nullable = field.name in _TYPES

    def parse(text: str):
        if nullable and text.lower() == "none":
            return None
        if kind is bool:
            if text.lower() not in ("true", "false"):
                raise argparse.ArgumentTypeError(f"expected true or false{' or none' if nullable else ''}"
                                                 f", got {text!r}")
            return text.lower() == "true"
        try:
            return kind(text)
        except ValueError:
            allowed = _WORDS[kind] + (" or none" if nullable else "")
            raise argparse.ArgumentTypeError(f"{text!r} is invalid: allowed {allowed}") from None

    parse.__name__ = kind.__name__
    return parse


def add_config_options(parser: argparse.ArgumentParser, **defaults) -> None:
    """One option per ``ExperimentConfig`` field (``--num-clients``); ``defaults`` override."""
    for field in dataclasses.fields(ExperimentConfig):
        default = defaults.get(field.name, field.default)
        parser.add_argument("--" + field.name.replace("_", "-"), dest=field.name,
                            type=_parser_for(field), default=default, help=f"(default: {default!r})")


def add_debug_option(parser: argparse.ArgumentParser, top: bool = False) -> None:
    # SUPPRESS on subcommands: their default would otherwise overwrite a --debug given earlier.
    parser.add_argument("--debug", action="store_true", default=False if top else argparse.SUPPRESS,
                        help="show the Python traceback of an error")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_debug_option(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one federated experiment")
    add_config_options(run)
    run.add_argument("--out", default="runs/cli", help="output folder (default: runs/cli)")
    run.add_argument("--resume", action="store_true",
                     help="continue (or extend) the run in --out from its checkpoint")
    run.add_argument("--overwrite", action="store_true",
                     help="replace the run already in --out (its checkpoint and history)")
    run.add_argument("--data-sha256", default=preflight.OFFICIAL, metavar="official|skip|HEX",
                     help="checksum of the CIFAR-10 archive: 'official' (default), 'skip', or the "
                          "SHA-256 of a test-sized archive in the official format; anything but "
                          "'official' is labelled 'NOT the official CIFAR-10 file' in every output")
    run.add_argument("--download", action="store_true",
                     help="download CIFAR-10 (checked against its SHA-256) if it is not found")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    add_debug_option(run)
    experiments.add_cli(sub, add_debug_option)
    return parser


def quiet_tensorflow() -> None:
    """Keep TensorFlow's start-up lines (oneDNN, CUDA, cpu features) away from the user.

    The C++ logger reads ``TF_CPP_MIN_LOG_LEVEL`` once, at import: it must be set before.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with its start-up lines hidden (shown only if the import fails).

    TensorFlow 2.21 writes its oneDNN and CUDA notices through absl's C++ logger before that
    logger is initialised, ignoring ``TF_CPP_MIN_LOG_LEVEL``; only the file descriptor can
    hold them back.
    """
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        except Exception:  # not KeyboardInterrupt: Ctrl-C during the import is no import error
            os.dup2(saved, 2)
            capture.seek(0)
            sys.stderr.write(capture.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)  # Python-side absl warnings
    except ImportError:  # absl comes with TensorFlow; without it there is nothing to quiet
        pass


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (0, 1 failed, 2 usage, 130 interrupted)."""
    quiet_tensorflow()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    # `kill` (SIGTERM) stops a run like Ctrl-C: the same message, the lock released. SIGINT is
    # installed explicitly too: a process started in the background by a non-interactive shell
    # (`nohup ... &`, a CI script) inherits SIGINT *ignored*, and would never see Ctrl-C.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main_thread else None
    previous_int = signal.signal(signal.SIGINT, _interrupt) if in_main_thread else None
    try:
        if args.command == "experiments":
            return args.handler(args)
        return run_command(args, argv)
    except BaseException as e:
        if storage.is_interrupt(e):  # Ctrl-C during the checks, before the run's own handlers
            print("stopped before anything started; nothing was changed", file=sys.stderr)
            return EXIT_INTERRUPTED
        if not isinstance(e, storage.UserError) or args.debug:  # UserError includes a bad config
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _config_from(args: argparse.Namespace) -> ExperimentConfig:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(ExperimentConfig)}
    try:
        return ExperimentConfig(**values)
    except ValueError as e:
        raise storage.UserError(str(e)) from e


def resume_command(argv: list[str]) -> str:
    """The command that continues this run: the same options, ``--resume`` instead of ``--overwrite``."""
    kept = [a for a in argv if a not in ("--overwrite", "--resume")]
    return f"{PROG} {shlex.join(kept)} --resume"


def run_command(args: argparse.Namespace, argv: list[str]) -> int:
    """``run``: preflight, lock ``--out``, load data, train, report."""
    config = _config_from(args)
    sha256 = preflight.parse_sha256(args.data_sha256)
    out = storage.check_output_dir(args.out)
    with storage.FolderLock(out, f"{PROG} run"):
        try:
            sim = _prepare(config, args, sha256)
        except BaseException as e:
            if not storage.is_interrupt(e):
                raise
            print(_stopped_message(out, config, argv) if args.resume else
                  f"stopped before training started; nothing in {out} was changed", file=sys.stderr)
            return EXIT_INTERRUPTED
        from ..federation.server import run_federated

        for line in privacy_lines(config, "start"):  # said on the terminal, not only in the History
            print(line, file=sys.stderr)
        try:
            result = run_federated(config, checkpoint_dir=out, resume=args.resume,
                                   progress=not args.quiet, simulation=sim)
        except storage.NonFiniteError as e:
            if args.debug:
                raise
            print(f"error: {e} ({storage.checkpoint_path(out)} holds round {e.round - 1})"
                  if storage.checkpoint_path(out).exists() else f"error: {e}", file=sys.stderr)
            return EXIT_FAILED
        except BaseException as e:
            if not storage.is_interrupt(e):
                raise
            print(_stopped_message(out, config, argv), file=sys.stderr)
            return EXIT_INTERRUPTED
    print(result.history.table())
    for line in privacy_lines(config, "end", out):
        print(line, file=sys.stderr)
    print(json.dumps({"final_test_accuracy": result.history.final_accuracy,
                      "rounds": config.rounds, "dataset": result.history.meta["dataset"],
                      "weights": result.history.meta["weights"], "out": str(out)}))
    return 0


def privacy_lines(config: ExperimentConfig, when: str, out: Path | None = None) -> list[str]:
    """What a DP run says on the terminal at its ``"start"`` and ``"end"``: the epsilon the whole
    run spends (the same accountant as the History's ``epsilon`` column), what is withheld and
    where the private state is (``out``: the run folder, if its checkpoint is there), and, for
    seeded noise, that the run protects nothing. Empty without DP. The simulation's command line
    and the deployment's launchers (``deploy/run_local.py``, ``deploy/launch.py run``) print it."""
    if config.dp_clip is None:
        return []
    from ..core.history import DP_WITHHELD
    from ..transforms import privacy

    eps = privacy.dp_epsilon(config.dp_noise_multiplier, config.client_fraction, config.rounds,
                             config.dp_delta, sampling=config.client_sampling,
                             accountant=config.dp_accountant, num_clients=config.num_clients)
    budget = (f"epsilon = {eps:.3g} at delta = {config.dp_delta:g} after {config.rounds} rounds "
              f"({config.dp_accountant.upper()} accountant, {config.client_sampling} sampling "
              f"q = {config.client_fraction:g}, noise multiplier {config.dp_noise_multiplier:g}, "
              f"clip {config.dp_clip:g})")
    lines = [f"differential privacy: {'this run will spend' if when == 'start' else 'spent'} {budget}"]
    if when == "end":
        lines.append(f"differential privacy: the History withholds {', '.join(DP_WITHHELD)}"
                     + (f"; {out / storage.PRIVATE_DIR} holds the server's private state (sampled ids): "
                        "do not publish it" if out is not None else ""))
    if config.randomness == "simulation":
        lines.append("WARNING: no privacy: randomness='simulation' seeds the noise from the seed in "
                     "the History, so anyone can subtract it; use --randomness secure for a private run")
    return lines


def _prepare(config: ExperimentConfig, args: argparse.Namespace, sha256: str | None):
    """Every check, then the data and the model: a ``Simulation`` ready to run.

    Errors from loading (a damaged archive, a file that vanished) are user errors too.
    """
    out = Path(args.out)
    preflight.check_existing_run(out, config, resume=args.resume, overwrite=args.overwrite)
    preflight.check_weights_file(config)
    preflight.check_data(config, sha256=sha256, download=args.download)
    _import_tensorflow_quietly()
    preflight.check_model(config)
    from ..federation.server import Simulation
    from ..inputs import data

    try:
        dataset = data.load_dataset(config.dataset, data_dir=config.data_dir, download=args.download,
                                    n_train=config.n_train, n_test=config.n_test, seed=config.seed,
                                    sha256=sha256)
        sim = Simulation(config, dataset)
    except (OSError, ValueError) as e:
        raise storage.UserError(f"--dataset={config.dataset!r}: {e}") from e
    # Name the data as it was read (official or not), not as "arrays passed in by the caller".
    sim.data_source = data.describe(config.dataset, data_dir=config.data_dir, sha256=sha256)
    if args.overwrite:  # only now: a run refused by a check above keeps the old results
        for name in storage.held_run_files(out):
            (out / name).unlink()
    return sim


def _stopped_message(out: Path, config: ExperimentConfig, argv: list[str]) -> str:
    try:
        state = storage.read_checkpoint_state(out)
    except storage.UserError:
        state = None
    if state is None:
        return (f"stopped before round 1 finished; nothing was kept in {out}. Run again with: "
                f"{PROG} {shlex.join(argv)}")
    return (f"stopped after round {state['round']} of {config.rounds}; {storage.checkpoint_path(out)} "
            f"holds it. Resume with: {resume_command(argv)}")

"""Command line: ``python -m fedtl_helpers run --rounds 5 --out runs/demo``.

``python -m fedtl_helpers experiments run experiments/smoke.yaml`` runs a grid of notebook
parameters with papermill (see ``experiments.py``).

Every ``ExperimentConfig`` field is an option (``--num-clients 20``, ``--weights none``, ...);
the config is validated before any data is loaded. The run writes ``history.json``,
``history.csv`` and ``checkpoint.npz`` into ``--out`` and prints a table whose header names the
dataset and weights; ``--resume`` continues an interrupted run from its checkpoint. The last
line printed is one JSON object with the final accuracy.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from . import experiments
from .config import ExperimentConfig

# Fields that accept None (``--weights none``), with their value type spelled out. Other fields
# keep "none" as a string: ``--compression none`` and ``--attack none`` are choices, not None.
_TYPES = {"data_dir": str, "alpha": float, "input_size": int, "n_train": int, "n_test": int,
          "weights": str, "quantity_alpha": float, "dp_clip": float, "secagg_threshold": int}


def _parser_for(field: dataclasses.Field):
    kind = _TYPES.get(field.name, type(field.default))
    nullable = field.name in _TYPES

    def parse(text: str):
        if nullable and text.lower() == "none":
            return None
        if kind is bool:
            if text.lower() not in ("true", "false"):
                raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
            return text.lower() == "true"
        return kind(text)

    parse.__name__ = kind.__name__
    return parse


def add_config_options(parser: argparse.ArgumentParser, **defaults) -> None:
    """One option per ``ExperimentConfig`` field (``--num-clients``); ``defaults`` override."""
    for field in dataclasses.fields(ExperimentConfig):
        default = defaults.get(field.name, field.default)
        parser.add_argument("--" + field.name.replace("_", "-"), dest=field.name,
                            type=_parser_for(field), default=default, help=f"(default: {default!r})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fedtl_helpers", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one federated experiment")
    add_config_options(run)
    run.add_argument("--out", default="runs/cli", help="output folder (default: runs/cli)")
    run.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    experiments.add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parsed = build_parser().parse_args(argv)
    if parsed.command == "experiments":
        return parsed.handler(parsed)
    args = vars(parsed)
    args.pop("command")
    out, resume, quiet = args.pop("out"), args.pop("resume"), args.pop("quiet")
    try:
        config = ExperimentConfig(**args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from .server import run_federated

    result = run_federated(config, checkpoint_dir=out, resume=resume, progress=not quiet)
    print(result.history.table())
    print(json.dumps({"final_test_accuracy": result.history.final_accuracy,
                      "rounds": config.rounds, "dataset": result.history.meta["dataset"],
                      "weights": result.history.meta["weights"], "out": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Committed results: the long, fair comparisons a chapter shows but cannot run in class.

Chapters: "Pretrained initialisation", "Client fine-tuning", "Non-IID data", "Differential
privacy".

Some comparisons need tuned settings for every arm, many rounds and several seeds: an hour of
CPU, too long for a book build. A benchmark runs them and writes ``results/<name>.json`` with its
provenance (command, commit, date, machine, seconds); the chapter reads that file through
:func:`load`, which prints where the numbers come from, and ``tests/test_results.py`` re-runs
the start of each recorded run to show the file is not stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load(name: str, *, root: Path = ROOT, show: bool = True) -> dict:
    """The record ``results/<name>.json``; with ``show``, print its provenance first.

    Raises ``FileNotFoundError`` naming the benchmark command that writes it when it is missing.
    """
    path = root / "results" / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `python benchmarks/{name}.py --out {path}` "
                                "(see the benchmark's docstring for its settings)")
    record = json.loads(path.read_text())
    if show:
        p = record["provenance"]
        print(f"results/{name}.json, written by: {p['command']}\n"
              f"  commit {p['commit']}, {p['date']}, {p['machine']}, {p['seconds'] / 60:.0f} min, "
              f"randomness={record['randomness']!r}")
    return record


def randomness_modes(record: object) -> set[str]:
    """Every ``randomness`` mode named by a config inside ``record`` (any nesting depth)."""
    if isinstance(record, dict):
        own = {record["randomness"]} if isinstance(record.get("randomness"), str) else set()
        return own.union(*(randomness_modes(v) for v in record.values()))
    if isinstance(record, list):
        return set().union(*(randomness_modes(v) for v in record))
    return set()


def save(path: str | Path, record: dict, *, seconds: float, argv: list[str] | None = None,
         randomness: str | None = None) -> None:
    """Write ``record`` with its provenance (command, commit, date, machine, ``seconds``) to
    ``path`` as JSON, atomically: what a benchmark's ``--out`` writes and :func:`load` reads.

    The record also says which randomness mode produced it (``"simulation"``: seeded and
    reproducible, so any DP noise in it protects nothing; ``"secure"``): taken from the configs
    inside ``record``, or ``randomness`` for a record that carries none. A record must name
    exactly one mode.
    """
    from ..core.storage import atomic_write_text
    from .provenance import provenance

    modes = randomness_modes(record) | ({randomness} if randomness else set())
    if len(modes) != 1:
        raise ValueError(f"randomness={randomness!r} is invalid for this record (its configs name "
                         f"{sorted(modes) or 'no mode'}): allowed exactly one of 'simulation', 'secure'.")
    full = {**record, "randomness": modes.pop(),
            "provenance": provenance(sys.argv if argv is None else argv, seconds)}
    atomic_write_text(path, json.dumps(full, indent=1))

"""The record of a federated run: one row per round, saved as JSON and CSV.

Chapter: "Evaluation". Every row carries the round, global test accuracy and loss, mean client
train loss, which clients took part, bytes sent up and down, and seconds; ``meta`` names the
dataset and the weights, so no table or figure can lose track of what it measured.

Chapter: "Differential privacy". A DP run releases only what its epsilon covers: the model
(hence accuracy and loss on the server's own test set), bytes, seconds and epsilon. The
clients' train loss and the ids of the sampled clients are computed from client data outside
the mechanism (and the ids undo the amplification by sampling the accountant assumes), so
``dp_release`` blanks them (``None``) and ``meta["withheld"]`` names them.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from typing import Any

from .storage import atomic_write_text

COLUMNS = ("round", "test_accuracy", "test_loss", "train_loss", "clients", "bytes_up",
           "bytes_down", "seconds")
# Under DP, a row releases only what the accountant covers. Client-derived: the clients' train
# loss, who was sampled, whose update was dropped. The round's bytes and seconds grow with how
# many clients took part (with Poisson sampling a count of N occurs only with every client in),
# so they are withheld too; the expected bytes per round follow from the config.
DP_WITHHELD = ("train_loss", "clients", "dropped", "bytes_up", "bytes_down", "seconds")
LIST_COLUMNS = ("clients", "dropped")  # client ids: written space-separated in the CSV


def dp_release(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` as a DP run may publish it: every column in ``DP_WITHHELD`` set to ``None``."""
    return {**row, **dict.fromkeys(DP_WITHHELD)}


@dataclass
class History:
    """Rows of per-round metrics plus ``meta`` (config, dataset and weights descriptions)."""

    meta: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)

    def append(self, **row: Any) -> None:
        """Add one round's row: every name in ``COLUMNS``, plus any extra columns."""
        missing = set(COLUMNS) - set(row)
        if missing:
            raise ValueError(f"History row lacks {sorted(missing)}")
        self.rows.append(row)

    def column(self, name: str) -> list[Any]:
        return [r[name] for r in self.rows]

    @property
    def final_accuracy(self) -> float:
        return self.rows[-1]["test_accuracy"] if self.rows else float("nan")

    def tail_accuracy(self, last: int) -> float:
        """Mean test accuracy over the last ``last`` training rounds (round 0, the starting model,
        never counts). Under label skew the global model's accuracy swings by several points from
        round to round, so one final round is a noisy summary; this is the steadier one."""
        trained = [r["test_accuracy"] for r in self.rows if r["round"] > 0]
        if isinstance(last, bool) or not isinstance(last, int) or not 1 <= last <= len(trained):
            raise ValueError(f"last={last!r} is invalid: allowed an int from 1 to the {len(trained)} "
                             f"training rounds recorded.")
        return float(sum(trained[-last:]) / last)

    def rounds_to_reach(self, accuracy: float) -> int | None:
        """First round whose test accuracy is >= ``accuracy`` (None if never)."""
        return next((r["round"] for r in self.rows if r["test_accuracy"] >= accuracy), None)

    def bytes_to_reach(self, accuracy: float, direction: str = "total") -> int | None:
        """Bytes communicated until the first round with test accuracy >= ``accuracy`` (None if
        never); ``direction`` is ``"up"``, ``"down"`` or ``"total"`` (both)."""
        if direction not in ("up", "down", "total"):
            raise ValueError(f"direction={direction!r} is invalid: allowed 'up', 'down' or 'total'.")
        if any(r["bytes_up"] is None for r in self.rows):
            raise ValueError("this History withholds its byte counts (a DP run: meta['withheld']); "
                             "they cannot be summed")
        sent = 0
        for r in self.rows:
            sent += r["bytes_up"] if direction != "down" else 0
            sent += r["bytes_down"] if direction != "up" else 0
            if r["test_accuracy"] >= accuracy:
                return sent
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"meta": self.meta, "rows": self.rows}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        return cls(meta=dict(d["meta"]), rows=[dict(r) for r in d["rows"]])

    def to_csv_text(self) -> str:
        buf = io.StringIO()
        # Chapters add their own columns (e.g. the privacy spent so far): they follow COLUMNS.
        extra = list(dict.fromkeys(k for r in self.rows for k in r if k not in COLUMNS))
        writer = csv.DictWriter(buf, fieldnames=[*COLUMNS, *extra])
        writer.writeheader()
        for r in self.rows:  # None: withheld, a blank cell
            writer.writerow({**r, **{k: "" if r.get(k) is None else " ".join(map(str, r[k]))
                                     for k in LIST_COLUMNS if k in r}})
        return buf.getvalue()

    def save(self, directory: str | os.PathLike, stem: str = "history") -> None:
        """Write ``<stem>.json`` and ``<stem>.csv`` atomically."""
        atomic_write_text(os.path.join(directory, f"{stem}.json"),
                          json.dumps(self.to_dict(), indent=1))
        atomic_write_text(os.path.join(directory, f"{stem}.csv"), self.to_csv_text())

    @classmethod
    def load(cls, path: str | os.PathLike) -> History:
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def table(self) -> str:
        """A small fixed-width table for notebooks and the command line."""
        # One fact per header line, so the table stays narrow enough for a book page.
        lines = [f"# {part}" for part in self.meta.get("describe", "").split("; ") if part]
        lines += [f"{'round':>5} {'test_acc':>8} {'test_loss':>9} {'train_loss':>10} "
                 f"{'MB_up':>8} {'MB_down':>8} {'seconds':>7}"]
        def cell(value: float | None, scale: float, fmt: str) -> str:
            return "" if value is None else format(value / scale, fmt)  # None: withheld (DP)

        for r in self.rows:
            lines.append(f"{r['round']:>5} {r['test_accuracy']:>8.4f} {r['test_loss']:>9.4f} "
                         f"{cell(r['train_loss'], 1, '.4f'):>10} {cell(r['bytes_up'], 1e6, '.3f'):>8} "
                         f"{cell(r['bytes_down'], 1e6, '.3f'):>8} {cell(r['seconds'], 1, '.2f'):>7}")
        dropped = [(r["round"], r["dropped"]) for r in self.rows if r.get("dropped")]
        lines += [f"# round {rnd}: dropped the non-finite update of client(s) {' '.join(map(str, ids))}"
                  for rnd, ids in dropped]
        withheld = self.meta.get("withheld")
        if withheld:
            lines.append(f"# withheld (DP: not covered by epsilon): {', '.join(withheld)}")
        return "\n".join(lines)

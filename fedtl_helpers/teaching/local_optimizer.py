"""Which local optimizer the clients run: reading ``results/bench_optimizer.json``.

Chapter: "FedAvg: weighted aggregation". ``benchmarks/bench_optimizer.py`` tunes the client
learning rate of local Adam, local SGD and local SGD with momentum on one shared grid, runs each
on three seeds and records the curves; :func:`read` turns that record into the table, the figure's
curves and the verdicts (by the book's one rule, :func:`~fedtl_helpers.teaching.verdict.verdict`)
that the chapter shows, so the notebook holds no arithmetic of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from .verdict import Comparison, final_per_seed, verdict

__all__ = ["LABELS", "OptimizerReading", "read"]

LABELS = {"adam": "local Adam", "sgd": "local SGD", "sgd_momentum": "local SGD with momentum"}


@dataclass(frozen=True)
class OptimizerReading:
    """The record, and every SGD arm judged against local Adam (A = the SGD arm, B = Adam)."""

    record: dict
    verdicts: dict[str, Comparison]  # "sgd", "sgd_momentum" -> that arm against Adam

    @property
    def n_test(self) -> int:
        return int(self.record["configs"]["adam"]["n_test"])

    def finals(self, arm: str) -> list[float]:
        """The arm's test accuracy per seed: the mean of its last ``record["last"]`` rounds."""
        return final_per_seed(self.record["curves"][arm], self.record["last"])

    def edges(self) -> list[str]:
        """The arms whose tuned rate sits on the grid's end (a better one may lie beyond)."""
        return [a for a, r in self.record["arms"].items() if r["at_grid_edge"]]

    def curves(self) -> dict[str, list[list[float]]]:
        """Figure labels (optimizer and its tuned rate) -> one test-accuracy curve per seed."""
        return {f"{LABELS[a]}, lr {r['lr']:g}": self.record["curves"][a]
                for a, r in self.record["arms"].items()}

    def table(self) -> str:
        """One row per arm: tuned rate, the rates tried, round 1, final mean and seed range."""
        last = self.record["last"]
        lines = [f"{'client optimizer':<24} {'lr':>6} {'rates tried (validation accuracy)':<52} "
                 f"{'round 1':>7} {'final, last ' + str(last):>13} {'min..max':>12}"]
        for a, r in self.record["arms"].items():
            tried = " ".join(f"{k}:{v:.3f}" for k, v in r["tuning_scores"].items())
            f = self.finals(a)
            lines.append(f"{LABELS[a]:<24} {r['lr']:>6g} {tried:<52} {r['acc_round1']:>7.3f} "
                         f"{sum(f) / len(f):>13.3f} {min(f):>5.3f}..{max(f):<5.3f}")
        return "\n".join(lines)

    def edge_note(self) -> str:
        """Whether every chosen rate is interior to the shared grid, in one sentence."""
        grid = self.record["grid"]
        span = f"from {min(grid):g} to {max(grid):g}"
        edges = self.edges()
        if not edges:
            return f"Every chosen rate is interior to the shared grid ({span}, half-decade steps)."
        names = " and ".join(LABELS[a] for a in edges)
        whose = "that arm's" if len(edges) == 1 else "those arms'"
        return (f"The rate chosen for {names} is on the shared grid's end ({span}): a better rate may "
                f"lie beyond it, so read {whose} accuracy as a lower bound.")

    def decision(self) -> str:
        """What the verdicts decide for the helpers' default (``client_optimizer``), in one clause."""
        worse = [a for a, v in self.verdicts.items() if v.shown and v.difference_points < 0]
        if len(worse) == len(self.verdicts):
            return ("local Adam is above both SGD variants by more than the minimum detectable "
                    "difference: Adam stays the helpers' default (`client_optimizer=\"adam\"`)")
        close = " and ".join(LABELS[a] for a in self.verdicts if a not in worse)
        return (f"{close} is not shown to be worse than local Adam here: either could be the "
                "default, and it stays Adam only because every committed record was made with it "
                "(switching means re-running them)")

    def glue_values(self) -> dict[str, float | int]:
        """The numbers the chapter's prose quotes, by glue name (``opt_<arm>_lr`` ...)."""
        out: dict[str, float | int] = {"opt_rounds": int(self.record["rounds"]),
                                       "opt_last": int(self.record["last"]),
                                       "opt_seeds": len(self.record["seeds"]),
                                       "opt_n_test": self.n_test}
        for a, r in self.record["arms"].items():
            f = self.finals(a)
            out[f"opt_{a}_lr"] = float(r["lr"])
            out[f"opt_{a}_final"] = float(sum(f) / len(f))
            out[f"opt_{a}_round1"] = float(r["acc_round1"])
        for a, v in self.verdicts.items():
            out[f"opt_{a}_minus_adam"] = float(v.difference_points)
            out[f"opt_{a}_mdd"] = float(v.mdd_points)
            out[f"opt_{a}_adam_lead_min"] = float(min(-x for x in v.per_seed_points))  # closest seed
        return out


def read(record: dict) -> OptimizerReading:
    """Judge local SGD and local SGD with momentum against local Adam, from the record's curves.

    Raises
    ------
    ValueError
        When ``record`` lacks an arm, its curves or its configs (not a ``bench_optimizer`` record).
    """
    missing = [k for k in ("arms", "curves", "configs", "last", "rounds", "seeds") if k not in record]
    arms = set(record.get("arms", {}))
    if missing or not set(LABELS) <= arms:
        lacking = missing or sorted(set(LABELS) - arms)
        raise ValueError(f"record is not a bench_optimizer record (missing {lacking}): "
                         "allowed what `python benchmarks/bench_optimizer.py --out ...` writes.")
    reading = OptimizerReading(record, {})
    adam = reading.finals("adam")
    for a in ("sgd", "sgd_momentum"):
        reading.verdicts[a] = verdict(reading.finals(a), adam, n_test=reading.n_test,
                                      names=(LABELS[a], LABELS["adam"]))
    return reading

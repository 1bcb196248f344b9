"""Fair comparisons: every arm gets its own setting, chosen on a validation split.

Chapters: "Transfer learning overview", "Pretrained initialisation of the global model" and
every chapter whose prose interprets a gap between two settings.

A comparison in which one arm runs at the learning rate that suits the other is unfair: full
fine-tuning and head-only training, or a pretrained and a random start, want different rates.
Each arm's value is chosen here on a *validation split of the training data* (never the test
set, which would make the reported accuracy optimistic), and the chosen values are printed with
the results.

In a simulation the validation split is one held-out slice of the training images, evaluated by
the server. A real federation has no such central slice: there each client would keep part of its
own data and report its validation accuracy (``ExperimentConfig.holdout_fraction``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

Arrays = tuple[np.ndarray, np.ndarray]


def validation_split(x: np.ndarray, y: np.ndarray, fraction: float = 0.2,
                     seed: int = 0) -> tuple[Arrays, Arrays]:
    """Split ``(x, y)`` into ``(train, validation)``, stratified by class, reproducibly.

    Every class keeps ``round(fraction * count)`` of its examples for validation (at least one
    when it has two or more), so a small split still sees every class.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ValueError(f"fraction={fraction!r} is invalid: allowed a number in (0, 1).")
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length ({len(x)} vs {len(y)}).")
    rng = np.random.default_rng([seed, 7])
    val: list[np.ndarray] = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = min(len(idx) - 1, max(1 if len(idx) > 1 else 0, round(fraction * len(idx))))
        val.append(idx[:k])
    val_idx = np.sort(np.concatenate(val))
    keep = np.ones(len(y), bool)
    keep[val_idx] = False
    if not val_idx.size or keep.sum() == 0:
        raise ValueError(f"fraction={fraction} leaves an empty split of {len(y)} examples: allowed a "
                         "fraction that keeps examples on both sides.")
    return (x[keep], y[keep]), (x[val_idx], y[val_idx])


def _run_federated(config, dataset):
    from ..federation.server import run_federated  # imported here: tuning itself needs no TensorFlow

    return run_federated(config, dataset=dataset, progress=False).history


def _fingerprint(config, dataset) -> str:
    """What a run depends on: its config, its arrays and the helpers' source (any edit of the
    package gives every run a new key, so no result of older code is ever reused)."""
    h = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True, default=str).encode())
    for array in (a for pair in dataset for a in pair):
        h.update(np.ascontiguousarray(array).tobytes())
    h.update(_source_hash().encode())
    return h.hexdigest()[:20]


@functools.cache
def _source_hash() -> str:
    """The helpers' source, hashed once per process: the code as it was when the first run began."""
    h = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    for source in sorted(package.rglob("*.py")):
        h.update(source.relative_to(package).as_posix().encode() + source.read_bytes())
    return h.hexdigest()


class ResumableRuns:
    """``run(config, dataset) -> History`` that checkpoints every run under ``directory``.

    Each run (a tuning trial or a seed's run) gets its own folder, named by ``_fingerprint``,
    and ``run_federated`` saves its state there after every round. Started again with the same
    command after a kill, a comparison resumes every run from its last round: a finished run is
    read back from its ``history.json`` (it costs nothing), the interrupted one continues, and the
    results equal an uninterrupted run's (``run_federated(..., resume=True)``). ``resumed`` counts
    the runs that did not start at 0. ``keep_weights=False`` deletes a finished run's checkpoint
    and keeps only its history, so the folder stays small however many runs a comparison makes
    (a ResNet-50's checkpoint is about 100 MB).
    """

    def __init__(self, directory: str | Path, *, keep_weights: bool = True):
        self.directory = Path(directory)
        self.keep_weights = keep_weights
        self.resumed = 0

    def folder(self, config, dataset) -> Path:
        """Where the run of ``config`` on ``dataset`` keeps its checkpoint."""
        return self.directory / _fingerprint(config, dataset)

    def __call__(self, config, dataset):
        from ..core.history import History
        from ..core.storage import checkpoint_path
        from ..federation.server import run_federated  # imported here: tuning itself needs no TensorFlow

        folder = self.folder(config, dataset)
        if (folder / "history.json").is_file():  # written when a run (maybe a shorter one) finished
            history = History.load(folder / "history.json")
            if history.rows and history.rows[-1]["round"] == config.rounds:
                self.resumed += 1
                return history
        history = run_federated(config, dataset=dataset, checkpoint_dir=folder, resume=True,
                                progress=False).history
        self.resumed += bool(history.meta.get("resumed_after_rounds"))
        if not self.keep_weights:
            checkpoint_path(folder).unlink()
        return history


def _fields(field: str | tuple[str, ...]) -> tuple[str, ...]:
    return (field,) if isinstance(field, str) else tuple(field)


def _changes(field: str | tuple[str, ...], value: Any) -> dict[str, Any]:
    """The config changes for one candidate: ``{field: value}``, or field by field for tuples."""
    fields = _fields(field)
    if len(fields) == 1:
        return {fields[0]: value}
    if not isinstance(value, tuple) or len(value) != len(fields):
        raise ValueError(f"candidate {value!r} is invalid for field={field!r}: allowed a tuple of "
                         f"{len(fields)} values, one per field.")
    return dict(zip(fields, value))


@dataclass(frozen=True)
class Tuned:
    """The value chosen for ``field`` and the validation score of every candidate."""

    field: str | tuple[str, ...]
    best: Any
    scores: dict[Any, float]

    def at_edge(self) -> list[str]:
        """The fields whose chosen value is the smallest or largest tried (with more than one
        value tried): a better value may lie beyond the grid, which should then be extended."""
        fields = _fields(self.field)
        values = [c if len(fields) > 1 else (c,) for c in self.scores]
        best = self.best if len(fields) > 1 else (self.best,)
        edge = []
        for i, name in enumerate(fields):
            tried = sorted({v[i] for v in values})
            if len(tried) > 1 and best[i] in (tried[0], tried[-1]):
                edge.append(name)
        return edge

    def table(self) -> str:
        lines = [f"{'/'.join(_fields(self.field)):>14} {'val_acc':>8}"]
        lines += [f"{c!s:>14} {s:>8.4f}{'  <- chosen' if c == self.best else ''}"
                  for c, s in self.scores.items()]
        if self.at_edge():
            lines.append(f"(chosen on the grid's edge for {', '.join(self.at_edge())})")
        return "\n".join(lines)


def grid_search(field: str, candidates: Sequence[Any], score: Callable[[Any], float]) -> Tuned:
    """Score every candidate (higher is better) and keep the best; ties go to the earlier one."""
    if not candidates:
        raise ValueError(f"candidates for {field!r} is empty: allowed a non-empty list of values.")
    scores = {c: float(score(c)) for c in candidates}
    best = max(scores, key=lambda c: (scores[c], -list(scores).index(c)))
    return Tuned(field, best, scores)


def tune_federated(config, candidates: Sequence[Any], *, dataset,
                   field: str | tuple[str, ...] = "learning_rate", rounds: int | None = None,
                   last: int = 3, val_fraction: float = 0.2, start: Any = None,
                   run: Callable[..., Any] | None = None) -> Tuned:
    """Choose ``config.<field>`` among ``candidates`` by federated training on a validation split.

    Parameters
    ----------
    config
        The ``ExperimentConfig`` of the arm being tuned; only ``field`` (and ``rounds``) change.
    candidates
        Values to try, e.g. ``[3e-4, 1e-3, 3e-3]`` for the learning rate; with a tuple of
        fields, tuples of values (``field=("learning_rate", "server_lr")``,
        ``candidates=[(1e-2, 1.0), (1e-2, 2.0)]``): settings that interact are tuned together.
        With ``start``: the grid to widen on instead (``LR_GRID``; one grid per field for a
        tuple of fields).
    dataset
        ``((x_train, y_train), (x_test, y_test))``; the test part is never used here.
    rounds
        Rounds per trial (default: ``config.rounds``, the horizon the chosen value will run).
    last
        Score = mean validation accuracy of the last ``last`` rounds (steadier than one round);
        give the run's own ``last`` so the trial is scored on the same tail.
    val_fraction
        Share of the training data held out for validation (stratified, seeded by
        ``config.seed``).
    start
        Widen instead of trying every candidate: score ``start`` and its grid neighbours, then
        step beyond the best until it is interior (``widen_box``). Without it, every candidate.
    run
        ``run(config, dataset) -> History``; default ``run_federated(...).history``.
    """
    run = run or _run_federated

    fields = _fields(field)
    for name in fields:
        if not hasattr(config, name):
            raise ValueError(f"field={name!r} is not an ExperimentConfig field.")
    (x, y), _ = dataset
    train, val = validation_split(x, y, val_fraction, seed=config.seed)
    rounds = config.rounds if rounds is None else rounds

    def score(value):
        trial = dataclasses.replace(config, **_changes(field, value), rounds=rounds,
                                    n_train=len(train[1]), n_test=len(val[1]))
        return run(trial, (train, val)).tail_accuracy(min(last, rounds))

    if start is None:
        return grid_search(field, candidates, score)
    if len(fields) == 1:
        best, scores, _ = widen_until_interior(candidates, start, score)
        return Tuned(field, best, scores)
    best, scores, _ = widen_box(candidates, start, score)
    return Tuned(field, best, scores)


LR_GRID = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)  # half-decade steps, Adam's and SGD's


def widen_box(grids: Sequence[Sequence[Any]], start: Sequence[Any], score: Callable[[tuple], float]
              ) -> tuple[tuple, dict[tuple, float], list[int]]:
    """Tune several settings together on one grid each, widening until the choice is interior.

    Score every point of the box around ``start`` (one grid step either side in every
    dimension), then, in each dimension where the best point lies on the box's face, widen the
    box by one grid step beyond it; repeat until the best is interior in every dimension or sits
    on its grid's end.

    Returns ``(best, scores by point in grid order, the dimensions where best is on the grid's
    end)``; ties go to the smaller values.
    """
    grids = [list(g) for g in grids]
    for d, (g, s) in enumerate(zip(grids, start, strict=True)):
        if g != sorted(set(g)) or s not in g:
            raise ValueError(f"grids[{d}]={g} is invalid: allowed an increasing grid that contains "
                             f"start[{d}]={s!r}.")
    idx = [g.index(s) for g, s in zip(grids, start)]
    lo = [max(0, i - 1) for i in idx]
    hi = [min(len(g) - 1, i + 1) for g, i in zip(grids, idx)]
    scores: dict[tuple, float] = {}
    while True:
        for point in itertools.product(*(g[a:b + 1] for g, a, b in zip(grids, lo, hi))):
            if point not in scores:
                scores[point] = float(score(point))
        best = max(scores, key=lambda p: (scores[p], [-g.index(v) for g, v in zip(grids, p)]))
        widened = False
        for d, (g, v) in enumerate(zip(grids, best)):
            j = g.index(v)
            if j == lo[d] and lo[d] > 0:
                lo[d], widened = lo[d] - 1, True
            elif j == hi[d] and hi[d] < len(g) - 1:
                hi[d], widened = hi[d] + 1, True
        if not widened:
            ordered = {p: scores[p] for p in itertools.product(*grids) if p in scores}
            return best, ordered, [d for d, (g, v) in enumerate(zip(grids, best))
                                   if g.index(v) in (0, len(g) - 1)]


def widen_until_interior(grid: Sequence[float], start: float,
                         score: Callable[[float], float]) -> tuple[float, dict[float, float], bool]:
    """``widen_box`` for one setting: score ``start`` and its grid neighbours, then one more grid
    value at a time beyond the best, until the best is interior to what was tried or sits on the
    grid's end.

    Returns ``(best, scores by rate in grid order, at_grid_edge)``; ties go to the smaller rate.
    """
    best, scores, edge = widen_box([grid], [start], lambda p: score(p[0]))
    return best[0], {p[0]: v for p, v in scores.items()}, bool(edge)


@dataclass(frozen=True)
class Comparison:
    """Every arm of a comparison: its tuned value and its History for every seed."""

    field: str | tuple[str, ...]
    tuned: dict[str, Tuned]
    histories: dict[str, list]  # arm -> one History per seed, in ``seeds`` order
    seeds: tuple[int, ...]

    def finals(self, arm: str, last: int = 1) -> list[float]:
        """The arm's test accuracy (mean of its last ``last`` rounds), one value per seed."""
        return [h.tail_accuracy(last) for h in self.histories[arm]]

    def curves(self) -> dict[str, list[list[float]]]:
        """Every arm's test accuracy per round, one curve per seed."""
        return {arm: [h.column("test_accuracy") for h in hs] for arm, hs in self.histories.items()}

    def configs(self) -> dict[str, dict]:
        """Every arm's config as run for the first seed (tuned value in), as plain dicts."""
        return {arm: hs[0].meta["config"] for arm, hs in self.histories.items()}

    def summary(self, last: int = 1) -> dict[str, dict[str, float]]:
        """Per arm: tuned value, mean, min and max over seeds (Python floats, ready to glue)."""
        out = {}
        for arm in self.histories:
            f = self.finals(arm, last)
            out[arm] = {**_changes(self.field, self.tuned[arm].best), "mean": float(np.mean(f)),
                        "min": float(min(f)), "max": float(max(f))}
        return out


def compare_arms(arms: dict[str, Any], candidates: Sequence[Any] | dict[str, Sequence[Any]], *,
                 seeds: Sequence[int], load: Callable[[int], Any],
                 field: str | tuple[str, ...] = "learning_rate", tune_rounds: int | None = None,
                 start: Any = None, last: int = 3,
                 run: Callable[..., Any] | None = None, log: Callable[[str], None] = print) -> Comparison:
    """Run a fair comparison: tune ``field`` for every arm, then run every arm on every seed.

    Parameters
    ----------
    arms
        Arm name -> its ``ExperimentConfig`` (the seed in it is replaced by each of ``seeds``).
    candidates
        Values of ``field`` tried for every arm on a validation split of seed ``seeds[0]``'s
        training data (never the test set); a dict gives each arm its own list. With
        ``start``: the one grid (one per field for a tuple of fields) every arm widens on.
    seeds
        Each seed gives a new dataset draw, partition, initialisation and shuffling.
    load
        ``seed -> ((x_train, y_train), (x_test, y_test))``.
    tune_rounds
        Rounds per tuning trial (default: each arm's ``rounds``, the horizon it runs).
    start
        Where each arm's search starts on the shared grid (one value, or a dict per arm); the
        search widens until every choice is interior (``tune_federated``).
    last
        Trials are scored on the mean validation accuracy of their last ``last`` rounds: give
        the tail the comparison reports.
    run
        ``run(config, dataset) -> History``; default ``run_federated(...).history``.
    """
    if not arms:
        raise ValueError("arms is empty: allowed a dict of at least one name -> ExperimentConfig.")
    if not seeds:
        raise ValueError("seeds is empty: allowed a non-empty list of ints.")
    run = run or _run_federated
    first = load(seeds[0])
    tuned = {}
    for arm, config in arms.items():
        grid = candidates[arm] if isinstance(candidates, dict) else candidates
        begin = start[arm] if isinstance(start, dict) else start
        tuned[arm] = tune_federated(dataclasses.replace(config, seed=seeds[0]), grid, dataset=first,
                                    field=field, rounds=tune_rounds, last=last, start=begin, run=run)
        log(f"# {arm}: {field} chosen on a 20% validation split, seed {seeds[0]}\n{tuned[arm].table()}")
    histories: dict[str, list] = {arm: [] for arm in arms}
    for seed in seeds:
        ds = first if seed == seeds[0] else load(seed)
        for arm, config in arms.items():
            h = run(dataclasses.replace(config, seed=seed, **_changes(field, tuned[arm].best)), ds)
            histories[arm].append(h)
            log(f"# seed {seed} {arm}: " + " ".join(f"{a:.3f}" for a in h.column("test_accuracy")))
    return Comparison(field, tuned, histories, tuple(seeds))

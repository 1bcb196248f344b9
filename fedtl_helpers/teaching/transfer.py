"""What a pretrained start buys, read from ``bench_transfer`` records on two kinds of data.

Chapter: "Pretrained initialisation of the global model" (near-domain synthetic vs out-of-domain
real). A record (``results/bench_transfer*.json``) holds, per seed, the test-accuracy curve of
the pretrained and of the random start; everything here is computed from those curves, so a
record made before ``--targets`` existed answers the same questions.

Chapters 03, 04, 10 and 14 also run the two starts at classroom size, too short for a random
start to learn. :func:`learned` says whether it has (the book's test-set floor, chapter 14), and
:func:`longer_run` what the committed record shows instead when it has not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..workflow import results
from .verdict import _n_test, final_per_seed, sampling_floor, verdict

ARMS = ("pretrained", "random")


def seed_curves(record: Mapping) -> dict[str, list[list[float]]]:
    """``{"pretrained": [curve per seed], "random": [...]}``; index = round (0 = before training)."""
    return {arm: [list(s["curves"][arm]) for s in record["per_seed"]] for arm in ARMS}


def rounds_to(record: Mapping, target: float) -> dict[str, list[int | None]]:
    """Per arm, each seed's first round with test accuracy >= ``target`` (``None``: never)."""
    return {arm: [next((r for r, a in enumerate(c) if a >= target), None) for c in curves]
            for arm, curves in seed_curves(record).items()}


def _span(rounds: Sequence[int | None], horizon: int) -> str:
    if all(r is None for r in rounds):
        return f"not in {horizon}"
    lo = min(r for r in rounds if r is not None)
    hi = "never" if None in rounds else max(rounds)
    return str(lo) if hi == lo else f"{lo}-{hi}"


def rounds_table(records: Mapping[str, Mapping], targets: Sequence[float]) -> str:
    """Rounds to each target, per dataset and start: the range over seeds ("never": a seed did
    not reach it within the record's rounds)."""
    head = f"{'data':<10} {'start':<11}" + "".join(f" {'to ' + format(t, '.0%'):>9}" for t in targets)
    lines = [head]
    for name, rec in records.items():
        for arm in ARMS:
            cells = "".join(f" {_span(rounds_to(rec, t)[arm], rec['rounds']):>9}" for t in targets)
            lines.append(f"{name:<10} {arm:<11}{cells}")
    return "\n".join(lines)


def mean_rounds_saved(record: Mapping, target: float) -> float | None:
    """Mean over seeds of (random's rounds - pretrained's rounds) to ``target``; ``None`` when a
    seed's random start never reaches it (then only a lower bound exists)."""
    r = rounds_to(record, target)
    if None in r["random"] or None in r["pretrained"]:
        return None
    return float(np.mean(np.subtract(r["random"], r["pretrained"])))


def panel_title(record: Mapping) -> str:
    """A short figure title: which data, how many clients and images, how BatchNorm was evaluated."""
    cfg = record["configs"]["pretrained"]
    data = {"shapes": "shapes (embedded, synthetic)", "digits": "digits (real, handwritten)"}.get(
        cfg["dataset"], cfg["dataset"])
    stats = "recomputed" if cfg.get("bn_recalibration") else "moving"
    return (f"{data}: {cfg['num_clients']} clients x {cfg['n_train'] // cfg['num_clients']} images, "
            f"{cfg['n_test']} test, BatchNorm statistics {stats}")


@dataclass(frozen=True)
class Learning:
    """Whether a (random) start has learned enough for its gap to another start to be read.

    ``str(learning)`` (and a notebook's Markdown display) is :attr:`sentence`.
    """

    accuracy: float
    chance: float
    reference: float | None
    floor_points: float
    above_chance: bool
    learned: bool
    sentence: str

    def __bool__(self) -> bool:
        return self.learned

    def __str__(self) -> str:
        return self.sentence

    def _repr_markdown_(self) -> str:
        return self.sentence


def _fraction(x, name: str, low: float, high: float) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)) or not (
        math.isfinite(float(x)) and low <= float(x) <= high
    ):
        raise ValueError(
            f"{name} must be a number in [{low:g}, {high:g}] (an accuracy as a fraction), got {x!r}"
        )
    return float(x)


def learned(
    accuracy: float,
    *,
    chance: float,
    n_test: int,
    reference: float | None = None,
    name: str = "the random start",
    reference_name: str = "the pretrained start",
    when: str = "",
) -> Learning:
    """Has this start learned enough for its gap to ``reference`` to mean anything? The book's test.

    It has when both hold:

    - its accuracy is above ``chance`` by at least the test-set floor (:func:`sampling_floor` of
      the two, on ``n_test`` images): it learned something;
    - it is nearer ``reference`` (the pretrained start's accuracy in the same run) than chance.
      Still nearer chance, it is in its first climb: the gap then measures how far that climb has
      got, not where either start ends, and the prose says what a longer run shows instead.

    Parameters
    ----------
    accuracy
        The start's test accuracy at the end of the run (a fraction).
    chance
        Chance accuracy, 1 / number of classes.
    n_test
        Test images behind ``accuracy``.
    reference
        The accuracy of the start it is compared with, in the same run; ``None``: only the first
        condition is tested.
    name, reference_name
        How the sentence calls the two starts.
    when
        Where in the run, for the sentence (e.g. ``"after 4 epochs"``).

    Returns
    -------
    Learning
        ``learned`` and the sentence that says why, with the numbers.

    Raises
    ------
    ValueError
        Naming the parameter: an accuracy outside [0, 1], ``chance`` outside (0, 1), ``n_test`` not
        a positive integer, an empty name.
    """
    acc = _fraction(accuracy, "accuracy", 0.0, 1.0)
    c = _fraction(chance, "chance", 0.0, 1.0)
    if not 0.0 < c < 1.0:
        raise ValueError(f"chance must lie strictly between 0 and 1 (1 / number of classes), got {chance!r}")
    ref = None if reference is None else _fraction(reference, "reference", 0.0, 1.0)
    n = _n_test(n_test)
    for label, value in (("name", name), ("reference_name", reference_name)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{label} must be a non-empty string, got {value!r}")
    floor = sampling_floor([acc, c], n)
    above = 100.0 * (acc - c) >= floor
    nearer_reference = ref is None or acc - c > ref - acc
    ok = above and nearer_reference
    at = f"{acc:.3f}" + (f" {when}" if when else "")
    who = name[0].upper() + name[1:]
    if not above:
        sentence = (
            f"{who} has not learned: its {at} is not above chance ({c:.2f}) by the test-set floor "
            f"({floor:.1f} points on {n:,} images)."
        )
    elif not nearer_reference:
        sentence = (
            f"{who} has not learned enough to be compared: its {at} is above chance ({c:.2f}) by more than "
            f"the test-set floor ({floor:.1f} points on {n:,} images), but still nearer chance than "
            f"{reference_name}'s {ref:.3f}, so the gap between them measures how far its first climb has "
            "got, not where either start ends."
        )
    else:
        sentence = (
            f"{who} has learned: its {at} is above chance ({c:.2f}) by more than the test-set floor "
            f"({floor:.1f} points on {n:,} images)"
            + (f" and nearer {reference_name}'s {ref:.3f} than chance." if ref is not None else ".")
        )
    return Learning(acc, c, ref, floor, bool(above), bool(ok), sentence)


# the committed long comparison of the two starts, per dataset (benchmarks/bench_transfer.py)
RECORDS = {"shapes": "bench_transfer", "digits": "bench_transfer_digits"}


def longer_run(dataset: str, *, root=None) -> str:
    """What the committed long comparison of the two starts on ``dataset`` shows, in one paragraph.

    Read from ``results/bench_transfer*.json``: the size of the run, each start's test accuracy
    after its last round (mean over seeds) and the book's verdict on the gap. For data without a
    record, the sentence says so and names the command that makes one.
    """
    name = RECORDS.get(dataset)
    if name is None:
        return (f"No committed record holds a longer run of the two starts on {dataset}: "
                f"`python benchmarks/bench_transfer.py --dataset {dataset}` makes one.")
    record = results.load(name, show=False) if root is None else results.load(name, root=root, show=False)
    cfg = record["configs"]["random"]
    final = {arm: final_per_seed(c) for arm, c in seed_curves(record).items()}
    # digits has one fixed test split; shapes draws its test images per seed
    judged = verdict(final["pretrained"], final["random"], n_test=cfg["n_test"],
                     shared_test_set=cfg["dataset"] == "digits",
                     names=("the pretrained start", "the random start"))
    size = (f"{cfg['num_clients']} clients x {cfg['n_train'] // cfg['num_clients']} images of "
            f"{cfg['dataset']}, {cfg['n_test']:,} test images, {record['rounds']} rounds of federated full "
            f"fine-tuning, {len(final['random'])} seeds, each start at its own tuned learning rate")
    return (f"The committed longer run (`results/{name}.json`: {size}) shows where the two starts end up: "
            f"after the last round the random start scores {np.mean(final['random']):.3f} and the pretrained "
            f"start {np.mean(final['pretrained']):.3f} (means over seeds). "
            f"By the book's rule: {judged.sentence}")

"""What a pretrained start buys, read from ``bench_transfer`` records on two kinds of data.

Chapter: "Pretrained initialisation of the global model" (near-domain synthetic vs out-of-domain
real). A record (``results/bench_transfer*.json``) holds, per seed, the test-accuracy curve of
the pretrained and of the random start; everything here is computed from those curves, so a
record made before ``--targets`` existed answers the same questions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

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

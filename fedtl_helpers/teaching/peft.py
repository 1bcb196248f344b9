"""Parameter-efficient fine-tuning and FedBN, read from ``results/bench_peft.json``.

Chapter: "Parameter-efficient federated fine-tuning". The record holds, per seed, every
strategy's test-accuracy curve and bytes per round, and every client's held-out accuracy under
FedAvg and FedBN (with and without feature skew); everything here is computed from those, and
every comparison is judged by the book's one rule (:func:`fedtl_helpers.teaching.verdict.verdict`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .verdict import Comparison, final_per_seed, verdict

NAMES = {"head": "head-only training", "full": "full fine-tuning", "lora": "LoRA (factors averaged)",
         "ffa_lora": "FFA-LoRA", "bitfit": "BitFit", "lpft": "LP-FT"}
LORA_VARIANTS = ("lora", "ffa_lora")


def finals(record: Mapping) -> dict[str, list[float]]:
    """Each strategy's final accuracy per seed: the mean of the record's last ``last`` rounds."""
    return {s: final_per_seed([d["curves"][s] for d in record["per_seed"]], record["last"])
            for s in record["strategies"]}


def against(record: Mapping, a: str, b: str) -> Comparison:
    """Strategy ``a`` against strategy ``b`` over the record's seeds, by the book's rule."""
    f = finals(record)
    return verdict(f[a], f[b], n_test=record["n_test"], names=(NAMES[a], NAMES[b]))


def still_rising(record: Mapping, strategy: str = "full") -> Comparison:
    """Has ``strategy`` stopped rising? Its last ``last`` rounds against the ``last`` before them,
    per seed, by the book's rule: "no difference shown" means the run is long enough to compare."""
    last, seeds = record["last"], record["per_seed"]
    end = [float(np.mean(d["curves"][strategy][-last:])) for d in seeds]
    before = [float(np.mean(d["curves"][strategy][-2 * last:-last])) for d in seeds]
    return verdict(end, before, n_test=record["n_test"],
                   names=(f"{NAMES[strategy]} in its last {last} rounds", f"the {last} rounds before"))


def table(record: Mapping) -> str:
    """One row per strategy (short names, as in the record): tuned rate, MB uploaded per round by
    all clients, how many times fewer than full fine-tuning, final accuracy (mean and range over
    seeds) and the verdict against full fine-tuning (difference in points, MDD)."""
    f = finals(record)
    full_bytes = record["strategies"]["full"]["bytes_up_per_round"]
    lines = [f"{'':<9}{'lr':>7}{'MB up':>7}{'fewer':>7}{'acc':>7}{'seeds':>13}  vs full (MDD)"]
    for s, r in record["strategies"].items():
        v = None if s == "full" else against(record, s, "full")
        where = "" if v is None else (f"{v.difference_points:+.1f} "
                                      + ("shown" if v.shown else "not shown") + f" ({v.mdd_points:.1f})")
        lines.append(f"{s:<9}{r['lr']:>7g}{r['bytes_up_per_round'] / 1e6:>7.2f}"
                     f"{full_bytes / r['bytes_up_per_round']:>6.1f}x{np.mean(f[s]):>7.3f}"
                     f"{min(f[s]):>7.3f}-{max(f[s]):.3f}  {where}")
    return "\n".join(lines)


def lora_target(record: Mapping, variant: str, *, min_bytes_ratio: float = 5.0,
                max_gap_points: float = 2.0) -> str:
    """Whether a LoRA variant meets the course's target (at least ``min_bytes_ratio`` x fewer bytes
    than full fine-tuning, mean final accuracy at most ``max_gap_points`` below it), and the verdict."""
    if variant not in LORA_VARIANTS:
        raise ValueError(f"variant={variant!r} is invalid: allowed one of {LORA_VARIANTS}")
    s = record["strategies"]
    ratio = s["full"]["bytes_up_per_round"] / s[variant]["bytes_up_per_round"]
    gap = 100 * (s["full"]["final_acc"] - s[variant]["final_acc"])
    met = ratio >= min_bytes_ratio and gap <= max_gap_points
    verdict_word = "met" if met else "**not met**"
    return (f"{NAMES[variant]}: {ratio:.1f}x fewer bytes than full fine-tuning, and full fine-tuning "
            f"minus {NAMES[variant]} is {gap:+.1f} points (mean of seeds): the target is {verdict_word}. "
            f"{against(record, variant, 'full').sentence}")


def factor_vs_product(record: Mapping) -> Comparison:
    """Averaging LoRA's factors against averaging their products, one extra round per seed."""
    m = record["lora_factor_vs_product"]
    return verdict(m["acc_factor_average"], m["acc_product_average"], n_test=record["n_test"],
                   names=("averaging the factors", "averaging the products"))


def fedbn(record: Mapping, control: bool = False) -> Comparison:
    """FedBN against FedAvg: mean held-out accuracy over clients, per seed (``control``: the same
    clients without feature skew)."""
    key = "_control" if control else ""
    a = [float(np.mean(d[f"fedbn_client_acc{key}"])) for d in record["per_seed"]]
    b = [float(np.mean(d[f"fedavg_client_acc{key}"])) for d in record["per_seed"]]
    clients = len(record["per_seed"][0]["fedbn_client_acc"])
    return verdict(a, b, n_test=clients * record["fedbn_holdout_per_client"], names=("FedBN", "FedAvg"))


def fedbn_per_client(record: Mapping, control: bool = False) -> list[Comparison]:
    """FedBN against FedAvg on each client's own held-out images, over the seeds (client ``k`` of
    every seed has the same kind of style: ``partitioning.client_style(k, seed)`` draws only its
    parameters from the seed)."""
    key = "_control" if control else ""
    seeds = record["per_seed"]
    return [verdict([d[f"fedbn_client_acc{key}"][k] for d in seeds],
                    [d[f"fedavg_client_acc{key}"][k] for d in seeds],
                    n_test=record["fedbn_holdout_per_client"], names=(f"FedBN on client {k}", "FedAvg"))
            for k in range(len(seeds[0]["fedbn_client_acc"]))]


def fedbn_reading(record: Mapping) -> dict[str, str]:
    """Chapter 05b's two FedBN sentences: which clients the rule shows FedBN above or below FedAvg
    on (``"by_client"``), and what the mean under skew and the control together say (``"conclusion"``)."""
    from ..inputs.partitioning import client_style

    per_client, skewed, control = fedbn_per_client(record), fedbn(record), fedbn(record, control=True)
    up = [k for k, v in enumerate(per_client) if v.shown and v.difference_points > 0]
    down = [k for k, v in enumerate(per_client) if v.shown and v.difference_points < 0]

    def named(ks):
        return f" ({', '.join(f'client {k}, {client_style(k, 0)[0]}' for k in ks)})" if ks else ""
    by_client = (f"FedBN is shown above FedAvg on {len(up)} of the {len(per_client)} clients{named(up)} "
                 f"and below it on {len(down)}{named(down)}; on the others no difference is shown.")
    if skewed.shown and skewed.difference_points > 0 and not control.shown:
        conclusion = "Here the gain under skew is shown and the control shows none: FedBN's own effect."
    elif not skewed.shown and not control.shown:
        conclusion = ("Here neither is shown on the mean over clients: the seeds spread by more than "
                      "the mean gain under skew, so these runs do not establish FedBN's effect on the "
                      "federation as a whole, only on the clients named above.")
    else:
        conclusion = (f"Here the rule finds: under skew, {skewed.phrase()}; in the control, "
                      f"{control.phrase()}.")
    return {"by_client": by_client, "conclusion": conclusion}

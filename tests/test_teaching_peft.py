"""Chapter 5b's record reader (fedtl_helpers.teaching.peft) on a hand-made record: exact numbers.

Pure arithmetic on given accuracies, no training, so no kernel-path tolerance is involved.
"""

import pytest

from fedtl_helpers.teaching import peft

STRATEGIES = ("head", "full", "lora", "ffa_lora", "bitfit", "lpft")


def _record(full=(0.80, 0.82, 0.81), lora=(0.79, 0.80, 0.80), fedbn=None, fedavg=None):
    """Three seeds, 3 rounds, last 2; every strategy but full and lora at 0.5 in every round."""
    def curve(final):
        return [0.1, 0.4, final, final]
    seeds = []
    fedbn = fedbn or [[0.90, 0.60], [0.88, 0.62], [0.92, 0.61]]
    fedavg = fedavg or [[0.70, 0.60], [0.71, 0.61], [0.69, 0.60]]
    for i in range(3):
        curves = {s: curve(0.5) for s in STRATEGIES}
        curves["full"], curves["lora"] = curve(full[i]), curve(lora[i])
        seeds.append({"curves": curves, "fedbn_client_acc": fedbn[i], "fedavg_client_acc": fedavg[i],
                      "fedbn_client_acc_control": [0.8, 0.8], "fedavg_client_acc_control": [0.8, 0.8]})
    sizes = {"head": 100_000, "full": 1_000_000, "lora": 150_000, "ffa_lora": 120_000, "bitfit": 110_000,
             "lpft": 700_000}
    strategies = {s: {"lr": 1e-3, "bytes_up_per_round": sizes[s],
                      "final_acc": sum(c["curves"][s][-1] for c in seeds) / 3} for s in STRATEGIES}
    return {"per_seed": seeds, "strategies": strategies, "last": 2, "n_test": 2000,
            "fedbn_holdout_per_client": 100,
            "lora_factor_vs_product": {"acc_factor_average": [0.8, 0.81, 0.79],
                                       "acc_product_average": [0.8, 0.80, 0.80]}}


def test_finals_are_the_mean_of_the_last_rounds():
    rec = _record()
    rec["per_seed"][0]["curves"]["full"] = [0.1, 0.4, 0.70, 0.80]
    assert peft.finals(rec)["full"][0] == pytest.approx(0.75)


def test_a_one_point_gap_on_2000_images_is_no_difference_and_a_large_one_is_shown():
    assert not peft.against(_record(), "lora", "full").shown  # -1.3 points, floor about 2 points
    judged = peft.against(_record(), "head", "full")
    assert judged.shown and judged.difference_points == pytest.approx(-31.0)
    assert judged.names == ("head-only training", "full fine-tuning")


def test_the_lora_target_needs_both_the_bytes_and_the_gap():
    met = peft.lora_target(_record(), "lora")
    assert "6.7x fewer bytes" in met and "+1.3 points" in met and "the target is met" in met
    far = peft.lora_target(_record(lora=(0.70, 0.71, 0.72)), "lora")
    assert "the target is **not met**" in far
    with pytest.raises(ValueError, match="variant='bitfit' is invalid: allowed one of"):
        peft.lora_target(_record(), "bitfit")


def test_the_table_has_one_row_per_strategy_with_its_bytes_ratio():
    rows = peft.table(_record()).splitlines()
    assert len(rows) == 1 + len(STRATEGIES)
    assert "6.7x" in rows[3] and rows[3].startswith("lora ")
    assert rows[1].endswith("-31.0 shown (2.0)") and rows[3].endswith("-1.3 not shown (2.0)")


def test_fedbn_is_judged_on_the_mean_and_client_by_client():
    rec = _record()
    assert peft.fedbn(rec).difference_points == pytest.approx(31 / 3, abs=0.01)  # (20 + 2/3) / 2 clients
    per_client = peft.fedbn_per_client(rec)
    assert [round(v.difference_points, 1) for v in per_client] == [20.0, 0.7]
    assert per_client[0].shown and not per_client[1].shown
    assert peft.fedbn(rec, control=True).difference_points == 0.0


def test_factors_against_products_over_the_seeds():
    judged = peft.factor_vs_product(_record())
    assert judged.difference_points == pytest.approx(0.0, abs=1e-9) and not judged.shown


def test_still_rising_compares_the_last_rounds_with_the_ones_before():
    rec = _record()
    for d in rec["per_seed"]:
        d["curves"]["full"] = [0.1, 0.80, 0.81, 0.80, 0.81]
    flat = peft.still_rising(rec)
    assert flat.difference_points == pytest.approx(0.0) and not flat.shown
    for d in rec["per_seed"]:
        d["curves"]["full"] = [0.1, 0.50, 0.55, 0.80, 0.81]
    assert peft.still_rising(rec).shown and peft.still_rising(rec).difference_points == pytest.approx(28.0)


def test_fedbn_reading_names_the_clients_the_rule_shows_and_concludes_from_both_verdicts():
    reading = peft.fedbn_reading(_record())
    assert reading["by_client"].startswith(
        "FedBN is shown above FedAvg on 1 of the 2 clients (client 0, tint)")
    assert "below it on 0;" in reading["by_client"]
    assert reading["conclusion"].startswith("Here the gain under skew is shown and the control shows none")
    spread = _record(fedbn=[[0.90, 0.60], [0.70, 0.62], [0.95, 0.61]])  # the seeds disagree by 25 points
    conclusion = peft.fedbn_reading(spread)["conclusion"]
    assert conclusion.startswith("Here neither is shown on the mean over clients")

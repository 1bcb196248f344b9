"""Committed results reproduce: the figures the book shows from ``results/`` are not stale.

Some comparisons take too long for the book build (tuned arms, many rounds, several seeds), so
a benchmark writes them to ``results/*.json`` with their provenance and the chapters show that
file. Here the start of one seed is run again with the recorded config and must give the
recorded accuracies.
"""

import json
from pathlib import Path

import pytest

import fedtl_helpers as fl

ROOT = Path(__file__).resolve().parents[1]
TRANSFER = ROOT / "results" / "bench_transfer.json"


def _bench():
    return json.loads(TRANSFER.read_text())


# How many test images a re-run may differ from its record by, in any round it re-runs. Seeded
# runs repeat bit for bit on one machine, not across machines: oneDNN's kernels (on by default
# only on CPUs with AVX-512 VNNI/BF16 or AMX, off on the project's AMD EPYC) and the thread count
# change the order of floating-point sums. Measured with
# `python benchmarks/bench_kernel_paths.py --out results/bench_kernel_paths.json` (oneDNN on and
# off, all threads and one, on an AMD EPYC; the record was made on another machine), plus the
# figures an AVX-512 Xeon gave for two of them (issue 27). Rule: twice the largest difference
# seen from the record on any path, plus 2 images. Whole images, so no comparison sits on a
# floating-point boundary (0.002 vs 0.0020000000000000018 failed on the Xeon).
TOLERANCE_IMAGES = {
    # full fine-tuning at its tuned 3e-3 (the record made again on 2026-12-06, `--only
    # bench_transfer/pretrained bench_transfer/random`): round 1 is 0 / 10 / 6 / 10 images off the
    # record on the four paths (at 1e-3 it was 4 / 2 / 4 / 2, and 1 image on an AVX-512 Xeon)
    "bench_transfer/pretrained": 2 * 10 + 2,
    "bench_transfer/random": 2 * 1 + 2,  # at chance: 0 images off on every path (1 for the old record)
    # LoRA, 5 clients x 400 images, 2,000 test images (the record made again on 2026-12-06):
    # 0 / 1 / 0 / 1 images off on the four paths (`--only bench_peft/lora`); the old 4 x 200 record
    # moved 2 of 500 between paths and 1 on the Xeon
    "bench_peft/lora": 2 * 1 + 2,
    # the head on a frozen backbone's cached features: identical on all four paths
    "bench_strategies/head": 2 * 0 + 2,
    "bench_dp/dp": 2 * 0 + 2,
    "bench_compression/prune_1pct": 2 * 0 + 2,
    "bench_robust/Krum, none": 2 * 0 + 2,
    # a random start under skew at 1e-3 (the record made again on 2026-12-07 on an Intel Xeon, oneDNN on
    # by default), at chance after round 1: 0 / 0 / 0 / 0 images off on the four paths there
    "bench_noniid_gap/random skew": 2 * 0 + 2,
}


def images_apart(got, recorded, n_test) -> int:
    """The largest difference between two accuracy curves, in test images."""
    return max(round(abs(a - b) * n_test) for a, b in zip(got, recorded, strict=True))


@pytest.mark.parametrize("name, arm, rounds", fl.results.RERUNS, ids=lambda v: str(v).replace(" ", ""))
def test_the_start_of_every_record_reproduces(name, arm, rounds):
    """The first rounds of one seed of each record, run again now, give the recorded accuracies
    within the measured kernel-path tolerance: the committed file is not stale."""
    config, recorded = fl.results.recorded_start(name, arm, rounds)
    history = fl.results.rerun_history(name, arm, rounds)
    got, n_test = history.column("test_accuracy"), fl.ExperimentConfig.from_dict(config).n_test
    assert len(got) == len(recorded) == rounds + 1
    assert images_apart(got, recorded, n_test) <= TOLERANCE_IMAGES[f"{name}/{arm}"], (got, recorded)
    if name == "bench_peft":  # bytes are counted, not computed in floating point: exact
        assert history.column("bytes_up")[1:] == fl.results.load(name, show=False)["per_seed"][0][
            "bytes_up"][arm][:rounds]


def test_the_tolerances_cover_the_measured_kernel_path_spread():
    """Every re-run has a tolerance, above what bench_kernel_paths.py measured for it."""
    measured = fl.results.load("bench_kernel_paths", show=False)
    assert set(TOLERANCE_IMAGES) == {f"{n}/{a}" for n, a, _ in fl.results.RERUNS} == set(measured["per_run"])
    assert set(measured["per_path"]) == {"onednn-off", "onednn-on", "onednn-off-1-thread",
                                         "onednn-on-1-thread"}
    for run, spread in measured["per_run"].items():
        assert TOLERANCE_IMAGES[run] > max(spread.values()), run


@pytest.mark.parametrize("name", ["bench_transfer", "bench_transfer_digits"])
def test_bench_transfer_record_is_complete(name):
    bench = fl.results.load(name, show=False)
    assert {"command", "commit", "date", "machine", "seconds"} <= set(bench["provenance"])
    assert bench["provenance"]["command"].startswith("python benchmarks/bench_transfer.py")
    if name.endswith("_digits"):  # the real digits, evaluated with recomputed BatchNorm statistics
        assert "--dataset digits" in bench["provenance"]["command"] and bench["dataset"] == "digits"
        assert all(c["dataset"] == "digits" and c["bn_recalibration"] for c in bench["configs"].values())
        assert "UCI handwritten digits" in bench["data"] and not any(bench["lr_at_grid_edge"].values())
    assert len(bench["seeds"]) >= 3 and len(bench["per_seed"]) == len(bench["seeds"])
    for s in bench["per_seed"]:
        assert len(s["curves"]["pretrained"]) == len(s["curves"]["random"]) == bench["rounds"] + 1
    # the learning rates were chosen per arm on a validation split, from the recorded scores
    for arm in ("pretrained", "random"):
        scores = bench["tuning_scores"][arm]
        assert float(max(scores, key=scores.get)) == bench[f"lr_{arm}"]
        assert bench["configs"][arm]["learning_rate"] == bench[f"lr_{arm}"]


# The fair comparisons of chapters "Client fine-tuning" and "Differential privacy": each arm's
# tuned setting, every seed's curve, and summary figures that follow from the curves.
FAIR = {"bench_strategies": ("strategies", "lr", "learning_rate"),
        "bench_strategies_digits": ("strategies", "lr", "learning_rate"),
        "bench_dp": ("arms", "client_lr", "learning_rate"),
        "bench_compression": ("methods", "lr", "learning_rate"),
        "bench_robust": ("arms", "lr", "learning_rate"),
        "bench_optimizer": ("arms", "lr", "learning_rate")}


def _record(name):
    return fl.results.load(name, show=False)


@pytest.mark.parametrize("name", FAIR)
def test_fair_comparison_record_is_complete_and_consistent(name):
    bench = _record(name)
    arms_key, lr_key, field = FAIR[name]
    assert bench["provenance"]["command"].startswith(f"python benchmarks/{name.removesuffix('_digits')}.py")
    assert len(bench["seeds"]) >= 3
    for arm, r in bench[arms_key].items():
        curves = bench["curves"][arm]
        assert len(curves) == len(bench["seeds"]) and {len(c) for c in curves} == {bench["rounds"] + 1}
        # the reported accuracy is what the curves say: mean over seeds of the last rounds' mean
        tails = [sum(c[-bench["last"]:]) / bench["last"] for c in curves]
        assert r["final_acc"] == pytest.approx(sum(tails) / len(tails), abs=1e-4)
        assert r["final_acc_min"] == pytest.approx(min(tails), abs=1e-4)
        # the setting run is the validation-split winner, and the recorded config ran with it
        scores = r["tuning_scores"]
        chosen = max(scores, key=scores.get)
        assert float(chosen.split("/")[0]) == r[lr_key] == bench["configs"][arm][field]


# Issue 28: a rate chosen over fewer rounds than it then runs may be wrong for the run, and a
# choice on the end of what was tried may hide a better one. These records tune every arm on one
# shared grid, widened until the choice is interior, with trials as long as the runs.
def _widened(name: str, bench: dict) -> tuple[int, int, list[list[float]], dict[str, tuple[dict, bool]]]:
    """A widened record's ``(tune_rounds, rounds, grids, {arm: (tuning scores, at the grid's end)})``."""
    if name == "bench_noniid_gap":
        arms = {f"{s} {p}": (bench["gap_tuning_scores"][f"{s} {p}"], p in bench[f"lr_{s}_at_grid_edge"])
                for s in ("pretrained", "random") for p in ("iid", "skew")}
        return bench["gap_tune_rounds"], bench["gap_rounds"], [bench["gap_grid"]], arms
    if name == "bench_transfer":
        edge = bench["lr_at_grid_edge"]
        arms = {arm: (scores, edge[arm]) for arm, scores in bench["tuning_scores"].items()}
        return bench["tune_rounds"], bench["rounds"], [bench["grid"]], arms
    keys = {"bench_strategies": ("strategies", "lr_at_grid_edge"), "bench_dp": ("arms", "at_grid_edge"),
            "bench_robust": ("arms", "at_grid_edge")}
    arms_key, edge_key = keys[name]
    grids = [bench["grid"]] + ([bench["server_grid"]] if name == "bench_dp" else [])
    return bench["tune_rounds"], bench["rounds"], grids, {
        arm: (r["tuning_scores"], r[edge_key]) for arm, r in bench[arms_key].items()}


WIDENED = ("bench_strategies", "bench_dp", "bench_robust", "bench_transfer", "bench_noniid_gap")


@pytest.mark.parametrize("name", WIDENED)
def test_rates_are_chosen_over_the_horizon_they_run_inside_one_shared_grid(name):
    tune_rounds, rounds, grids, arms = _widened(name, _record(name))
    assert tune_rounds == rounds
    for arm, (scores, at_edge) in arms.items():
        points = [tuple(map(float, k.split("/"))) for k in scores]
        for d, grid in enumerate(grids):
            assert all(p[d] in grid for p in points), (arm, d)
        if len(set(scores.values())) == 1:  # no rate learnt anything (attacked FedAvg): chapter 12 says so
            continue
        assert not at_edge, (name, arm)
        best = points[list(scores).index(max(scores, key=scores.get))]
        for d in range(len(best)):  # interior: something smaller and something larger was tried
            assert min(p[d] for p in points) < best[d] < max(p[d] for p in points), (name, arm, d)


@pytest.mark.parametrize("name, arms_key, baseline, paired", [
    ("bench_compression", "methods", "float32", "change_points"),
    ("bench_robust", "rule_cost", None, "cost_points")])
def test_paired_changes_follow_from_the_curves(name, arms_key, baseline, paired):
    """Chapters 08 and 12 judge each arm against a baseline *in the same seed*: the recorded
    changes are those per-seed differences of the curves' tails."""
    bench = _record(name)

    def tails(arm):
        return [sum(c[-bench["last"]:]) / bench["last"] for c in bench["curves"][arm]]

    for key, r in bench[arms_key].items():
        arm, base = (key, baseline) if baseline else (f"{key}, none", "FedAvg, none")
        diffs = [100 * (a - b) for a, b in zip(tails(arm), tails(base))]
        assert r[paired] == pytest.approx(sum(diffs) / len(diffs), abs=0.01)
        assert (r[f"{paired}_min"], r[f"{paired}_max"]) == pytest.approx((min(diffs), max(diffs)), abs=0.01)


def test_save_writes_the_record_with_its_provenance_and_load_reads_it(tmp_path, capsys):
    (tmp_path / "results").mkdir()
    fl.results.save(tmp_path / "results" / "bench_x.json", {"final_acc": 0.5}, seconds=12.0,
                    argv=["benchmarks/bench_x.py", "--out", "results/bench_x.json"], randomness="secure")
    record = fl.results.load("bench_x", root=tmp_path)
    assert "randomness='secure'" in capsys.readouterr().out  # said where the chapter shows the file
    assert record["final_acc"] == 0.5 and record["provenance"]["seconds"] == 12.0
    assert record["randomness"] == "secure"
    # the mode comes from the record's own configs; none, or two, is refused
    configs = {"configs": {"a": {"randomness": "simulation"}}}
    fl.results.save(tmp_path / "results" / "bench_y.json", configs, seconds=1.0, argv=["b.py"])
    assert fl.results.load("bench_y", root=tmp_path, show=False)["randomness"] == "simulation"
    for bad, mode in (({"final_acc": 0.5}, None), (configs, "secure")):
        with pytest.raises(ValueError, match="allowed exactly one of 'simulation', 'secure'"):
            fl.results.save(tmp_path / "results" / "bench_z.json", bad, seconds=1.0, argv=["b.py"],
                            randomness=mode)
    assert not (tmp_path / "results" / "bench_z.json").exists()
    assert record["provenance"]["command"].startswith("python benchmarks/bench_x.py")
    assert not list((tmp_path / "results").glob("*.tmp*"))  # written atomically, nothing left over


def test_bench_peft_record_is_complete_and_consistent():
    """Chapter 5b's record: every strategy (FFA-LoRA included) at its validation winner, chosen
    inside the grid; finals, gaps, LP-FT against full in the same round and FedBN's gains all
    follow from the curves and per-client accuracies it holds."""
    bench = _record("bench_peft")
    assert bench["provenance"]["command"].startswith("python benchmarks/bench_peft.py")
    assert len(bench["seeds"]) >= 3 and len(bench["per_seed"]) == len(bench["seeds"]) and bench["tuned"]
    assert set(bench["strategies"]) == {"head", "full", "lora", "ffa_lora", "bitfit", "lpft"}
    last = bench["last"]
    for strategy, r in bench["strategies"].items():
        scores = bench["tuning_scores"][strategy]
        assert float(max(scores, key=scores.get)) == r["lr"]  # the validation-split winner ran
        assert not r["at_grid_edge"] and min(map(float, scores)) < r["lr"] < max(map(float, scores))
        finals = [sum(s["curves"][strategy][-last:]) / last for s in bench["per_seed"]]
        assert r["final_acc"] == pytest.approx(sum(finals) / len(finals), abs=1e-4)
        assert bench["configs"][strategy]["learning_rate"] == r["lr"]
    for key, arm in (("lora_acc_gap_points", "lora"), ("ffa_lora_acc_gap_points", "ffa_lora")):
        gap = 100 * (bench["strategies"]["full"]["final_acc"] - bench["strategies"][arm]["final_acc"])
        assert bench[key] == pytest.approx(gap, abs=0.01)
    switch = bench["configs"]["lpft"]["lpft_switch_round"]
    diffs = [100 * sum(s["curves"]["lpft"][r] - s["curves"]["full"][r] for s in bench["per_seed"])
             / len(bench["per_seed"]) for r in range(switch + 1, bench["rounds"] + 1)]
    assert bench["lpft_minus_full_by_round"] == pytest.approx(diffs, abs=0.01)
    assert bench["lpft_dip_points"] == pytest.approx(max(0.0, -min(diffs)), abs=0.01)
    for key, suffix in (("fedbn_gain_points_per_seed", ""),
                        ("fedbn_gain_points_control_per_seed", "_control")):
        gains = [100 * (sum(s[f"fedbn_client_acc{suffix}"]) - sum(s[f"fedavg_client_acc{suffix}"]))
                 / len(s["fedbn_client_acc"]) for s in bench["per_seed"]]
        assert bench[key] == pytest.approx(gains, abs=0.01)


def test_bench_noniid_records_are_tuned_complete_and_consistent():
    """Chapter 10's two committed files: the algorithms (part 2) and the starts under skew
    (part 3), every arm at its own validation-split setting, every seed's curve."""
    algos = _record("bench_noniid")
    assert len(algos["seeds"]) >= 3
    for arm, curves in algos["algorithm_curves"].items():
        tails = [sum(c[-algos["algorithm_tail"]:]) / algos["algorithm_tail"] for c in curves]
        assert algos[f"algorithm {arm}"] == pytest.approx(sum(tails) / len(tails), abs=1e-4)
        assert algos[f"algorithm {arm}_min"] == pytest.approx(min(tails), abs=1e-4)
        scores = algos["algorithm_tuning_scores"][arm]
        lr, server_lr = (float(v) for v in max(scores, key=scores.get).split("/"))
        assert (lr, server_lr) == (algos[f"algorithm {arm}_lr"], algos[f"algorithm {arm}_server_lr"])
        assert algos["algorithm_configs"][arm]["learning_rate"] == lr
    gap = _record("bench_noniid_gap")
    assert gap["provenance"]["command"].startswith("python benchmarks/bench_noniid.py")
    assert len(gap["gap_seeds"]) >= 3
    for start in ("pretrained", "random"):
        for part in ("iid", "skew"):
            arm = f"{start} {part}"
            curves = gap["gap_curves"][arm]
            assert len(curves) == len(gap["gap_seeds"])
            assert {len(c) for c in curves} == {gap["gap_rounds"] + 1}
            tails = [sum(c[-gap["gap_tail"]:]) / gap["gap_tail"] for c in curves]
            assert gap[f"{part}_{start}_per_seed"] == pytest.approx(tails, abs=1e-4)
            scores = gap["gap_tuning_scores"][arm]
            assert float(max(scores, key=scores.get)) == gap[f"lr_{start}_{part}"]
            assert gap["gap_configs"][arm]["learning_rate"] == gap[f"lr_{start}_{part}"]
        lost = [a - b for a, b in zip(gap[f"iid_{start}_per_seed"], gap[f"skew_{start}_per_seed"])]
        assert gap[f"gap_{start}_per_seed"] == pytest.approx(lost, abs=2e-4)


@pytest.mark.parametrize("path", sorted((ROOT / "results").glob("*.json")), ids=lambda p: p.name)
def test_every_committed_record_names_its_randomness_mode(path):
    """Seeded ("simulation") noise protects nothing: every record says which mode made it, and
    that is the mode of every config inside it."""
    record = json.loads(path.read_text())
    assert record["randomness"] in ("simulation", "secure")
    assert fl.results.randomness_modes({k: v for k, v in record.items() if k != "randomness"}) <= {
        record["randomness"]}


@pytest.mark.parametrize("path", sorted((ROOT / "results").glob("*.json")), ids=lambda p: p.name)
def test_every_committed_record_can_be_rerun_from_the_repository_root(path):
    """A record's provenance carries no folder of the machine that made it: its command runs
    from the root of any checkout."""
    import re

    prov = json.loads(path.read_text())["provenance"]
    assert prov["command"].startswith("python benchmarks/"), prov["command"]
    assert not re.search(r"(^|[\s=])(/|~|[A-Za-z]:\\)", prov["command"]), prov["command"]
    assert not re.search(r"/(work|home|root|tmp|Users)/", json.dumps(prov)), prov


def test_provenance_makes_paths_portable(tmp_path):
    from fedtl_helpers.workflow.provenance import ROOT as REPO
    from fedtl_helpers.workflow.provenance import portable_arg, provenance

    assert portable_arg(str(REPO / "results" / "x.json")) == "results/x.json"
    assert portable_arg(f"--out={REPO / 'runs' / 'a.json'}") == "--out=runs/a.json"
    assert portable_arg(str(tmp_path / "b.json")) == "<outside>/b.json"
    assert portable_arg("--rounds") == "--rounds" and portable_arg("0.001") == "0.001"
    prov = provenance(["benchmarks/bench_x.py", "--out", str(REPO / "results" / "bench_x.json")], 1.0)
    assert prov["command"] == "python benchmarks/bench_x.py --out results/bench_x.json"
    assert prov["cpu"] and prov["onednn"] in ("default", "0", "1")

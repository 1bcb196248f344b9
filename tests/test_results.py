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


def test_bench_transfer_record_is_complete():
    bench = _bench()
    assert {"command", "commit", "date", "machine", "seconds"} <= set(bench["provenance"])
    assert bench["provenance"]["command"].startswith("python benchmarks/bench_transfer.py")
    assert len(bench["seeds"]) >= 3 and len(bench["per_seed"]) == len(bench["seeds"])
    for s in bench["per_seed"]:
        assert len(s["curves"]["pretrained"]) == len(s["curves"]["random"]) == bench["rounds"] + 1
    # the learning rates were chosen per arm on a validation split, from the recorded scores
    for arm in ("pretrained", "random"):
        scores = bench["tuning_scores"][arm]
        assert float(max(scores, key=scores.get)) == bench[f"lr_{arm}"]
        assert bench["configs"][arm]["learning_rate"] == bench[f"lr_{arm}"]


@pytest.mark.parametrize("arm, rounds", [("pretrained", 1), ("random", 1)])
def test_bench_transfer_first_rounds_reproduce(arm, rounds):
    bench = _bench()
    config = fl.ExperimentConfig.from_dict({**bench["configs"][arm], "rounds": rounds})
    history = fl.run_federated(config, progress=False).history
    recorded = bench["per_seed"][0]["curves"][arm][:rounds + 1]
    assert bench["per_seed"][0]["seed"] == config.seed
    # 0.002 = 4 of the 2,000 test images: room for floating-point order, not for another result
    assert history.column("test_accuracy") == pytest.approx(recorded, abs=0.002)


# The fair comparisons of chapters "Client fine-tuning" and "Differential privacy": each arm's
# tuned setting, every seed's curve, and summary figures that follow from the curves.
FAIR = {"bench_strategies": ("strategies", "lr", "learning_rate"),
        "bench_dp": ("arms", "client_lr", "learning_rate"),
        "bench_compression": ("methods", "lr", "learning_rate"),
        "bench_robust": ("arms", "lr", "learning_rate")}


def _record(name):
    return fl.results.load(name, show=False)


@pytest.mark.parametrize("name", FAIR)
def test_fair_comparison_record_is_complete_and_consistent(name):
    bench = _record(name)
    arms_key, lr_key, field = FAIR[name]
    assert bench["provenance"]["command"].startswith(f"python benchmarks/{name}.py")
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


@pytest.mark.parametrize("name, arm, rounds", [("bench_strategies", "head", 2), ("bench_dp", "dp", 1),
                                              ("bench_compression", "prune_1pct", 1),
                                              ("bench_robust", "Krum, none", 1)])
def test_fair_comparison_first_rounds_reproduce(name, arm, rounds):
    bench = _record(name)
    config = fl.ExperimentConfig.from_dict({**bench["configs"][arm], "rounds": rounds})
    history = fl.run_federated(config, progress=False).history
    assert history.column("test_accuracy") == pytest.approx(bench["curves"][arm][0][:rounds + 1], abs=0.002)


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


def _peft_config(bench, strategy, rounds):
    """The config bench_peft.py ran for ``strategy`` on the first seed (its defaults)."""
    clients, per_client = 4, 200
    assert f"{clients} IID clients x {per_client} images" in bench["data"]
    return fl.ExperimentConfig(num_clients=clients, n_train=clients * per_client, n_test=500,
                               rounds=rounds, strategy=strategy, weights="builtin",
                               learning_rate=bench["strategies"][strategy]["lr"], lora_rank=4,
                               lpft_switch_round=2, seed=bench["seeds"][0])


def test_bench_peft_record_is_complete_and_consistent():
    bench = _record("bench_peft")
    assert bench["provenance"]["command"].startswith("python benchmarks/bench_peft.py")
    assert len(bench["seeds"]) >= 3 and len(bench["per_seed"]) == len(bench["seeds"]) and bench["tuned"]
    for strategy, r in bench["strategies"].items():
        scores = bench["tuning_scores"][strategy]
        assert float(max(scores, key=scores.get)) == r["lr"]  # the validation-split winner ran
        finals = [s["curves"][strategy][-1] for s in bench["per_seed"]]
        assert r["final_acc"] == pytest.approx(sum(finals) / len(finals), abs=1e-4)
    gap = 100 * (bench["strategies"]["full"]["final_acc"] - bench["strategies"]["lora"]["final_acc"])
    assert bench["lora_acc_gap_points"] == pytest.approx(gap, abs=0.01)


def test_bench_peft_first_rounds_reproduce():
    bench = _record("bench_peft")
    history = fl.run_federated(_peft_config(bench, "lora", 2), progress=False).history
    recorded = bench["per_seed"][0]["curves"]["lora"][:3]
    # 0.002 = 1 of the 500 test images: room for floating-point order, not for another result
    assert history.column("test_accuracy") == pytest.approx(recorded, abs=0.002)
    assert history.column("bytes_up")[1:] == bench["per_seed"][0]["bytes_up"]["lora"][:2]


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


@pytest.mark.parametrize("arm", ["random skew"])
def test_bench_noniid_gap_first_round_reproduces(arm):
    gap = _record("bench_noniid_gap")
    config = fl.ExperimentConfig.from_dict({**gap["gap_configs"][arm], "rounds": 1})
    history = fl.run_federated(config, progress=False).history
    assert history.column("test_accuracy") == pytest.approx(gap["gap_curves"][arm][0][:2], abs=0.002)


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

import json

from fedtl_helpers.__main__ import main


def test_bad_value_is_rejected_naming_the_field(capsys):
    assert main(["run", "--client-fraction", "1.5", "--out", "/nonexistent/never"]) == 2
    err = capsys.readouterr().err
    assert "client_fraction=1.5" in err and "(0, 1]" in err


def test_cli_run_writes_history_and_prints_json(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", "--rounds", "1", "--num-clients", "2", "--n-train", "400", "--n-test", "200",
                 "--strategy", "head", "--weights", "none", "--out", str(out), "--quiet"])
    assert code == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["weights"] == "random init" and "shapes" in last["dataset"]
    saved = json.loads((out / "history.json").read_text())
    assert [r["round"] for r in saved["rows"]] == [0, 1]
    assert (out / "checkpoint.npz").is_file()

"""iotclass train / evaluate / classify on a dataset the project generates."""

from __future__ import annotations

import json

import pytest

from classifier.cli import main


@pytest.fixture(scope="module")
def engine_dir(synth_dataset, tmp_path_factory):
    folder, _ = synth_dataset
    out = tmp_path_factory.mktemp("engine")
    assert main(["train", "--datasets", str(folder), "--out", str(out), "--interval", "60", "--window", "4",
                 "--sessions", "8", "--epochs", "10"]) == 0
    return out


def test_train_writes_an_engine(engine_dir):
    doc = json.loads((engine_dir / "engine.json").read_text())
    assert doc["format"] == "iotclass-engine" and doc["segment_model"] is False  # no long captures here
    assert doc["info"]["captures"] == 3 and doc["info"]["devices"] == 14
    assert (engine_dir / "session.safetensors").stat().st_size > 1000


def test_classify_json(engine_dir, synth_capture, capsys):
    path, devices, net = synth_capture
    assert main(["classify", str(path), "--model", str(engine_dir), "--json", "--devices", str(devices)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["mac"] for r in rows} == {d.mac for d in net.devices}
    for r in rows:
        assert {"mac", "category", "confidence", "decision", "model", "explanation"} <= set(r)
        assert r["decision"] in ("provisional", "confirmed", "unknown", "learning")
    decided = [r for r in rows if r["decision"] in ("provisional", "confirmed")]
    assert len(decided) >= 5
    assert sum(r["category"] == r["true_category"] for r in decided) >= 0.8 * len(decided)


def test_classify_table_and_missing_model(synth_capture, tmp_path, capsys):
    path, _, _ = synth_capture
    assert main(["classify", str(path), "--model", str(tmp_path)]) == 1
    assert "no engine.json" in capsys.readouterr().err


def test_evaluate_known_writes_tables_json_and_plots(synth_dataset, tmp_path, capsys):
    folder, _ = synth_dataset
    out = tmp_path / "res"
    assert main(["evaluate", "known", "--data", "all", "--datasets", str(folder), "--models", "rf,nba",
                 "--folds", "3", "--epochs", "5", "--interval", "60", "--window", "4", "--sessions", "8",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "known on all" in text and "Accuracy" in text
    result = json.loads((out / "known-all.json").read_text())
    assert {r["model"] for r in result["runs"]} == {"rf", "nba"} and len(result["runs"]) == 6
    assert (out / "confusion-known-all-rf.png").stat().st_size > 1000
    assert result["summary"]["rf"]["accuracy_mean"] > 0.5


def test_evaluate_rejects_unknown_models(synth_dataset, tmp_path, capsys):
    folder, _ = synth_dataset
    assert main(["evaluate", "unseen", "--data", "all", "--datasets", str(folder), "--models", "rf,magic",
                 "--out", str(tmp_path)]) == 1
    assert "unknown model(s) magic" in capsys.readouterr().err


def test_evaluate_online_replays_the_whole_engine_or_behaviour_alone(synth_dataset, tmp_path):
    """``evaluate online`` replays the engine as shipped (identity voter included); with
    ``--behaviour-only`` the engine before identity evidence. The generated devices ask DNS
    names from their first seconds, so the whole engine is right sooner."""
    folder, _ = synth_dataset
    out = tmp_path / "res"
    base = ["evaluate", "online", "--data", "all", "--datasets", str(folder), "--folds", "2", "--epochs", "1",
            "--out", str(out)]
    assert main(base) == 0 and main(base + ["--behaviour-only"]) == 0
    whole = json.loads((out / "online-all.json").read_text())
    alone = json.loads((out / "online-all-behaviour.json").read_text())
    assert whole["engine"].startswith("whole") and alone["engine"] == "behaviour models only"
    assert whole["summary"]["streams"] == alone["summary"]["streams"] > 0
    w, a = whole["summary"], alone["summary"]
    assert w["median_first_correct_provisional_s"] < a["median_first_correct_provisional_s"], (w, a)

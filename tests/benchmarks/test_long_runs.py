"""benchmarks/long_runs.py: a long run's curve and best epoch come from its history.csv, the bar from the
shipped card, and a run that has not finished an epoch is reported as such."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("long_runs", REPO / "benchmarks" / "long_runs.py")
L = importlib.util.module_from_spec(spec)
spec.loader.exec_module(L)


def _run(tmp: Path, name: str, val: list[float], **config) -> Path:
    run = tmp / name
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "edgenet_s", "epochs": 10, "recipe": "fast",
                                                  "recipe_sha256": "ab" * 32, **config}))
    lines = ["epoch,accuracy,learning_rate,loss,val_accuracy,val_loss"]
    lines += [f"{i},0.5,{0.002 * (1 - i / 10)},1.0,{v},1.0" for i, v in enumerate(val)]
    (run / "history.csv").write_text("\n".join(lines) + "\n")
    return run


def test_summary_and_plot_of_runs_in_progress(tmp_path, capsys):
    shipped = json.loads((REPO / "models" / "fer_fast.json").read_text())["metrics"]["float"]["PublicTest"]["top1"]
    better = _run(tmp_path, "a", [0.30, 0.55, 0.99, 0.60], resumed=[{"epochs_done": 2}])
    s = L.summarise(better, "fer_fast")
    assert (s["epochs_done"], s["epochs_planned"], s["sittings"], s["precision"]) == (4, 10, 2, "float32")
    assert (s["best_PublicTest"], s["best_epoch"], s["last_PublicTest"]) == (99.0, 3, 60.0)
    assert s["shipped_PublicTest_float"] == shipped and s["beats_shipped_so_far"] and not s["finished"]
    worse = _run(tmp_path, "b", [0.10, 0.20])
    assert not L.summarise(worse, "fer_fast")["beats_shipped_so_far"]
    empty = _run(tmp_path, "c", [])
    out = tmp_path / "res" / "long_runs"
    assert L.main([f"{better}:fer_fast", f"{worse}:fer_fast", f"{empty}:fer_fast", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "best PublicTest 99.0 % at epoch 3" in printed and "c: started, no epoch completed yet" in printed
    rows = json.loads(out.with_suffix(".json").read_text())["runs"]
    assert [r["epochs_done"] for r in rows] == [4, 2, 0]
    assert out.with_suffix(".png").stat().st_size > 10_000
    assert L.main([str(tmp_path / "missing"), "--out", str(out)]) == 1


def test_the_shipped_runs_curve_when_its_folder_is_here(tmp_path, monkeypatch, capsys):
    """A long run is compared with the shipped model's own run at the same epoch; without that folder (a clean
    checkout) the comparison is absent, not invented."""
    card = json.loads((REPO / "models" / "fer_fast.json").read_text())
    card["training"]["run_dir"] = "runs/shipped-run"
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "fer_fast.json").write_text(json.dumps(card))
    (tmp_path / "runs").mkdir()
    _run(tmp_path / "runs", "shipped-run", [0.40, 0.62, 0.58, 0.70, 0.71])
    new = _run(tmp_path / "runs", "new-run", [0.45, 0.50, 0.61])
    monkeypatch.setattr(L, "REPO", tmp_path)
    s = L.summarise(new, "fer_fast")
    assert s["shipped_run"] == "runs/shipped-run"
    assert s["shipped_run_PublicTest_per_epoch"] == [40.0, 62.0, 58.0, 70.0, 71.0]
    assert s["shipped_run_best_by_same_epoch"] == 62.0      # best of its first 3 epochs, not of all 5
    out = tmp_path / "res" / "long_runs"
    assert L.main([f"{new}:fer_fast", "--out", str(out)]) == 0
    assert "shipped-run had 62.0 % by epoch 3" in capsys.readouterr().out
    # the shipped run itself, or a card whose run folder is not here: no comparison
    assert L.summarise(tmp_path / "runs" / "shipped-run", "fer_fast")["shipped_run"] is None
    card["training"]["run_dir"] = "runs/gone"
    (tmp_path / "models" / "fer_fast.json").write_text(json.dumps(card))
    gone = L.summarise(new, "fer_fast")
    assert gone["shipped_run"] is None and gone["shipped_run_best_by_same_epoch"] is None


def test_a_parked_run_is_read_where_fer_train_park_carried_it(tmp_path, monkeypatch, capsys):
    """On a machine without runs/<run>, the run's parked copy (models/in_training/<run>) is drawn instead."""
    parked = tmp_path / "models" / "in_training"
    parked.mkdir(parents=True)
    _run(parked, "long-run", [0.40, 0.52])
    monkeypatch.setattr(L, "PARKED", parked)
    assert L._folder(str(tmp_path / "runs" / "long-run")) == parked / "long-run"
    out = tmp_path / "res" / "long_runs"
    assert L.main([f"{tmp_path / 'runs' / 'long-run'}:fer_fast", "--out", str(out)]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["runs"][0]["best_PublicTest"] == 52.0
    here = _run(tmp_path, "long-run", [0.41])  # the run folder itself, when it is here, wins
    assert L._folder(str(here)) == here


def test_a_finished_run_keeps_its_recorded_curve_and_a_run_is_drawn_against_its_baseline(tmp_path, monkeypatch, capsys):
    """A finished run whose folder and parked copy are gone keeps the row the last results file holds (an
    unfinished one does not: it would go stale); a RUNS entry may name a baseline run to compare with."""
    out = tmp_path / "res" / "long_runs"
    out.parent.mkdir()
    old, unfinished = str(tmp_path / "runs" / "old-finished"), str(tmp_path / "runs" / "old-unfinished")
    done = {"run": old, "finished": True, "epochs_done": 2, "epochs_planned": 2, "sittings": 1,
            "precision": "float32", "best_PublicTest": 60.0, "best_epoch": 2, "last_PublicTest": 60.0,
            "shipped": "fer_fast", "shipped_PublicTest_float": 68.4, "PublicTest_per_epoch": [50.0, 60.0],
            "learning_rate_per_epoch": [0.002, 0.001], "shipped_run": None, "shipped_run_best_by_same_epoch": None}
    out.with_suffix(".json").write_text(json.dumps({"runs": [done, {**done, "run": unfinished, "finished": False}]}))
    (tmp_path / "runs").mkdir()
    new = _run(tmp_path / "runs", "new-run", [0.45, 0.55, 0.61])
    monkeypatch.setattr(L, "PARKED", tmp_path / "parked")
    monkeypatch.setattr(L, "RUNS", {old: "fer_fast", unfinished: "fer_fast", str(new): ("fer_fast", old)})
    assert L.main(["--out", str(out)]) == 0
    rows = json.loads(out.with_suffix(".json").read_text())["runs"]
    assert [r["run"] for r in rows] == [old, str(new)]
    assert rows[0]["PublicTest_per_epoch"] == [50.0, 60.0]
    assert rows[1]["shipped_run_PublicTest_per_epoch"] == [50.0, 60.0]      # the baseline's recorded curve
    assert rows[1]["shipped_run_best_by_same_epoch"] == 60.0 and rows[1]["compared_with"] == "the run named in RUNS"
    assert rows[1]["lead_per_10_epochs"] == [-5.0]                         # (45 + 55) / 2 - (50 + 60) / 2
    printed = capsys.readouterr().out
    assert "old-finished had 60.0 % by epoch 3" in printed and "per 10 epochs (pp): -5.00" in printed


def test_lead_per_block_averages_the_epochs_both_runs_have():
    assert L.lead_per_block([60, 62, 64, 70, 71], [59, 60, 66], block=2) == [1.5, -2.0]
    assert L.lead_per_block([50.0] * 25, [49.0] * 30) == [1.0, 1.0, 1.0]   # 10 + 10 + 5 epochs
    assert L.lead_per_block([], [50.0]) == []

"""benchmarks/models_table.py: the models/README.md table is generated from cards, never typed."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from fer_edge.contract import EMOTIONS, FERPLUS_EMOTIONS

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("models_table", REPO / "benchmarks" / "models_table.py")
T = importlib.util.module_from_spec(spec)
spec.loader.exec_module(T)


def card(tmp: Path, name: str, arch: str, labels=EMOTIONS, **training) -> Path:
    path = tmp / f"{name}.json"
    path.write_text(json.dumps({
        "name": name, "labels": list(labels), "input_size": [48, 48], "architecture": arch, "params": 1234,
        "macs": 5_600_000, "files": {"int8": f"{name}_int8.tflite"}, "sizes": {f"{name}_int8.tflite": 250_000},
        "metrics": {"float": {"PrivateTest": {"top1": 61.234, "macro_f1": 50.0}},
                    "int8": {"PrivateTest": {"top1": 61.0}}, "latency_ms": {"int8": {"median_ms": 0.37}}},
        "training": {"model": arch, "epochs": 60, "lr": 0.001, **training}}))
    return path


def test_reproduce_command_lists_only_what_differs_from_the_defaults():
    assert T.fit_command({"model": "edgenet", "epochs": 60, "lr": 0.001}) == "fer-train fit --model edgenet"
    cmd = T.fit_command({"model": "edgenet", "epochs": 10, "init_from": "runs/a", "kd_alpha": 0.7,
                         "ferplus_votes": "v.npz", "flip": False, "name": "b"})
    assert cmd == "fer-train fit --model edgenet --ferplus-votes v.npz --init-from runs/a --epochs 10 --name b"
    assert "--kd-alpha 0.7" in T.fit_command({"model": "edgenet_s", "teacher": "runs/t", "kd_alpha": 0.7})
    assert "--teacher runs/a --teacher runs/b" in T.fit_command({"model": "edgenet_s", "teacher": ["runs/a", "runs/b"]})
    assert T.fit_command({"model": "edgenet", "swa_epochs": 8}) == "fer-train fit --model edgenet --swa-epochs 8"
    soup = {"sources": ["runs/a", "runs/b"], "weights": [1.0, 1.0]}
    assert T.fit_command({"model": "edgenet", "epochs": 9, "name": "s", "soup": soup}) == \
        "fer-train soup runs/a runs/b --name s"
    assert T.fit_command({"model": "edgenet", "soup": {**soup, "weights": [2.0, 1.0]}}) == \
        "fer-train soup runs/a runs/b --weight 2 --weight 1"


def test_rows_order_and_label_sets(tmp_path):
    shipped = [card(tmp_path, "fer_fast", "edgenet_s"), card(tmp_path, "fer_default", "edgenet"),
               card(tmp_path, "fer_ferplus", "edgenet", FERPLUS_EMOTIONS, ferplus_votes="v.npz")]
    ref = tmp_path / "ref"
    ref.mkdir()
    reference = [card(ref, "v2-2ep", "v2"), card(ref, "mnv2", "mobilenetv2"), card(ref, "base", "baseline")]
    ordered = [p.stem for p in T.order_cards(shipped, reference)]
    assert ordered == ["fer_default", "fer_fast", "fer_ferplus", "base", "v2-2ep", "mnv2"]

    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{T.START}\nold\n{T.END}\noutro\n")
    (tmp_path / "fer_default_convert.json").write_text("{}")  # a report beside the cards: not a row
    T.table(T.order_cards(shipped + [tmp_path / "fer_default_convert.json"], reference), readme)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old" not in text
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) == 6
    assert all(r.count("|") == T.HEADER.splitlines()[0].count("|") for r in rows)
    assert "FER+ (8, vote plurality)" in rows[2] and "FER2013 (7)" in rows[0]
    assert "| 61.23 | 61.00 | – |" in rows[0] and "0.25 MB" in rows[0] and "5.6 M" in rows[0]


def test_ferplus_majority_protocol_column(tmp_path):
    """A FER+ card's int8 top-1 on Microsoft's majority protocol (written by `fer-convert --measure` or the
    gate) fills its own column, PublicTest / PrivateTest, beside the plurality figures."""
    path = card(tmp_path, "fer_ferplus", "edgenet", FERPLUS_EMOTIONS, ferplus_votes="v.npz")
    c = json.loads(path.read_text())
    c["metrics"]["int8"]["PublicTest"] = {"top1": 83.9, "top1_ferplus_majority": 88.031, "n_ferplus_majority": 3199}
    c["metrics"]["int8"]["PrivateTest"].update(top1_ferplus_majority=86.648, n_ferplus_majority=3153)
    path.write_text(json.dumps(c))
    row = T.row(path)
    assert "| 61.23 | 61.00 | 88.03 / 86.65 | – |" in row
    assert row.count("|") == T.HEADER.splitlines()[0].count("|")
    c["metrics"]["int8"]["PublicTest"] = {"top1": 83.9}  # measured on one split only
    path.write_text(json.dumps(c))
    assert "| 61.00 | – / 86.65 |" in T.row(path)


def test_a_rejected_int8_says_why(tmp_path):
    path = card(tmp_path, "mnv2", "mobilenetv2")
    c = json.loads(path.read_text())
    c["metrics"]["gate"] = {"int8": {"PublicTest": {"passed": False, "reasons": ["agreement 95.57% < 97%"]}}}
    path.write_text(json.dumps(c))
    assert "| rejected by the gate: agreement 95.57% < 97% |" in T.row(path)


def test_table_refuses_a_readme_without_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("no markers")
    with pytest.raises(SystemExit, match="markers"):
        T.table([], readme)


def test_a_recipe_runs_command_is_the_recipe_plus_what_the_command_line_changed():
    from fer_train.fit import FitConfig
    from fer_train.recipes import apply_recipe

    cfg, info = apply_recipe(FitConfig(), "fast", set())
    training = {k: getattr(cfg, k) for k in T.FIT_KEYS + T.RECIPE_KEYS if hasattr(cfg, k)}
    training.update(recipe="fast", recipe_sha256=info["sha256"], name="f")
    assert T.fit_command(training) == "fer-train fit --recipe fast --name f"
    changed = {**training, "epochs": 300, "teacher": ["runs/t"], "jpeg": 0.0}
    assert T.fit_command(changed) == "fer-train fit --recipe fast --epochs 300 --teacher runs/t --jpeg 0.0 --name f"
    edited = {**training, "recipe_sha256": "0123456789abcdef"}
    assert T.fit_command(edited).startswith("fer-train fit --recipe fast (the version with sha256 0123456789ab)")
    deeper = {**training, "model_opts": {"depths": [2, 1, 1]}}
    assert T.fit_command(deeper) == "fer-train fit --recipe fast --model-opt depths=2,1,1 --name f"
    assert T.fit_command({"model": "edgenet", "model_opts": {"depths": [1, 2, 2, 1]}, "epochs": 9}) == \
        "fer-train fit --model edgenet --model-opt depths=1,2,2,1 --epochs 9"


def test_a_run_of_an_older_recipe_version_kept_as_a_file_is_named_by_that_file():
    """The shipped models followed `fast` v1; v2 changed the file, and v1 is kept as fast-v1.toml (same bytes):
    their rows name fast-v1 and only what the run changed from it."""
    from fer_train.fit import FitConfig
    from fer_train.recipes import apply_recipe

    old, info = apply_recipe(FitConfig(), "fast-v1", set())
    training = {k: getattr(old, k) for k in T.FIT_KEYS + T.RECIPE_KEYS if hasattr(old, k)}
    training.update(recipe="fast", recipe_sha256=info["sha256"], name="edgenet_s-recipe-fast")
    assert T.fit_command(training) == "fer-train fit --recipe fast-v1 --name edgenet_s-recipe-fast"
    assert apply_recipe(FitConfig(), "fast", set())[1]["sha256"] != info["sha256"]


def test_runtime_views_in_the_command():
    """A v2 recipe run recorded the file `auto` made: its command needs no flag for it; a run given a file
    names it, with its probability."""
    from fer_train.fit import FitConfig
    from fer_train.recipes import apply_recipe

    cfg, info = apply_recipe(FitConfig(), "default", set())
    training = {k: getattr(cfg, k) for k in T.FIT_KEYS + T.RECIPE_KEYS if hasattr(cfg, k)}
    training.update(recipe="default", recipe_sha256=info["sha256"], name="d",
                    runtime_views="runs/runtime_views_0f324ead7729_v2_s1.npz")
    assert T.fit_command(training) == "fer-train fit --recipe default --name d"
    plain = {"model": "edgenet_s", "epochs": 6, "runtime_views": "runs/bench/views.npz", "runtime_view_p": 0.7,
             "name": "v"}
    assert T.fit_command(plain) == ("fer-train fit --model edgenet_s --epochs 6 --runtime-views runs/bench/views.npz "
                                    "--runtime-view-p 0.7 --name v")
    assert T.fit_command({**plain, "runtime_views": None}) == "fer-train fit --model edgenet_s --epochs 6 --name v"

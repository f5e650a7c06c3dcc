"""The gate: its figures, and a genuinely failing conversion caught by it (exit 5)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fer_convert import gate
from fer_edge import contract
from tests.conftest import write_npz
from tests.convert.conftest import files_in, run_convert


def test_compare_figures():
    y = np.array([0, 0, 1, 1, 2, 2, 2, 2])
    pf = np.eye(3)[[0, 0, 1, 1, 2, 2, 2, 0]].astype(np.float32)  # float: 7/8 right
    pc = np.eye(3)[[0, 1, 1, 1, 2, 2, 2, 0]].astype(np.float32)  # converted: 6/8 right
    m = gate.compare(y, pf, pc, ["a", "b", "c"])
    assert m["top1_float"] == 87.5 and m["top1_converted"] == 75.0 and m["drop_pp"] == 12.5
    assert m["agreement_pct"] == 87.5  # row 1 differs
    assert m["per_class"]["a"] == {"n": 2, "recall_float": 100.0, "recall_converted": 50.0, "recall_drop_pp": 50.0}
    assert m["per_class"]["c"]["recall_drop_pp"] == 0.0 and m["max_recall_drop_pp"] == 50.0
    assert m["mean_abs_dprob"] == pytest.approx(np.abs(pf - pc).mean(), abs=1e-6)
    assert gate.verdict(m, 1.0, 97.0) == ["top-1 drop 12.50 pp > 1 pp", "agreement 87.50% < 97%"]
    assert gate.verdict(m, 20.0, 80.0) == []


def test_gate_split_subset_is_seeded(tiny_data):
    from fer_train.data import load_npz

    ds = load_npz(tiny_data)
    a = gate.gate_split(ds, "private", rows=30, seed=3)
    b = gate.gate_split(ds, "private", rows=30, seed=3)
    assert a.split == "PrivateTest" and len(a.y) == 30 and a.total == int((ds.usage == 2).sum())
    assert np.array_equal(a.rows, b.rows)
    assert len(gate.gate_split(ds, "public").y) == int((ds.usage == 1).sum())


@pytest.mark.slow
def test_miscalibrated_int8_fails_the_gate(tmp_path, trained_keras, tiny_data, capsys):
    """Calibrated on dark faces only, the int8 input range cannot hold normal faces: accuracy collapses.

    Honest failure: nothing is forced; the calibration set simply does not cover what the gate
    (and a device) feeds the model. The gate must catch it, exit 5, and leave no loadable file.
    """
    with np.load(tiny_data) as d:
        x, y, usage = d["pixels"].copy(), d["emotion"], d["usage"]
    train = usage == 0
    x[train] = (x[train] * 0.15).astype(np.uint8)  # Training faces (the calibration pool) are dark
    dark = write_npz(tmp_path / "dark_train.npz", x, y, usage)
    out = tmp_path / "out"
    code = run_convert([trained_keras, "--int8", "--data", dark, "--out-dir", out, "--bench", "0"])
    err = capsys.readouterr().err
    assert code == 5
    assert "gate failed" in err and "drop" in err and "agreement" in err
    assert "error:" in err and "Traceback" not in err
    names = files_in(out)
    assert "tiny_cnn_int8.tflite" not in names  # never under the name the runtime loads
    assert "tiny_cnn_int8.tflite.rejected" in names
    report = json.loads((out / "tiny_cnn_int8_gate.json").read_text())
    assert report["passed"] is False
    assert report["metrics"]["drop_pp"] > 1.0 and report["metrics"]["agreement_pct"] < 97.0
    assert f"{report['metrics']['drop_pp']:.2f}" in err
    card = contract.ModelCard.load(out / "tiny_cnn.json")
    assert "int8" not in card.files
    assert card.metrics["gate"]["int8"]["PublicTest"]["passed"] is False
    assert "int8" not in card.metrics or "PublicTest" not in card.metrics.get("int8", {})


@pytest.mark.slow
def test_thresholds_are_the_users(tmp_path, trained_keras, tiny_data):
    """--min-agreement 100.01 cannot be met: the same good model fails, exit 5."""
    out = tmp_path / "out"
    code = run_convert([trained_keras, "--int8", "--data", tiny_data, "--out-dir", out, "--bench", "0",
                        "--min-agreement", "100.01", "--gate-rows", "20"])
    assert code == 5
    assert (out / "tiny_cnn_int8.tflite.rejected").is_file() and not (out / "tiny_cnn_int8.tflite").exists()

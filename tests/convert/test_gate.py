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


# --------------------------------------------------------------------------- useless models (the sanity checks)
def test_constant_model_fails_the_sanity_checks_even_with_no_conversion_loss():
    """A model that says 'neutral' for every face loses nothing in conversion (drop 0, agreement 100 %),
    so the drop/agreement tests pass it; the majority baseline and the one-label share do not."""
    y = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, 2])  # majority 'c': baseline 50 %
    const = np.tile(np.eye(3, dtype=np.float32)[2], (len(y), 1))
    m = gate.compare(y, const, const, ["a", "b", "c"])
    assert m["drop_pp"] == 0.0 and m["agreement_pct"] == 100.0
    assert m["majority_label"] == "c" and m["majority_baseline_pct"] == 50.0
    assert m["dominant_prediction"]["float"] == {"label": "c", "pct": 100.0}
    reasons = gate.verdict(m, 1.0, 97.0)
    assert len(reasons) == 4 and all(r.startswith("useless model") for r in reasons)
    assert "baseline 50.00%" in reasons[0] and "'c' for 100.0% of the faces" in reasons[2]
    assert gate.verdict(m, 1.0, 97.0, allow_weak=True) == []  # reported, not failing
    assert gate.weak_reasons(m) == reasons


def test_sanity_checks_pass_a_model_above_the_baseline_and_catch_one_below():
    y = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, 2])
    good = np.eye(3, dtype=np.float32)[[0, 0, 1, 1, 2, 2, 2, 2, 2, 1]]  # 80 % right, 'c' given to 50 %
    assert gate.weak_reasons(gate.compare(y, good, good, "abc")) == []
    # 50 % right but spread over every label: not above the 50 % majority baseline -> useless
    poor = np.eye(3, dtype=np.float32)[[0, 1, 1, 0, 0, 2, 2, 2, 0, 1]]
    reasons = gate.weak_reasons(gate.compare(y, poor, poor, "abc"))
    assert reasons and all("not above the majority-class baseline" in r for r in reasons)
    # only the converted side collapses to one label (the float model is fine)
    collapsed = np.tile(np.eye(3, dtype=np.float32)[0], (len(y), 1))
    reasons = gate.weak_reasons(gate.compare(y, good, collapsed, "abc"))
    assert any(r.startswith("useless model: converted predicts 'a'") for r in reasons)
    assert not any("float" in r for r in reasons)


def _constant_model(path, label: int = 6):
    """A model whose output ignores the face: softmax of a fixed bias (always `label`)."""
    import keras

    inp = keras.Input((48, 48, 1))
    h = keras.layers.Rescaling(1 / 255.0)(inp)
    h = keras.layers.GlobalAveragePooling2D()(h)
    dense = keras.layers.Dense(7, activation="softmax", name="head")
    out = dense(h)
    model = keras.Model(inp, out, name="constant")
    bias = np.zeros(7, np.float32)
    bias[label] = 4.0
    dense.set_weights([np.zeros((1, 7), np.float32), bias])
    model.save(path)
    return path


@pytest.mark.slow
def test_constant_output_model_fails_the_gate_with_exit_5(tmp_path, tiny_data, capsys):
    model = _constant_model(tmp_path / "constant.keras")
    out = tmp_path / "out"
    code = run_convert([model, "--int8", "--data", tiny_data, "--out-dir", out, "--bench", "0", "--gate-rows", "70"])
    err = capsys.readouterr().err
    assert code == 5, err
    assert "useless model" in err and "majority-class baseline" in err and "--allow-weak" in err
    assert "Traceback" not in err
    names = files_in(out)
    assert "constant_int8.tflite" not in names and "constant_int8.tflite.rejected" in names
    report = json.loads((out / "constant_int8_gate.json").read_text())
    assert report["passed"] is False and report["metrics"]["drop_pp"] == 0.0
    assert report["metrics"]["dominant_prediction"]["converted"] == {"label": "neutral", "pct": 100.0}
    assert "majority-class baseline" in (out / "constant_int8_gate.md").read_text()

    # --allow-weak: the same model passes, and the report still says why it is weak
    out2 = tmp_path / "out2"
    code = run_convert([model, "--int8", "--data", tiny_data, "--out-dir", out2, "--bench", "0", "--gate-rows", "70",
                        "--allow-weak"])
    assert code == 0
    assert (out2 / "constant_int8.tflite").is_file()
    report = json.loads((out2 / "constant_int8_gate.json").read_text())
    assert report["passed"] is True and report["thresholds"]["allow_weak"] is True
    assert report["weak"] and all(r.startswith("useless model") for r in report["weak"])
    assert "with --allow-weak" in capsys.readouterr().out


@pytest.mark.slow
def test_a_model_that_learned_passes_the_sanity_checks(tmp_path, trained_keras, tiny_data):
    out = tmp_path / "out"
    assert run_convert([trained_keras, "--int8", "--data", tiny_data, "--out-dir", out, "--bench", "0",
                        "--gate-rows", "70"]) == 0
    report = json.loads((out / "tiny_cnn_int8_gate.json").read_text())
    assert report["passed"] and report["weak"] == []
    assert report["metrics"]["top1_float"] > report["metrics"]["majority_baseline_pct"] + 50


def test_ferplus_majority_protocol_is_reported_beside_the_verdict(tmp_path):
    """FER+ data: the gate split carries Microsoft's majority-protocol rows; the report, its one line, its
    markdown and the card give top-1 float/converted on them; the verdict stays on every gate face."""
    from fer_convert import card as card_mod
    from fer_convert.export import VariantResult
    from fer_train.data import FERPLUS_MAJORITY_PROTOCOL, Dataset

    y = np.array([0, 0, 1, 1, 2, 2, 2, 2, 0, 1])
    majority = np.array([1, 1, 1, 0, 1, 0, 1, 1, 0, 0], bool)  # 6 faces in the protocol
    ds = Dataset(x=np.zeros((10, 48, 48), np.uint8), y=y, usage=np.full(10, 1), labels=("a", "b", "c"),
                 ferplus_majority=majority)
    g = gate.gate_split(ds, "public")
    np.testing.assert_array_equal(g.ferplus_majority, majority)
    assert gate.gate_split(Dataset(x=ds.x, y=y, usage=ds.usage), "public").ferplus_majority is None
    sub = gate.gate_split(ds, "public", rows=4, seed=1)
    np.testing.assert_array_equal(sub.ferplus_majority, majority[sub.rows])

    pf = np.eye(3)[[0, 0, 1, 1, 2, 2, 2, 1, 0, 1]].astype(np.float32)  # wrong on row 7 (in the protocol)
    pc = np.eye(3)[[0, 1, 1, 1, 2, 2, 2, 1, 0, 0]].astype(np.float32)  # also wrong on rows 1 (in) and 9 (out)
    report = gate.build_report(variant="int8", model_file="m_int8.tflite", gate_set=g, labels="abc",
                               float_probs=pf, conv_probs=pc, max_drop_pp=50.0, min_agreement_pct=50.0, data={})
    m = report["metrics"]
    assert m["top1_float"] == 90.0 and m["top1_converted"] == 70.0  # the verdict's figures: all 10 faces
    fm = m["ferplus_majority"]
    assert fm["protocol"] == FERPLUS_MAJORITY_PROTOCOL and fm["n"] == 6
    assert fm["top1_float"] == pytest.approx(500 / 6, abs=1e-3) and fm["top1_converted"] == pytest.approx(400 / 6, abs=1e-3)
    assert fm["drop_pp"] == pytest.approx(100 / 6, abs=2e-3)
    assert report["passed"]  # reported, not judged: 16.7 pp on the protocol's faces does not fail a 50 pp gate
    assert "FER+ majority protocol (6 faces): float 83.33% vs int8 66.67%" in gate.one_line(report)
    assert "| top-1 int8, FER+ majority protocol (6 faces) | 66.67 % | |" in gate.markdown(report)
    assert "ferplus_majority" not in gate.compare(y, pf, pc, "abc")  # FER2013 data: nothing added

    keras_file = tmp_path / "model.keras"
    keras_file.write_bytes(b"k")
    res = VariantResult("int8", tmp_path / "m_int8.tflite", 10, "0" * 64, "accepted", {}, gate=report)
    card = card_mod.update_card(tmp_path / "m.json", existing=None, base="m", labels="abc", input_size=(48, 48),
                                architecture="x", params=1, results={"int8": res}, keras_path=keras_file,
                                training={}, data={}, edgetpu=None, gate_enabled=True)
    assert card.metrics["int8"]["PublicTest"]["top1"] == 70.0
    assert card.metrics["int8"]["PublicTest"]["top1_ferplus_majority"] == fm["top1_converted"]
    assert card.metrics["float"]["PublicTest"]["top1_ferplus_majority"] == fm["top1_float"]
    assert card.metrics["int8"]["PublicTest"]["n_ferplus_majority"] == 6

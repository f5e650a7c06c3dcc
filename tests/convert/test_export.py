"""fer-convert end to end: int8 round trip with the gate, several formats at once, reports, card."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fer_edge import contract
from fer_edge.classifier import EmotionClassifier
from tests.convert.conftest import files_in, run_convert

pytestmark = pytest.mark.slow

ALL = ("int8", "float16", "dynamic", "float32")


@pytest.fixture(scope="module")
def converted(tmp_path_factory, trained_keras, tiny_data, request):
    """One call: all four formats from a fer-train run folder, gate on PublicTest, Edge TPU check."""
    import shutil

    run = tmp_path_factory.mktemp("runs") / "tiny_run"
    run.mkdir()
    shutil.copy(trained_keras, run / "model.keras")
    (run / "config.json").write_text(json.dumps({"model": "tiny_cnn", "epochs": 12, "seed": 0}))
    (run / "data.json").write_text(json.dumps({"path": str(tiny_data), "sha256": "ab" * 32, "format": "npz"}))
    code = run_convert([run, "--int8", "--float16", "--dynamic", "--float32", "--bench", "30", "--edgetpu"])
    return run, code


def test_round_trip_int8_passes_the_gate(converted, tiny_data):
    run, code = converted
    assert code == 0
    base = run.name  # default base name: the run folder's
    int8 = run / f"{base}_int8.tflite"
    assert int8.is_file()
    # the int8 file honours the contract through the edge classifier: int8 in, int8 out, batch 1
    clf = EmotionClassifier(int8)
    assert clf.input_dtype == np.int8 and clf.output_dtype == np.int8
    assert tuple(clf.interpreter.get_input_details()[0]["shape"]) == (1, 48, 48, 1)
    # high agreement with the float model on its own data, checked here independently of the gate
    import keras

    model = keras.models.load_model(run / "model.keras")
    with np.load(tiny_data) as d:
        x = d["pixels"]
    float_pred = model.predict(x[..., None].astype("float32"), verbose=0).argmax(1)
    int8_pred = clf.predict_pixels(x).argmax(1)
    assert np.mean(float_pred == int8_pred) >= 0.95

    report = json.loads((run / f"{base}_int8_gate.json").read_text())
    assert report["passed"] is True and report["reasons"] == []
    assert report["split"] == "PublicTest" and report["rows"] == report["split_rows"] > 0
    m = report["metrics"]
    assert m["agreement_pct"] >= 97.0 and m["drop_pp"] <= 1.0
    assert m["top1_float"] >= 90.0
    assert set(m["per_class"]) == set(contract.EMOTIONS)
    assert all(c["recall_drop_pp"] is not None for c in m["per_class"].values() if c["n"])
    assert 0 <= m["mean_abs_dprob"] < 0.05
    assert "predict_pixels" in report["converted_path"]
    md = (run / f"{base}_int8_gate.md").read_text()
    assert "PASSED" in md and "agreement" in md


def test_all_formats_in_one_call(converted):
    run, code = converted
    base = run.name
    for variant in ALL:
        path = run / f"{base}_{variant}.tflite"
        assert path.is_file(), variant
        clf = EmotionClassifier(path)  # loads and honours the contract
        assert clf.input_size == (48, 48)
        if variant != "int8":
            assert clf.input_dtype == np.float32
        assert json.loads((run / f"{base}_{variant}_gate.json").read_text())["passed"]
    assert not any(name.endswith(".rejected") for name in files_in(run))
    assert not any(name.startswith(".fer-convert") for name in files_in(run))  # work folder cleaned up


def test_card_and_convert_report(converted):
    run, code = converted
    base = run.name
    card = contract.ModelCard.load(run / f"{base}.json")
    assert card.name == base and card.labels == list(contract.EMOTIONS) and card.input_size == [48, 48]
    assert card.architecture == "tiny_cnn"
    assert card.params and card.params > 1000
    assert card.macs and card.macs > 100_000
    assert card.files["keras"] == "model.keras"
    for variant in ALL:
        name = card.files[variant]
        assert card.sizes[name] == (run / name).stat().st_size
        assert card.metrics[variant]["PublicTest"]["agreement_pct"] >= 97.0
        assert card.metrics["gate"][variant]["PublicTest"]["passed"] is True
        assert card.metrics["latency_ms"][variant]["median_ms"] > 0
    assert card.metrics["float"]["PublicTest"]["top1"] >= 90.0
    assert card.training["model"] == "tiny_cnn"  # from the run's config.json
    assert card.data["sha256"] == "ab" * 32  # from the run's data.json
    # the runtime finds the card through the variant's name
    assert contract.load_card_for(run / f"{base}_int8.tflite").name == base

    rep = json.loads((run / f"{base}_convert.json").read_text())
    assert rep["calibration"]["split"] == "Training" and rep["calibration"]["size"] == 252
    assert sum(rep["calibration"]["classes"].values()) == 252
    assert rep["variants"]["int8"]["status"] == "accepted"
    assert rep["variants"]["int8"]["validation"]["input"]["dtype"] == "int8"
    assert rep["variants"]["int8"]["latency"]["invokes"] == 30
    assert rep["edgetpu"]["ok"] is True


def test_card_update_keeps_other_splits(converted, tiny_data):
    """A second run gating on PrivateTest adds to the card; PublicTest figures stay."""
    run, _ = converted
    base = run.name
    code = run_convert([run, "--int8", "--split", "private", "--gate-rows", "40", "--bench", "0"])
    assert code == 0
    card = contract.ModelCard.load(run / f"{base}.json")
    assert {"PublicTest", "PrivateTest"} <= set(card.metrics["int8"])
    assert card.metrics["int8"]["PrivateTest"]["n"] == 40
    assert card.files["float16"] == f"{base}_float16.tflite"  # earlier variants still listed
    # each split keeps its own report, the card points at each
    assert card.metrics["gate"]["int8"]["PrivateTest"]["report"] == f"{base}_int8_gate_PrivateTest.json"
    assert json.loads((run / f"{base}_int8_gate_PrivateTest.json").read_text())["split"] == "PrivateTest"
    assert json.loads((run / f"{base}_int8_gate.json").read_text())["split"] == "PublicTest"


def test_no_gate_float32_needs_no_data(tmp_path, trained_keras, capsys):
    out = tmp_path / "out"
    code = run_convert([trained_keras, "--float32", "--no-gate", "--bench", "0", "--out-dir", out,
                        "--name", "plain", "--data", tmp_path / "nowhere.npz"])
    # --data is only read when needed: float32 without the gate needs none... but a given path must exist
    assert code == 3
    assert files_in(out) == []
    code = run_convert([trained_keras, "--float32", "--no-gate", "--bench", "0", "--out-dir", out, "--name", "plain"])
    assert code == 0
    assert "SKIPPED" in capsys.readouterr().out
    assert (out / "plain_float32.tflite").is_file()
    card = contract.ModelCard.load(out / "plain.json")
    assert card.metrics["gate"]["float32"] == {"skipped": True}


def test_other_input_size_is_fed_through_the_contract(tmp_path, tiny_data):
    """A 40x40 model on 48x48 data: calibration and gate faces are resized with contract.preprocess."""
    from tests.convert.conftest import build_small_cnn

    path = tmp_path / "small40.keras"
    build_small_cnn(input_shape=(40, 40, 1), name="small40").save(path)
    code = run_convert([path, "--int8", "--data", tiny_data, "--gate-rows", "20", "--bench", "0",
                        "--max-drop", "100", "--min-agreement", "0", "--allow-weak"])
    assert code == 0
    clf = EmotionClassifier(tmp_path / "small40_int8.tflite")
    assert clf.input_size == (40, 40)
    assert contract.ModelCard.load(tmp_path / "small40.json").input_size == [40, 40]
    assert json.loads((tmp_path / "small40_int8_gate.json").read_text())["rows"] == 20

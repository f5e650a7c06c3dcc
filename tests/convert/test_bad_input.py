"""Bad input: a named error (exit 3, one line, no traceback) and no output file left behind."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from fer_convert import calibrate, export
from fer_edge.errors import ContractError, DataError, ModelError
from tests.conftest import split_usage, write_npz
from tests.convert.conftest import build_small_cnn, files_in, run_convert


def _fails(argv, out: Path, capsys, needle: str) -> str:
    code = run_convert([*argv, "--out-dir", out, "--bench", "0"])
    err = capsys.readouterr().err
    assert code == 3, err
    assert err.startswith("error: ") and needle in err, err
    assert "Traceback" not in err
    assert files_in(out) == [], "a failed conversion left files behind"
    return err


def test_missing_model(tmp_path, capsys):
    _fails([tmp_path / "nope.keras", "--int8"], tmp_path / "out", capsys, "model not found")


def test_corrupt_model(tmp_path, capsys, tiny_data):
    bad = tmp_path / "broken.keras"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    _fails([bad, "--int8", "--data", tiny_data], tmp_path / "out", capsys, "not a Keras model")


def test_not_a_keras_file(tmp_path, capsys, tiny_data):
    other = tmp_path / "weights.bin"
    other.write_bytes(b"\0" * 64)
    _fails([other, "--int8", "--data", tiny_data], tmp_path / "out", capsys, "not a Keras model file")


def test_folder_without_model(tmp_path, capsys):
    (tmp_path / "empty_run").mkdir()
    _fails([tmp_path / "empty_run", "--int8"], tmp_path / "out", capsys, "no model.keras")


def test_five_outputs_for_seven_labels(tmp_path, capsys, tiny_data):
    path = tmp_path / "five.keras"
    build_small_cnn(n_out=5, name="five").save(path)
    _fails([path, "--int8", "--data", tiny_data], tmp_path / "out", capsys, "gives 5 scores but there are 7 labels")


def test_colour_input_model(tmp_path, capsys, tiny_data):
    path = tmp_path / "colour.keras"
    build_small_cnn(input_shape=(48, 48, 3), name="colour").save(path)
    _fails([path, "--float32", "--data", tiny_data], tmp_path / "out", capsys, "colour input")


def test_logits_output_breaks_the_contract(tmp_path, capsys, tiny_data):
    """No softmax: the runtime would read logits as probabilities; refused before converting."""
    import keras

    model = build_small_cnn(name="logits")
    model.layers[-1].activation = keras.activations.linear
    path = tmp_path / "logits.keras"
    model.save(path)
    _fails([path, "--float32", "--data", tiny_data], tmp_path / "out", capsys, "not a probability distribution")


def test_constant_calibration_data(tmp_path, capsys, trained_keras):
    n = 70
    const = write_npz(tmp_path / "grey.npz", np.full((n, 48, 48), 128, np.uint8), np.arange(n) % 7, split_usage(n))
    _fails([trained_keras, "--int8", "--data", const], tmp_path / "out", capsys, "constant")


def test_calibration_data_missing(tmp_path, capsys, trained_keras):
    _fails([trained_keras, "--int8", "--data", tmp_path / "absent.npz"], tmp_path / "out", capsys, "data not found")


def test_no_default_data_is_a_named_error(tmp_path, monkeypatch):
    monkeypatch.setattr(calibrate, "default_data_candidates", lambda run_dir=None: [tmp_path / "x.npz"])
    with pytest.raises(DataError, match="no calibration data: pass --data"):
        calibrate.resolve_data_path(None)


def test_no_training_rows(tmp_path, capsys, trained_keras):
    n = 70
    x = np.random.default_rng(0).integers(0, 255, (n, 48, 48), dtype=np.uint8)
    only_test = write_npz(tmp_path / "test_only.npz", x, np.arange(n) % 7, np.ones(n, np.uint8))
    _fails([trained_keras, "--int8", "--data", only_test], tmp_path / "out", capsys, "no Training faces")


def test_labels_option_must_match_outputs(tmp_path, capsys, trained_keras, tiny_data):
    _fails([trained_keras, "--float32", "--data", tiny_data, "--labels", "a,b,c"], tmp_path / "out", capsys,
           "gives 7 scores but there are 3 labels")


# --------------------------------------------------------------------------- library level
def test_calibration_is_class_balanced_and_seeded(tiny_data):
    from fer_train.data import load_npz

    ds = load_npz(tiny_data)
    x1, i1 = calibrate.calibration_faces(ds, size=70, seed=5)
    x2, i2 = calibrate.calibration_faces(ds, size=70, seed=5)
    _, i3 = calibrate.calibration_faces(ds, size=70, seed=6)
    assert np.array_equal(i1, i2) and not np.array_equal(i1, i3)
    assert (ds.usage[i1] == 0).all()  # Training faces only
    assert list(np.bincount(ds.y[i1], minlength=7)) == [10] * 7
    assert x1.shape == (70, 48, 48) and x1.dtype == np.uint8
    # resized to a model's own input size through the contract
    x64, _ = calibrate.calibration_faces(ds, size=14, seed=0, input_size=(64, 64))
    assert x64.shape == (14, 64, 64)


def test_small_class_gives_all_it_has(tiny_data):
    from fer_train.data import load_npz

    ds = load_npz(tiny_data)
    keep = (ds.usage != 0) | (ds.y != 1) | (np.cumsum((ds.usage == 0) & (ds.y == 1)) <= 3)
    ds = ds.subset(keep)  # class 1 keeps 3 Training faces
    _, idx = calibrate.calibration_faces(ds, size=70, seed=0)
    counts = np.bincount(ds.y[idx], minlength=7)
    assert counts[1] == 3 and counts.sum() == 70


def test_resolve_source_defaults(tmp_path, run_dir, trained_keras):
    src = export.resolve_source(run_dir)
    assert src.model_path == run_dir / "model.keras" and src.out_dir == run_dir and src.base == run_dir.name
    assert src.config["model"] == "tiny_cnn" and src.data_info["format"] == "npz"
    src = export.resolve_source(trained_keras, out_dir=tmp_path / "o", name="fer_x")
    assert src.base == "fer_x" and src.out_dir == tmp_path / "o" and src.run_dir is None
    with pytest.raises(ModelError):
        export.resolve_source(trained_keras, name="../evil")


def test_run_data_json_is_the_default_data(run_dir, monkeypatch, tmp_path):
    monkeypatch.delenv("FER_SHARED_DATA", raising=False)
    info = json.loads((run_dir / "data.json").read_text())
    assert calibrate.resolve_data_path(None, run_dir) == Path(info["path"])


def test_contract_check_names_the_problem():
    import keras

    inp = keras.Input((None, None, 1))
    model = keras.Model(inp, keras.layers.Dense(7, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inp)))
    with pytest.raises(ContractError, match="H and W must be fixed"):
        export.check_model_contract(model)
    assert os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow"


def test_ferplus_votes_resolution(tmp_path, run_dir):
    from fer_edge.contract import EMOTIONS, FERPLUS_EMOTIONS

    data = tmp_path / "fer2013.npz"
    data.write_bytes(b"")
    assert calibrate.resolve_votes(None, None, data, EMOTIONS) is None  # FER2013 labels: no votes
    assert calibrate.resolve_votes(None, None, data, FERPLUS_EMOTIONS) is None  # none beside the data
    (tmp_path / "ferplus_votes.npz").write_bytes(b"")
    assert calibrate.resolve_votes(None, None, data, FERPLUS_EMOTIONS) == tmp_path / "ferplus_votes.npz"
    with pytest.raises(DataError, match="FER\\+ votes not found"):
        calibrate.resolve_votes(tmp_path / "nope.npz", None, data, FERPLUS_EMOTIONS)
    # a FER+ run records both files as components of its data
    info = {"path": "a + b", "format": "npz+ferplus", "components": {"/d/fer2013.npz": "1", "/d/votes.npz": "2"}}
    assert calibrate.run_data_files(info) == ("/d/fer2013.npz", "/d/votes.npz")
    assert calibrate.run_data_files({"path": "x.npz"}) == ("x.npz", None)


def test_eight_outputs_get_ferplus_labels(tmp_path, capsys):
    from fer_edge.contract import FERPLUS_EMOTIONS, ModelCard

    path = tmp_path / "fp.keras"
    build_small_cnn(n_out=8, name="fp").save(path)
    code = run_convert([path, "--float32", "--no-gate", "--bench", "0"])
    assert code == 0, capsys.readouterr().err
    assert ModelCard.load(tmp_path / "fp.json").labels == list(FERPLUS_EMOTIONS)

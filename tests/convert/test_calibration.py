"""Confidence calibration: the temperature fit, ECE, the "uncertain" threshold, folding T into a model
(before conversion, and into a converted file's softmax), and the calibrated shipped models."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from fer_convert import calibrate as C
from fer_edge import contract
from fer_edge.classifier import EmotionClassifier
from fer_edge_models import MODELS_DIR
from tests.convert.conftest import run_convert


def _sample(n=20000, k=7, temperature=0.5, seed=0):
    """Logits z and labels drawn from softmax(z / temperature): the true T is known."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.0, (n, k))
    p = C.softmax(z, temperature)
    y = np.array([rng.choice(k, p=row) for row in p])
    return z, y


def test_fit_temperature_recovers_a_known_temperature():
    for true_t in (0.5, 2.0):
        z, y = _sample(temperature=true_t)
        t = C.fit_temperature(z, y)
        assert t == pytest.approx(true_t, rel=0.06)
        # it is the minimum: either side is worse
        assert C.nll(z, y, t) < C.nll(z, y, t * 1.1) and C.nll(z, y, t) < C.nll(z, y, t / 1.1)


def test_ece_is_small_when_calibrated_and_large_when_squeezed():
    z, y = _sample(temperature=0.5)
    calibrated = C.softmax(z, 0.5)
    squeezed = C.softmax(z, 2.0)  # what distillation at T=2 does to scores
    assert C.ece(calibrated, y) < 0.02
    assert C.ece(squeezed, y) > 0.1
    # by hand: 4 faces, two bins; |0.5 - 0.55| * 2/4 + |1.0 - 0.9| * 2/4 = 0.075
    p = np.array([[0.55, 0.45], [0.55, 0.45], [0.9, 0.1], [0.9, 0.1]])
    assert C.ece(p, np.array([0, 1, 0, 0]), bins=10) == pytest.approx(0.075)


def test_uncertain_threshold_means_more_often_wrong_than_right():
    rng = np.random.default_rng(1)
    scores = rng.uniform(0.15, 1.0, 40000)
    right = rng.random(40000) < scores  # calibrated: right with probability = score
    pick = C.uncertain_threshold(scores, right, 0.5)
    assert 0.5 <= pick["threshold"] <= 0.62  # the window [t - 0.1, t) is right < 50 % of the time
    assert pick["accuracy_just_below"] < 0.5
    lo = (scores >= pick["threshold"] - 0.1) & (scores < pick["threshold"])
    assert right[lo].mean() == pytest.approx(pick["accuracy_just_below"], abs=1e-4)
    assert C.uncertain_threshold(scores, np.ones_like(right), 0.5)["threshold"] == 0.0  # never wrong: never uncertain


def test_softmax_beta_folds_a_temperature_into_a_converted_file(tmp_path):
    from fer_convert.tflite_graph import set_softmax_beta, softmax_beta

    src = MODELS_DIR / "fer_fast_int8.tflite"
    raw = set_softmax_beta(src, 1.0, tmp_path / "raw_int8.tflite")
    sharp = set_softmax_beta(src, 2.5, tmp_path / "sharp_int8.tflite")
    assert softmax_beta(raw) == 1.0 and softmax_beta(sharp) == 2.5
    faces = np.random.default_rng(0).integers(0, 256, (40, 48, 48), dtype=np.uint8)
    logits = C.tflite_logits(raw, faces)
    p_raw = EmotionClassifier(raw, labels=contract.EMOTIONS).predict_pixels(faces)
    p_sharp = EmotionClassifier(sharp, labels=contract.EMOTIONS).predict_pixels(faces)
    # the int8 softmax computes softmax(beta * logits), quantised in steps of 1/256
    assert np.abs(p_raw - C.softmax(logits)).max() < 2.5 / 256
    assert np.abs(p_sharp - C.softmax(logits * 2.5)).max() < 2.5 / 256
    assert np.abs(C.tflite_logits(sharp, faces) - 2.5 * logits).max() < 1e-4  # the logits carry the beta
    assert p_sharp.max(1).mean() > p_raw.max(1).mean() + 0.05


def test_fold_temperature_is_exact_and_keeps_the_argmax(trained_keras, tiny_data):
    from fer_convert.export import fold_temperature, load_keras_model

    model = load_keras_model(trained_keras)
    x = np.load(tiny_data)["pixels"][:64]
    before = model.predict(contract.batch_to_model_input(x), verbose=0)
    fold_temperature(model, 2.0)
    after = model.predict(contract.batch_to_model_input(x), verbose=0)
    np.testing.assert_allclose(after, C.softmax(np.log(before), 2.0), atol=1e-5)
    assert (after.argmax(1) == before.argmax(1)).all()


def test_fer_convert_records_and_folds_the_temperature(tmp_path, trained_keras, tiny_data):
    """--temperature T folds T into the converted file; auto fits it on PublicTest; none drops it."""
    from fer_convert.export import load_keras_model

    out = tmp_path / "out"
    assert run_convert([trained_keras, "--float32", "--data", tiny_data, "--out-dir", out, "--bench", "0",
                        "--temperature", "3.0", "--name", "m"]) == 0
    card = json.loads((out / "m.json").read_text())
    cal = card["metrics"]["calibration"]
    assert cal["temperature"] == 3.0 and cal["variants"] == ["float32"] and cal["fitted_on"] is None
    assert cal["PublicTest"]["after"]["ece"] != cal["PublicTest"]["before"]["ece"]
    with np.load(tiny_data) as d:
        x = d["pixels"][d["usage"] == 2][:40]
    keras_probs = load_keras_model(trained_keras).predict(contract.batch_to_model_input(x), verbose=0)
    tflite_probs = EmotionClassifier(out / "m_float32.tflite").predict_pixels(x)
    np.testing.assert_allclose(tflite_probs, C.softmax(np.log(keras_probs), 3.0), atol=1e-4)

    assert run_convert([trained_keras, "--float32", "--data", tiny_data, "--out-dir", out, "--bench", "0",
                        "--name", "m"]) == 0  # default: auto
    cal = json.loads((out / "m.json").read_text())["metrics"]["calibration"]
    assert cal["fitted_on"] == "PublicTest" and C.T_RANGE[0] <= cal["temperature"] <= C.T_RANGE[1]
    assert cal["PublicTest"]["after"]["nll"] <= cal["PublicTest"]["before"]["nll"]

    assert run_convert([trained_keras, "--float32", "--data", tiny_data, "--out-dir", out, "--bench", "0",
                        "--name", "m", "--temperature", "none"]) == 0
    assert "calibration" not in json.loads((out / "m.json").read_text())["metrics"]
    assert run_convert([trained_keras, "--float32", "--data", tiny_data, "--out-dir", out, "--bench", "0",
                        "--name", "m", "--temperature", "hot"]) == 3


@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["fer_default", "fer_fast"])
def test_calibrating_a_shipped_int8_file_in_place(tmp_path, shared_npz, name):
    """fer-convert FILE.tflite --temperature auto: T from the float32 sibling's logits, beta = 1/T in the
    int8 file, top-1 unchanged, the card re-measured. Every shipped file is calibrated already, one of two
    ways, and the card says which: beta = 1/T set in place (ECE falls by 3x from beta 1), or T folded into
    the last Dense when it was converted (both files carry it: a re-fit finds T ~ 1, nothing left to fix)."""
    from fer_convert.tflite_graph import softmax_beta

    shipped = json.loads((MODELS_DIR / f"{name}.json").read_text())["metrics"]["calibration"]
    for suffix in (".json", "_int8.tflite", "_float32.tflite"):
        shutil.copy(MODELS_DIR / (name + suffix), tmp_path / (name + suffix))
    model = tmp_path / f"{name}_int8.tflite"
    assert run_convert([model, "--temperature", "auto", "--data", shared_npz]) == 0
    cal = json.loads((tmp_path / f"{name}.json").read_text())["metrics"]["calibration"]
    assert softmax_beta(model) == pytest.approx(1.0 / cal["temperature"], rel=1e-3)
    assert f"{name}_float32.tflite" in cal["method"]
    pri = cal["PrivateTest"]
    assert pri["after"]["top1"] == pri["before"]["top1"] and cal["argmax_agreement_pct"]["PrivateTest"] == 100.0
    if shipped["folded"] == contract.TEMPERATURE_IN_DENSE:
        assert set(shipped["variants"]) == {"int8", "float32"}  # both files were converted from the folded model
        assert softmax_beta(MODELS_DIR / f"{name}_int8.tflite") == 1.0
        assert cal["temperature"] == pytest.approx(1.0, abs=0.05)
        assert pri["after"]["ece"] <= pri["before"]["ece"] + 0.005
    else:  # in place: the shipped file is that calibrated model, same T
        assert pri["after"]["ece"] < pri["before"]["ece"] / 3
        assert pri["after"]["top_score_max"] > pri["before"]["top_score_max"]
        assert shipped["temperature"] == pytest.approx(cal["temperature"], abs=1e-3)
        assert softmax_beta(MODELS_DIR / f"{name}_int8.tflite") == pytest.approx(1.0 / shipped["temperature"], rel=1e-3)


def test_a_tflite_model_without_a_flag_is_a_usage_error(tmp_path):
    shutil.copy(MODELS_DIR / "fer_fast_int8.tflite", tmp_path / "x_int8.tflite")
    assert run_convert([tmp_path / "x_int8.tflite"]) == 2


def test_without_any_data_a_float32_conversion_says_it_is_not_calibrated(tmp_path, trained_keras, capsys,
                                                                          monkeypatch):
    from fer_convert import calibrate as cal

    monkeypatch.setattr(cal, "default_data_candidates", lambda run_dir=None: [tmp_path / "none.npz"])
    out = tmp_path / "out"
    assert run_convert([trained_keras, "--float32", "--no-gate", "--bench", "0", "--out-dir", out, "--name", "p"]) == 0
    assert "NOT calibrated" in capsys.readouterr().out
    assert "calibration" not in json.loads((out / "p.json").read_text())["metrics"]


def test_the_logits_of_a_card_less_copy_of_an_8_label_model(tmp_path):
    """benchmarks/calibration.py reads the logits of a temporary copy (softmax beta 1) that has no card
    beside it: the labels are passed, so FER+'s 8 outputs are not checked against FER2013's 7."""
    from fer_convert.tflite_graph import set_softmax_beta
    from fer_edge.errors import ContractError

    raw = set_softmax_beta(MODELS_DIR / "fer_ferplus_int8.tflite", 1.0, tmp_path / "raw_int8.tflite")
    faces = np.random.default_rng(0).integers(0, 256, (8, 48, 48), dtype=np.uint8)
    with pytest.raises(ContractError, match="8 scores but there are 7 labels"):
        C.tflite_logits(raw, faces)
    labels = contract.EMOTIONS + ("contempt",)
    logits = C.tflite_logits(raw, faces, labels=labels)
    probs = EmotionClassifier(raw, labels=labels).predict_pixels(faces)
    assert logits.shape == (8, 8) and np.abs(probs - C.softmax(logits)).max() < 2.5 / 256

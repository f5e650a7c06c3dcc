"""A shipped .tflite as a training source: the Keras rebuild (from_tflite.py) gives the file's probabilities,
its BatchNorms get real statistics, and `fer-train fit --init-from/--teacher` and `fer-train soup` take it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow", reason="converting the fixture model needs the train extra (tensorflow)")

from click.testing import CliRunner  # noqa: E402

from fer_convert.export import export  # noqa: E402
from fer_edge.classifier import EmotionClassifier  # noqa: E402
from fer_edge.contract import file_sha256  # noqa: E402
from fer_edge.errors import ModelError  # noqa: E402
from fer_train.cli import cli  # noqa: E402
from fer_train.from_tflite import keras_from_tflite  # noqa: E402
from fer_train.swa import batchnorm_layers  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")
REPO = Path(__file__).resolve().parents[2]


def invoke(args):
    res = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)
    if res.exception and not isinstance(res.exception, SystemExit):
        raise res.exception
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture(scope="module")
def converted(tiny, tmp_path_factory) -> dict[str, Path]:
    """A 3-epoch edgenet_s run on the tiny data, converted to float32 and int8 with its card."""
    runs = tmp_path_factory.mktemp("runs")
    invoke(["fit", "--data", tiny, "--model", "edgenet_s", "--width", "0.5", "--epochs", "3", "--batch-size", "32",
            "--out", runs, "--name", "small", "-q"])
    out = tmp_path_factory.mktemp("models")
    # temperature=None: the files are the trained model as it is (fer-convert's default folds a fitted
    # temperature into the last layer, which these equivalence checks would see as a different model)
    export(runs / "small", ("float32", "int8"), out_dir=out, name="small", data=tiny, gate=False, bench=0,
           progress=False, temperature=None)
    return {"run": runs / "small", "float32": out / "small_float32.tflite", "int8": out / "small_int8.tflite",
            "card": out / "small.json", "data": tiny}


def faces_of(npz: Path, usage: int) -> np.ndarray:
    with np.load(npz) as d:
        return d["pixels"][d["usage"] == usage]


def test_rebuilt_model_gives_the_files_probabilities(converted):
    faces = faces_of(converted["data"], 1)
    model = keras_from_tflite(converted["float32"])
    ref = EmotionClassifier(converted["float32"]).predict_pixels(faces)
    got = model.predict(faces[..., None].astype("float32"), verbose=0)
    assert np.abs(got - ref).max() < 1e-4
    # and so the trained Keras model's, up to float32 conversion error
    trained = keras.saving.load_model(converted["run"] / "model.keras", compile=False)
    np.testing.assert_allclose(got, trained.predict(faces[..., None].astype("float32"), verbose=0), atol=1e-4)


def test_batchnorm_gets_the_statistics_of_the_faces_and_keeps_the_function(converted):
    train = faces_of(converted["data"], 0)
    plain = keras_from_tflite(converted["float32"])
    model = keras_from_tflite(converted["float32"], faces=train)
    x = faces_of(converted["data"], 1)[..., None].astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), plain.predict(x, verbose=0), atol=1e-4)
    bn = batchnorm_layers(model)[0]
    feats = keras.Model(model.input, bn.input).predict(train[..., None].astype("float32"), verbose=0)
    feats = feats.reshape(-1, feats.shape[-1])
    np.testing.assert_allclose(bn.moving_mean.numpy(), feats.mean(0), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(bn.moving_variance.numpy(), feats.var(0), rtol=1e-3, atol=1e-5)
    # in training mode (batch statistics) the rebuilt model stays near the file's function; without the
    # statistics (BatchNorm = a bias add) batch normalisation would change it far more
    xt = train[:64][..., None].astype("float32")

    def drift(m):
        keras.utils.set_random_seed(0)  # the same dropout masks for both
        return float(np.abs(np.asarray(m(xt, training=True)) - np.asarray(m(xt, training=False))).mean())

    assert drift(model) < 0.5 * drift(plain)


def test_refuses_what_it_cannot_rebuild(converted, tmp_path):
    with pytest.raises(ModelError, match="not a float32 model"):
        keras_from_tflite(converted["int8"])
    lone = tmp_path / "lone_float32.tflite"
    shutil.copy(converted["float32"], lone)
    with pytest.raises(ModelError, match="no model card"):
        keras_from_tflite(lone)
    # a card that names another width: no layer's weights fit, said by name
    shutil.copy(converted["float32"], tmp_path / "wrong_float32.tflite")
    card = json.loads(converted["card"].read_text())
    card["training"]["width"] = 1.0
    (tmp_path / "wrong.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match=r"layer \S+ holds .* weights in the file"):
        keras_from_tflite(tmp_path / "wrong_float32.tflite")


def test_rebuilt_in_float32_inside_a_bfloat16_run(converted):
    """A recipe run computes in bfloat16 (--precision auto on AMX): --init-from a .tflite must still rebuild and
    check the file's weights in float32 (bfloat16 arithmetic misses the 1e-4 check by two orders), then leave
    the run's policy as it was."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = keras_from_tflite(converted["float32"], faces=faces_of(converted["data"], 0))
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert {layer.dtype_policy.name for layer in model.layers if layer.weights} == {"float32"}


def test_init_from_takes_a_folded_temperature_back_out(converted, tmp_path):
    """A shipped file carries T folded into its last Dense (logits / T); the model a run continues from is the
    one its run left, not the sharpened one (the file's own probabilities are still what the check compares)."""
    out = tmp_path / "cal"
    export(converted["run"], ("float32",), out_dir=out, name="cal", data=converted["data"], gate=False, bench=0,
           progress=False, temperature=0.5)
    path = out / "cal_float32.tflite"
    faces = faces_of(converted["data"], 1)[:40]
    from fer_edge import contract

    assert contract.ModelCard.load(out / "cal.json").temperature_in_weights(path.name) == 0.5
    trained = keras.saving.load_model(converted["run"] / "model.keras", compile=False)
    want = trained.predict(faces[..., None].astype("float32"), verbose=0)
    as_file = keras_from_tflite(path).predict(faces[..., None].astype("float32"), verbose=0)
    np.testing.assert_allclose(as_file, EmotionClassifier(path).predict_pixels(faces), atol=1e-4)
    assert np.abs(as_file - want).max() > 1e-3  # sharpened: T 0.5
    back = keras_from_tflite(path, as_trained=True).predict(faces[..., None].astype("float32"), verbose=0)
    np.testing.assert_allclose(back, want, atol=1e-4)


def test_fit_starts_from_and_distils_from_tflite_files(converted, tmp_path):
    out = invoke(["fit", "--data", converted["data"], "--model", "edgenet_s", "--width", "0.5", "--epochs", "1",
                  "--batch-size", "32", "--init-from", converted["float32"], "--teacher", converted["int8"],
                  "--teacher", converted["float32"], "--out", tmp_path, "--name", "ft", "-q"])
    assert "run folder" in out
    cfg = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert cfg["init"]["fresh_layers"] == [] and cfg["init"]["copied_layers"] > 10
    assert cfg["teacher"] == [str(converted["int8"]), str(converted["float32"])]
    assert cfg["source_files_sha256"] == {str(p): file_sha256(p) for p in (converted["float32"], converted["int8"])}
    # a teacher whose labels do not fit the data is refused by name
    with pytest.raises(Exception, match="outputs"):
        from fer_train.fit import teacher_targets

        teacher_targets(str(converted["int8"]), faces_of(converted["data"], 0)[:4], 8, 2.0, False)


def test_soup_takes_a_tflite_ingredient(converted, tmp_path):
    out = invoke(["soup", converted["float32"], converted["run"], "--data", converted["data"],
                  "--out", tmp_path, "--name", "mix"])
    assert out.count("PublicTest acc") == 3
    cfg = json.loads((tmp_path / "mix" / "config.json").read_text())
    assert cfg["model_name"] == "edgenet_s" and cfg["soup"]["sources"][0].endswith("small_float32.tflite")
    assert json.loads((tmp_path / "mix" / "metrics.json").read_text())["PublicTest"]["accuracy"] > 0


def test_evaluate_a_tflite_writes_outside_models(converted, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in converted["float32"].parent.iterdir())
    out = invoke(["evaluate", converted["float32"], "--data", converted["data"], "--split", "public"])
    assert "accuracy" in out
    assert (tmp_path / "runs" / "evaluate-small" / "metrics_PublicTest.json").is_file()
    assert sorted(p.name for p in converted["float32"].parent.iterdir()) == before


@pytest.mark.slow
def test_shipped_default_rebuilds_to_its_card_figure(shared_npz):
    """The shipped default, rebuilt from its float32 file, scores its card's float PublicTest accuracy."""
    path = REPO / "models" / "fer_default_float32.tflite"
    card = json.loads((REPO / "models" / "fer_default.json").read_text())
    with np.load(shared_npz) as d:
        pub = d["usage"] == 1
        x, y = d["pixels"][pub], d["emotion"][pub]
    model = keras_from_tflite(path)
    acc = float((model.predict(x[..., None].astype("float32"), batch_size=256, verbose=0).argmax(1) == y).mean())
    assert 100 * acc == pytest.approx(card["metrics"]["float"]["PublicTest"]["top1"], abs=0.06)


def test_a_calibrated_tflite_teacher_gives_its_trained_probabilities(converted, tmp_path):
    """A shipped file carries a calibration temperature (softmax beta set in place, or T folded into the
    last Dense as its card says); a teacher hands --kd-temperature the trained model's probabilities."""
    import shutil

    from fer_convert.tflite_graph import set_softmax_beta
    from fer_edge import contract
    from fer_train.fit import teacher_targets

    faces = faces_of(converted["data"], 1)[:40]
    trained = keras.saving.load_model(converted["run"] / "model.keras", compile=False)
    want = trained.predict(faces[..., None].astype("float32"), verbose=0)
    raw = teacher_targets(str(converted["float32"]), faces, 7, 1.0, False)
    np.testing.assert_allclose(raw, want, atol=1e-4)
    int8 = teacher_targets(str(converted["int8"]), faces, 7, 1.0, False)
    assert np.abs(int8 - want).max() < 0.1  # its dequantised logits: quantisation error only

    # beta = 20 set in place (fer-convert FILE --temperature; the tiny model is near uniform): taken back out
    sharp = set_softmax_beta(converted["float32"], 20.0, tmp_path / "small_float32.tflite")
    shutil.copy(converted["card"], tmp_path / "small.json")
    assert np.abs(EmotionClassifier(sharp).predict_pixels(faces) - want).max() > 0.01
    np.testing.assert_allclose(teacher_targets(str(sharp), faces, 7, 1.0, False), want, atol=1e-4)

    # T folded into the last Dense (the card says so, for the float32 file only): multiplied back in
    card = contract.ModelCard.load(tmp_path / "small.json")
    card.metrics["calibration"] = {"temperature": 0.1, "folded": contract.TEMPERATURE_IN_DENSE, "variants": ["float32"]}
    card.save(tmp_path / "small.json")
    shutil.copy(converted["float32"], tmp_path / "small_float32.tflite")  # beta 1 again
    assert card.temperature_in_weights("small_float32.tflite") == 0.1
    assert card.temperature_in_weights("small_int8.tflite") == 1.0
    softened = want.astype(np.float64) ** 0.1
    softened /= softened.sum(1, keepdims=True)
    assert np.abs(softened - want).max() > 1e-3
    np.testing.assert_allclose(teacher_targets(str(tmp_path / "small_float32.tflite"), faces, 7, 1.0, False),
                               softened, atol=1e-5)

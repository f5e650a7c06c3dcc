"""The faster training step: fused BatchNorm computes what Keras' layer computes, bfloat16 runs save
float32 models, `--precision auto` picks bfloat16 only on a CPU with AMX-BF16, and a resume keeps a run's
precision unless told otherwise."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from fer_train import fit as F  # noqa: E402
from fer_train import models as M  # noqa: E402
from tests.train.test_fit import fit  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


@pytest.fixture
def fused(monkeypatch):
    def set_(on: bool):
        monkeypatch.setattr(M, "FUSED_BATCHNORM", on)
    return set_


def _one_step(model_name: str, x, y):
    keras.utils.set_random_seed(0)
    model = M.build_model(model_name, (48, 48), 7)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="categorical_crossentropy")
    model.fit(x, y, batch_size=len(x), epochs=2, verbose=0, shuffle=False)
    return model


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the fused kernel is TensorFlow's")
def test_fused_batchnorm_trains_like_keras_batchnorm(fused):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (16, 48, 48, 1)).astype("float32")
    y = np.eye(7, dtype="float32")[rng.integers(0, 7, 16)]
    fused(False)
    plain = _one_step("edgenet_s", x, y)
    fused(True)
    quick = _one_step("edgenet_s", x, y)
    assert sum(isinstance(layer, M.FusedBatchNormalization) for layer in quick.layers) >= 5
    for a, b, var in zip(plain.get_weights(), quick.get_weights(), quick.weights):
        # the same training step: weights and moving statistics agree to float noise (the fused
        # kernel's variance has Bessel's correction, n >= 16 x 6 x 6 here)
        np.testing.assert_allclose(a, b, rtol=0.02, atol=2e-3, err_msg=var.path)
    np.testing.assert_allclose(plain.predict(x, verbose=0), quick.predict(x, verbose=0), atol=2e-3)


def test_fused_batchnorm_predicts_and_saves_as_plain_batchnorm(tmp_path):
    keras.utils.set_random_seed(0)
    model = M.build_model("edgenet_s", (48, 48), 7)
    x = np.random.default_rng(1).integers(0, 256, (4, 48, 48, 1)).astype("float32")
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", compile=False)
    np.testing.assert_array_equal(model.predict(x, verbose=0), again.predict(x, verbose=0))
    assert isinstance(again.get_layer("stem1_bn"), keras.layers.BatchNormalization)


def test_float32_twin_of_a_bfloat16_model():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = M.build_model("edgenet_s", (48, 48), 7)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("stem1_conv").dtype_policy.name == "mixed_bfloat16"
    assert model.get_layer("predictions").dtype_policy.name == "float32"  # probabilities in float32
    twin = M.float32_twin(model)
    assert {layer.dtype_policy.name for layer in twin.layers} == {"float32"}
    for a, b in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(2).integers(0, 256, (4, 48, 48, 1)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), twin.predict(x, verbose=0), atol=0.02)
    plain = M.build_model("edgenet_s", (48, 48), 7)
    assert M.float32_twin(plain) is plain


def test_auto_precision_follows_the_cpu(monkeypatch):
    assert F.resolve_precision("float32") == ("float32", "asked for")
    if keras.backend.backend() != "tensorflow":
        assert F.resolve_precision("auto")[0] == "float32"
        return
    import tensorflow as tf

    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    monkeypatch.setattr(F, "cpu_flags", lambda: {"avx512f", "amx_tile", "amx_bf16"})
    assert F.resolve_precision("auto") == ("mixed_bfloat16", "auto: this CPU has AMX-BF16")
    assert F.resolve_precision("auto", "edgenet")[0] == "mixed_bfloat16"
    assert F.resolve_precision("auto", "mobilenetv2") == ("float32", "auto: a bfloat16 step was measured slower for mobilenetv2")
    assert F.resolve_precision("mixed_bfloat16", "mobilenetv2")[0] == "mixed_bfloat16"  # asked for: done
    monkeypatch.setattr(F, "cpu_flags", lambda: {"avx2", "fma"})
    assert F.resolve_precision("auto") == ("float32", "auto: this CPU has no AMX-BF16")
    with pytest.raises(F.ConfigError, match="precision must be one of"):
        F.FitConfig(precision="float16").validate()


def test_a_bfloat16_run_saves_float32_models_and_resumes_in_its_precision(tiny, tmp_path):
    run, output = fit(["--data", str(tiny), "--model", "edgenet_s", "--epochs", "2", "--batch-size", "32",
                       "--precision", "mixed_bfloat16", "--swa-epochs", "1"], tmp_path, "bf16")
    assert keras.mixed_precision.global_policy().name == "float32"  # the process is left as it was
    config = json.loads((run / "config.json").read_text())
    assert config["precision"] == "mixed_bfloat16"
    for name in ("model.keras", "swa.keras"):
        saved = keras.saving.load_model(run / name, compile=False)
        assert {layer.dtype_policy.name for layer in saved.layers} == {"float32"}, name
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["PublicTest"]["accuracy"] <= 1
    # a run folder from before the setting existed resumes in float32; --precision changes it from then on
    config.pop("precision")
    (run / "config.json").write_text(json.dumps(config))
    assert F.resume_config(run).precision == "float32"
    assert F.resume_config(run, precision="mixed_bfloat16").precision == "mixed_bfloat16"
    # an interrupted run resumed with another precision and thread count records both for that sitting
    (run / "metrics.json").unlink()
    F.run_fit(F.resume_config(run, precision="mixed_bfloat16", threads=1, verbose=0), resume_dir=run)
    resumed = json.loads((run / "config.json").read_text())
    assert resumed["precision"] == "mixed_bfloat16"
    assert {k: resumed["resumed"][-1].get(k) for k in ("precision", "threads")} == {"precision": "mixed_bfloat16", "threads": 1}


def test_a_saved_model_loads_in_a_fresh_process_through_every_loader(tmp_path):
    """The builders' BatchNorm class is registered wherever a .keras file is loaded: fer-train's loader and
    fer-convert's, in a process that has not imported fer_train.models itself."""
    model = M.build_model("edgenet_s", (48, 48), 7)
    model.save(tmp_path / "model.keras")
    code = ("import sys\nfrom pathlib import Path\nfrom fer_train.scoring import load_keras_model\n"
            "from fer_convert.export import load_keras_model as convert_load\n"
            f"a = load_keras_model(Path({str(tmp_path)!r}))\nb = convert_load(Path({str(tmp_path / 'model.keras')!r}))\n"
            "print(type(a.get_layer('stem1_bn')).__name__, type(b.get_layer('stem1_bn')).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.split() == ["FusedBatchNormalization"] * 2, out.stderr[-2000:]

"""Model registry: every model builds at 48x48, honours the contract, fits its budget; MAC counter;
MobileNetV2 never touches the network unless asked; both Keras backends build and train."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from fer_edge.errors import ConfigError, FerError, ModelError  # noqa: E402
from fer_train import models as M  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def built():
    return {name: M.build_model(name) for name in M.MODELS}


@pytest.mark.parametrize("name", list(M.MODELS))
def test_model_builds_and_outputs_probabilities(built, name):
    model = built[name]
    assert model.input_shape == (None, 48, 48, 1)
    assert model.output_shape == (None, 7)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 48, 48, 1)).astype(np.float32)  # raw 0..255, as the contract says
    p = np.asarray(model.predict(x, verbose=0))
    assert p.shape == (3, 7)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert (p >= 0).all()
    # batch of one works the same (no batch-dependent layers at inference)
    p1 = np.asarray(model.predict(x[:1], verbose=0))
    np.testing.assert_allclose(p1[0], p[0], atol=1e-5)


@pytest.mark.parametrize("name", list(M.MODELS))
def test_normalisation_lives_inside_the_model(built, name):
    model = built[name]
    rescale = [layer for layer in model.layers if isinstance(layer, keras.layers.Rescaling)]
    assert rescale, "the model must normalise 0..255 itself"
    assert float(rescale[0].scale) in (pytest.approx(1 / 255), pytest.approx(1 / 127.5))


def test_budgets():
    for name, spec in M.MODEL_SPECS.items():
        model = M.build_model(name)
        params = M.count_params(model)
        assert params > 0
        if spec.max_params:
            assert params <= spec.max_params, f"{name}: {params} > {spec.max_params}"
    assert M.MODEL_SPECS["edgenet"].max_params <= 5_000_000
    assert M.MODEL_SPECS["edgenet_s"].max_params <= 250_000


def test_only_edge_friendly_layers(built):
    allowed = (keras.layers.InputLayer, keras.layers.Rescaling, keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
               keras.layers.BatchNormalization, keras.layers.ReLU, keras.layers.MaxPooling2D,
               keras.layers.AveragePooling2D, keras.layers.GlobalAveragePooling2D, keras.layers.Dense,
               keras.layers.Dropout, keras.layers.Flatten, keras.layers.Add, keras.layers.Concatenate,
               keras.layers.ZeroPadding2D, keras.layers.Resizing)
    for name in ("edgenet", "edgenet_s", "v2", "baseline", "mobilenetv2"):
        for layer in built[name].layers:
            assert isinstance(layer, allowed), f"{name}: {type(layer).__name__} is not edge-friendly"
            act = getattr(layer, "activation", None)
            if act is not None and layer.__class__ is not keras.layers.Dense:
                assert act.__name__ in ("linear", "relu"), f"{name}/{layer.name}: activation {act.__name__}"


def test_mac_counter_matches_hand_count():
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same")(inp)            # 8*8*4 * 3*3*1      = 2304
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)        # 8*8*4 * 3*3        = 2304
    x = keras.layers.SeparableConv2D(6, 3)(x)                     # 6*6 * (9*4 + 4*6)  = 2160
    x = keras.layers.Conv2D(2, 1, strides=2)(x)                   # 3*3*2 * 6          = 108
    x = keras.layers.Flatten()(x)                                 # 18 values
    out = keras.layers.Dense(5)(x)                                # 18*5               = 90
    model = keras.Model(inp, out)
    assert M.count_macs(model) == 2304 + 2304 + 2160 + 108 + 90
    # params: conv 4*9+4, dw 4*9+4, sep 4*9 + 4*6 + 6, conv 6*2+2, dense 18*5+5
    assert M.count_params(model) == 40 + 40 + 66 + 14 + 95


def test_v2_macs_by_hand():
    # three blocks of two 3x3 convs: 48x48 (1->64, 64->64), 24x24 (64->128, 128->128), 12x12 (128->256, 256->256)
    convs = 48 * 48 * 9 * (1 * 64 + 64 * 64) + 24 * 24 * 9 * (64 * 128 + 128 * 128) + 12 * 12 * 9 * (128 * 256 + 256 * 256)
    dense = 6 * 6 * 256 * 256 + 256 * 7
    assert M.count_macs(M.build_model("v2")) == convs + dense


def test_unknown_model_and_option_are_config_errors():
    with pytest.raises(ConfigError, match="unknown model"):
        M.build_model("resnet9000")
    with pytest.raises(ConfigError, match="unexpected keyword"):
        M.build_model("edgenet", bogus=1)


def test_width_scales_edgenet():
    small = M.count_params(M.build_model("edgenet", width=0.5))
    default = M.count_params(M.build_model("edgenet"))
    assert small < default / 2


def test_mobilenetv2_default_makes_no_network_access(monkeypatch):
    import keras.src.utils.file_utils as fu

    def no_network(*a, **k):
        raise AssertionError("network access in the default build")

    monkeypatch.setattr(fu, "get_file", no_network)
    monkeypatch.setattr(keras.utils, "get_file", no_network)
    model = M.build_model("mobilenetv2")
    assert model.output_shape == (None, 7)
    # BN statistics must settle within a short schedule (keras.applications' 0.999 did not: one class)
    momenta = {layer.momentum for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)}
    assert momenta == {0.99}
    saved = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    assert {layer.momentum for layer in saved.layers if isinstance(layer, keras.layers.BatchNormalization)} == {0.99}


def test_mobilenetv2_imagenet_without_network_is_a_clear_error(monkeypatch, tmp_path):
    import keras.src.utils.file_utils as fu

    def offline(*a, **k):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -3] no network")

    monkeypatch.setattr(fu, "get_file", offline)
    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(ModelError, match="ImageNet weights") as exc:
        M.build_model("mobilenetv2", weights="imagenet", alpha=0.35)
    assert isinstance(exc.value, FerError)
    with pytest.raises(ConfigError):
        M.build_model("mobilenetv2", weights="imagenet", alpha=0.3)


def test_models_command_lists_every_model():
    from click.testing import CliRunner

    from fer_train.cli import cli

    res = CliRunner().invoke(cli, ["models"])
    assert res.exit_code == 0, res.output
    for name in M.MODELS:
        assert name in res.output
    assert "MMACs" in res.output


_BACKEND_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    import keras
    from fer_train import models as M
    from fer_train.fit import FitConfig, run_fit
    assert keras.backend.backend() == sys.argv[1], keras.backend.backend()
    x = np.random.default_rng(0).integers(0, 256, (2, 48, 48, 1)).astype("float32")
    for name in sys.argv[4].split(","):
        p = np.asarray(M.build_model(name).predict(x, verbose=0))
        assert p.shape == (2, 7) and np.allclose(p.sum(axis=1), 1, atol=1e-5), name
        keras.backend.clear_session()
    run = run_fit(FitConfig(data=sys.argv[2], model="edgenet_s", epochs=2, swa_epochs=2, batch_size=32,
                            out=sys.argv[3], name="run", verbose=0))  # SWA too: BatchNorm re-estimated eagerly
    print(json.dumps({"backend": keras.backend.backend(),
                      "acc": json.loads((run / "metrics.json").read_text())["PublicTest"]["accuracy"]}))
""")

# Under JAX every weight initialiser compiles once per shape, so building is slow on a 2-core box
# (MobileNetV2 alone: ~35 s); keras.applications' MobileNetV2 is Keras' own backend-agnostic code,
# so the JAX run builds the project's own layouts and trains the fast tier end to end through `fit`.
_BACKEND_MODELS = {"tensorflow": list(M.MODELS), "jax": ["baseline", "v2", "edgenet", "edgenet_s"]}


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_models_build_and_fit_runs_under_backend(backend, tiny_npz, tmp_path):
    pytest.importorskip(backend, reason=f"{backend} not installed")
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", _BACKEND_SCRIPT, backend, str(tiny_npz), str(tmp_path),
                           ",".join(_BACKEND_MODELS[backend])],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["backend"] == backend
    run = tmp_path / "run"
    for f in ("model.keras", "history.csv", "metrics.json", "config.json", "data.json"):
        assert (run / f).is_file(), f
    assert json.loads((run / "config.json").read_text())["backend"] == backend
    assert json.loads((run / "metrics.json").read_text())["swa"]["epochs_averaged"] == 2
    assert (run / "swa.keras").is_file()

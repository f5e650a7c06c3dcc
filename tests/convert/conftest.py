"""Shared by the fer-convert tests: one small model, trained once per session on data it can learn.

The data are `make_tiny_faces` patterns (oriented gratings, one per class), not faces: enough to
train a CNN to ~100 % in seconds and so to see whether conversion keeps what it learned.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_tiny_faces, split_usage, write_npz

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

pytest.importorskip("tensorflow", reason="fer-convert needs the train extra (tensorflow)")


def build_small_cnn(input_shape=(48, 48, 1), n_out: int = 7, name: str = "tiny_cnn"):
    """A conv net the way fer-train builds them: raw 0..255 in, Rescaling inside, softmax out."""
    import keras

    inp = keras.Input(input_shape)
    h = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inp)
    h = keras.layers.Conv2D(16, 5, strides=2, activation="relu")(h)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(16, 3, activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = keras.layers.Dense(n_out, activation="softmax")(h)
    return keras.Model(inp, out, name=name)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A fer2013.npz-shaped file of learnable patterns: 7 classes x 60, all three splits."""
    x, y = make_tiny_faces(n_per_class=60, seed=1)
    return write_npz(tmp_path_factory.mktemp("data") / "tiny.npz", x, y, split_usage(len(y)))


@pytest.fixture(scope="session")
def trained_keras(tmp_path_factory, tiny_data) -> Path:
    """The small CNN trained on tiny_data's Training split (reaches ~100 % on its test splits)."""
    import keras

    keras.utils.set_random_seed(0)
    with np.load(tiny_data) as d:
        x, y, usage = d["pixels"], d["emotion"], d["usage"]
    model = build_small_cnn()
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    train = usage == 0
    model.fit(x[train][..., None].astype("float32"), y[train], epochs=12, batch_size=32, verbose=0)
    acc = model.evaluate(x[~train][..., None].astype("float32"), y[~train], verbose=0)[1]
    assert acc > 0.9, f"the fixture model did not learn its patterns (accuracy {acc:.2f})"
    path = tmp_path_factory.mktemp("model") / "tiny_cnn.keras"
    model.save(path)
    return path


@pytest.fixture
def run_dir(tmp_path, trained_keras, tiny_data) -> Path:
    """A fer-train-style run folder: model.keras, config.json, data.json (pointing at tiny_data)."""
    run = tmp_path / "runs" / "tiny_20250101-000000"
    run.mkdir(parents=True)
    shutil.copy(trained_keras, run / "model.keras")
    (run / "config.json").write_text(json.dumps({"model": "tiny_cnn", "epochs": 12, "batch_size": 32, "seed": 0}))
    (run / "data.json").write_text(json.dumps({"path": str(tiny_data), "sha256": "0" * 64, "format": "npz"}))
    return run


def run_convert(argv) -> int:
    """`fer-convert ARGV` in this process, through the same run_cli as the console script."""
    from fer_convert.cli import cli
    from fer_edge.clitools import run_cli

    with pytest.raises(SystemExit) as exc:
        run_cli(cli, [str(a) for a in argv])
    return int(exc.value.code or 0)


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []

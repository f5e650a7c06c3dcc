"""`fer-train tune`: keras-tuner Bayesian search over the v2 family, on tiny data."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("keras_tuner")

from click.testing import CliRunner  # noqa: E402

from fer_train.cli import cli  # noqa: E402
from fer_train.tune import fit_command_for  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def test_tune_two_trials(tiny_npz, tmp_path):
    res = CliRunner().invoke(cli, ["tune", "--data", str(tiny_npz), "--max-trials", "2", "--epochs", "1",
                                   "--batch-size", "32", "--out", str(tmp_path), "--name", "t", "-q"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "t"
    best = json.loads((out / "best_hyperparameters.json").read_text())
    hp = best["hyperparameters"]
    assert {"filters", "conv_dropout", "dense_units", "dropout", "lr", "label_smoothing"} <= set(hp)
    assert best["objective"] == "val_accuracy (PublicTest)"
    with open(out / "trials.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2
    assert best["public_val_accuracy"] == pytest.approx(max(float(r["public_val_accuracy"]) for r in rows))
    command = (out / "best_command.txt").read_text().strip()
    assert command.startswith("fer-train fit --model v2") and command == best["fit_command"]
    assert "best hyper-parameters" in res.output and "train it: fer-train fit" in res.output


def test_best_command_runs_through_the_fit_cli(tiny_npz, tmp_path):
    """The printed command is a valid `fer-train fit` line (parsed by fit's own options)."""
    import shlex

    from fer_train.fit import fit_command

    cmd = fit_command_for({"filters": 32, "conv_dropout": 0.2, "dense_units": 128, "dropout": 0.4, "lr": 1e-3,
                           "label_smoothing": 0.1}, str(tiny_npz))
    args = shlex.split(cmd)[2:]
    ctx = fit_command.make_context("fit", [*args, "--epochs", "1"])
    assert ctx.params["model_opts"] == {"filters": 32, "conv_dropout": 0.2, "dense_units": 128}
    assert ctx.params["dropout"] == 0.4 and ctx.params["label_smoothing"] == 0.1
    assert np.isclose(ctx.params["lr"], 1e-3)

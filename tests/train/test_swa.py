"""Weight averaging: the running mean, BatchNorm re-estimation, `fer-train fit --swa-epochs` and
`fer-train soup` on tiny data."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from click.testing import CliRunner  # noqa: E402

from fer_edge.errors import ConfigError  # noqa: E402
from fer_train import fit as F  # noqa: E402
from fer_train.cli import cli  # noqa: E402
from fer_train.swa import WeightAverage, batchnorm_layers, recompute_batchnorm, soup  # noqa: E402
from tests.train.conftest import write_votes  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def invoke(args):
    res = CliRunner().invoke(cli, args, catch_exceptions=True)
    if res.exception and not isinstance(res.exception, SystemExit):
        raise res.exception
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture(scope="module")
def swa_run(tiny, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    invoke(["fit", "--data", str(tiny), "--model", "edgenet_s", "--epochs", "3", "--swa-epochs", "2",
            "--batch-size", "32", "--schedule", "none", "--out", str(out), "--name", "swa", "-q"])
    return out / "swa"


def test_weight_average_is_the_mean_in_the_model_dtype():
    avg = WeightAverage()
    a = [np.array([1.0, 2.0], np.float32), np.array([[4]], np.int64)]
    b = [np.array([3.0, 6.0], np.float32), np.array([[8]], np.int64)]
    avg.add(a)
    avg.add(b)
    mean = avg.mean(a)
    np.testing.assert_array_equal(mean[0], [2.0, 4.0])
    assert mean[0].dtype == np.float32 and mean[1].dtype == np.int64 and mean[1][0, 0] == 6
    assert avg.count == 2
    with pytest.raises(ValueError, match="not the same architecture"):
        avg.add([np.zeros(3, np.float32), np.zeros((1, 1))])
    with pytest.raises(ValueError, match="nothing averaged"):
        WeightAverage().mean(a)


def test_recompute_batchnorm_estimates_the_statistics_of_the_data():
    inp = keras.Input((4, 4, 1))
    model = keras.Model(inp, keras.layers.BatchNormalization(momentum=0.9, name="bn")(inp))
    bn = batchnorm_layers(model)[0]
    bn.moving_mean.assign(np.full((1,), 123.0, "float32"))
    bn.moving_variance.assign(np.full((1,), 1e4, "float32"))
    rng = np.random.default_rng(0)
    x = rng.normal(100, 10, size=(256, 4, 4)).clip(0, 255).astype(np.uint8)
    used = recompute_batchnorm(model, x, max_faces=256, batch_size=64)
    assert used == 256
    assert abs(float(bn.moving_mean.numpy()[0]) - x.mean()) < 0.5  # plain mean over 4 batches
    assert abs(float(bn.moving_variance.numpy()[0]) - x.astype(float).var()) < 0.1 * x.astype(float).var()
    assert bn.momentum == 0.9  # restored for later training
    no_bn = keras.Model(inp, keras.layers.Flatten()(inp))
    assert recompute_batchnorm(no_bn, x) == 0


def test_fit_with_swa_saves_the_average_and_keeps_the_better_on_publictest(swa_run):
    metrics = json.loads((swa_run / "metrics.json").read_text())
    swa = metrics["swa"]
    assert swa["epochs_averaged"] == 2 and swa["batchnorm_faces"] > 0
    assert (swa_run / "swa.keras").is_file()
    cfg = json.loads((swa_run / "config.json").read_text())
    assert cfg["swa_epochs"] == 2
    # model.keras is the average exactly when it won on PublicTest, and the metrics say which
    chosen = keras.saving.load_model(swa_run / "model.keras", compile=False).get_weights()
    average = keras.saving.load_model(swa_run / "swa.keras", compile=False).get_weights()
    same = all(np.array_equal(a, b) for a, b in zip(chosen, average))
    assert same == swa["chosen"] == (swa["PublicTest_accuracy"] > swa["best_epoch_PublicTest_accuracy"])
    assert ("weight average" in metrics["selection"]) == swa["chosen"]
    assert (swa_run / "best_epoch.keras").is_file() == swa["chosen"]
    assert metrics["PublicTest"]["accuracy"] == pytest.approx(max(swa["PublicTest_accuracy"],
                                                                  swa["best_epoch_PublicTest_accuracy"]))


def test_swa_epochs_must_fit_in_the_run():
    with pytest.raises(ConfigError, match="swa epochs"):
        F.FitConfig(epochs=3, swa_epochs=4).validate()


def test_swa_lr_follows_the_cosine_with_a_constant_phase():
    cfg = F.FitConfig(epochs=10, swa_epochs=4, swa_lr=3e-4, lr=2e-3, warmup_epochs=1, optimizer="adamw")
    cfg.validate()
    lr = F._optimizer(cfg, steps_per_epoch=5).learning_rate  # the schedule object itself
    schedule = F._optimizer(cfg, steps_per_epoch=5)._learning_rate
    value = [float(keras.ops.convert_to_numpy(schedule(step))) for step in range(50)]
    # the cosine (1 epoch warmup, then decay) spans epochs 0-5 (steps 0-29), the SWA phase the last 4
    plain = F._optimizer(F.FitConfig(epochs=6, lr=2e-3, warmup_epochs=1, optimizer="adamw"), 5)._learning_rate
    np.testing.assert_allclose(value[:30], [float(keras.ops.convert_to_numpy(plain(s))) for s in range(30)],
                               rtol=1e-6)
    assert value[5] == pytest.approx(2e-3, rel=1e-3) and value[29] < 2e-4  # warmed up, decayed to near 0
    np.testing.assert_allclose(value[30:], 3e-4, rtol=1e-6)
    assert float(keras.ops.convert_to_numpy(lr)) == pytest.approx(value[0], rel=1e-6)
    # with --schedule none: the constant lr, then the SWA phase's
    flat = F._optimizer(F.FitConfig(epochs=4, swa_epochs=2, swa_lr=1e-4, schedule="none"), 3)._learning_rate
    assert [round(float(keras.ops.convert_to_numpy(flat(s))), 6) for s in (0, 5, 6, 11)] == [1e-3, 1e-3, 1e-4, 1e-4]


@pytest.mark.parametrize("kw, message", [
    (dict(swa_lr=1e-4), "needs --swa-epochs"),
    (dict(swa_lr=1e-4, swa_epochs=3), "needs --swa-epochs"),
    (dict(swa_lr=1e-4, swa_epochs=1, schedule="plateau"), "not plateau"),
    (dict(swa_lr=-1.0, swa_epochs=1), "swa lr"),
])
def test_swa_lr_needs_a_phase_inside_the_run(kw, message):
    with pytest.raises(ConfigError, match=message):
        F.FitConfig(epochs=3, **kw).validate()


def test_fit_with_an_swa_phase_runs_it_at_its_rate_and_resumes(tiny, tmp_path):
    out = tmp_path / "runs"
    invoke(["fit", "--data", str(tiny), "--model", "edgenet_s", "--epochs", "3", "--swa-epochs", "1",
            "--swa-lr", "0.0001", "--warmup-epochs", "0", "--batch-size", "32", "--out", str(out),
            "--name", "phase", "-q"])
    with open(out / "phase" / "history.csv", newline="") as fh:
        rates = [float(row["learning_rate"]) for row in csv.DictReader(fh)]
    # logged at each epoch's end: the cosine's rate after epoch 1, then the phase's (the schedule is by step)
    assert rates[0] > 2e-4 and rates[1:] == pytest.approx([1e-4, 1e-4])
    cfg = json.loads((out / "phase" / "config.json").read_text())
    assert cfg["swa_lr"] == 1e-4
    assert F.resume_config(out / "phase").swa_lr == 1e-4  # what --resume continues with
    assert json.loads((out / "phase" / "metrics.json").read_text())["swa"]["epochs_averaged"] == 1


def test_soup_averages_runs_into_a_run_folder(swa_run, tiny, tmp_path):
    out = invoke(["soup", str(swa_run / "swa.keras"), str(swa_run / "model.keras"), str(swa_run),
                  "--weight", "2", "--weight", "1", "--weight", "1", "--out", str(tmp_path), "--name", "mix"])
    run = tmp_path / "mix"
    assert "soup: PublicTest acc" in out and out.count("PublicTest acc") == 4
    for name in ("model.keras", "config.json", "data.json", "metrics.json"):
        assert (run / name).is_file(), name
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["soup"]["weights"] == [2.0, 1.0, 1.0] and cfg["model_name"] == "edgenet_s"
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["ingredients"]) == 3 and "PrivateTest" in metrics
    # weights other than BatchNorm statistics are the weighted mean
    a = keras.saving.load_model(swa_run / "swa.keras", compile=False)
    b = keras.saving.load_model(swa_run / "model.keras", compile=False)
    s = keras.saving.load_model(run / "model.keras", compile=False)
    conv = next(layer.name for layer in s.layers if isinstance(layer, keras.layers.Conv2D))
    expected = 0.5 * a.get_layer(conv).get_weights()[0] + 0.5 * b.get_layer(conv).get_weights()[0]
    np.testing.assert_allclose(s.get_layer(conv).get_weights()[0], expected, rtol=1e-5, atol=1e-6)


def test_soup_refuses_bad_ingredients(swa_run, tiny, tmp_path):
    with pytest.raises(ConfigError, match="at least two"):
        soup([str(swa_run)])
    with pytest.raises(ConfigError, match="one non-negative weight per model"):
        soup([str(swa_run), str(swa_run)], weights=[1.0])
    base = tmp_path / "base"
    invoke(["fit", "--data", str(tiny), "--model", "baseline", "--epochs", "1", "--out", str(tmp_path),
            "--name", "base", "-q"])
    with pytest.raises(ConfigError, match="not the same architecture"):
        soup([str(swa_run), str(base)])
    # runs trained on different data are refused by name
    data = json.loads((base / "data.json").read_text())
    data["sha256"] = "0" * 64
    (base / "data.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="different data"):
        invoke(["soup", str(swa_run), str(base), "--out", str(tmp_path), "--name", "bad"])
    assert not (tmp_path / "bad").exists()


def test_soup_of_ferplus_runs_finds_the_votes_again(tiny, tmp_path):
    """A FER+ run's data.json names two files ("a.npz + votes.npz"): the soup reads the run's config
    instead, re-estimates BatchNorm on the FER+ faces and keeps the data record fer-convert reads."""
    votes_path = write_votes(tiny, tmp_path / "votes.npz")
    for seed, name in enumerate(("a", "b")):
        invoke(["fit", "--data", str(tiny), "--ferplus-votes", str(votes_path), "--model", "baseline", "--epochs", "1",
                "--batch-size", "32", "--seed", str(seed), "--out", str(tmp_path), "--name", name,
                "-q"])
    invoke(["soup", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path), "--name", "ab"])
    run = tmp_path / "ab"
    assert json.loads((run / "data.json").read_text()) == json.loads((tmp_path / "a" / "data.json").read_text())
    assert json.loads((run / "config.json").read_text())["num_classes"] == 8
    assert keras.saving.load_model(run / "model.keras", compile=False).output_shape == (None, 8)

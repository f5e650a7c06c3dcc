"""`fer-train fit`: the run folder, reproducibility, every training option on tiny data, the grid,
Ctrl-C, augmentation, and one smoke run on the real data."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from click.testing import CliRunner  # noqa: E402

from fer_edge.contract import FERPLUS_EMOTIONS  # noqa: E402
from fer_edge.errors import ConfigError, DataError  # noqa: E402
from fer_train import fit as F  # noqa: E402
from fer_train.augment import AugmentConfig, TrainBatches, augment_images, mix_batch  # noqa: E402
from fer_train.cli import cli  # noqa: E402
from tests.conftest import make_tiny_faces  # noqa: E402
from tests.train.conftest import write_votes  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

RUN_FILES = ("config.json", "model.keras", "history.csv", "metrics.json", "data.json")


def fit(args, out: Path, name: str):
    res = CliRunner().invoke(cli, ["fit", *args, "--out", str(out), "--name", name, "-q"], catch_exceptions=True)
    if res.exception and not isinstance(res.exception, SystemExit):
        raise res.exception
    assert res.exit_code == 0, res.output
    return out / name, res.output


def history(run: Path) -> list[dict[str, float]]:
    with open(run / "history.csv", newline="") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def baseline_run(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    run, output = fit(["--data", str(tiny), "--model", "baseline", "--epochs", "2", "--batch-size", "32"], out, "base")
    return run, output


def test_fit_writes_a_complete_run_folder(baseline_run, tiny):
    run, output = baseline_run
    assert f"run folder: {run}" in output
    for f in RUN_FILES:
        assert (run / f).is_file(), f
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model_name"] == "baseline" and cfg["epochs"] == 2
    assert cfg["params"] > 0 and cfg["macs"] > 0
    assert cfg["backend"] == keras.backend.backend() and cfg["keras_version"] == keras.__version__
    data = json.loads((run / "data.json").read_text())
    assert data["sha256"] and data["format"] == "npz" and data["path"] == str(tiny)
    assert sum(sum(c.values()) for c in data["counts"].values()) == 105
    hist = history(run)
    assert len(hist) == 2
    assert {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"} <= set(hist[0])
    m = json.loads((run / "metrics.json").read_text())
    best = int(np.argmax([h["val_accuracy"] for h in hist]))
    assert m["best_epoch"] == best + 1
    # the saved checkpoint is the best PublicTest epoch: re-evaluating it gives the logged accuracy
    assert m["PublicTest"]["accuracy"] == pytest.approx(hist[best]["val_accuracy"], abs=1e-6)
    assert m["PublicTest"]["n"] == 21 and m["PrivateTest"]["n"] == 21
    assert m["reported"]["split"] == "PrivateTest"
    assert m["reported"]["accuracy"] == m["PrivateTest"]["accuracy"]


def test_same_seed_same_history(tiny, tmp_path):
    args = ["--data", str(tiny), "--model", "edgenet_s", "--epochs", "1", "--batch-size", "16", "--seed", "3"]
    a, _ = fit(args, tmp_path, "a")
    b, _ = fit(args, tmp_path, "b")
    ha, hb = history(a), history(b)
    # TF on CPU runs these kernels deterministically for a fixed seed and batch order: exact equality
    for ra, rb in zip(ha, hb):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-6, abs=1e-7), key


def test_regularisation_options(tiny, tmp_path):
    run, _ = fit(["--data", str(tiny), "--model", "edgenet_s", "--epochs", "1", "--batch-size", "16",
                  "--mixup", "0.4", "--cutmix", "1.0", "--label-smoothing", "0.1", "--class-weights",
                  "--erasing", "0.5", "--optimizer", "adamw", "--schedule", "plateau", "--dropout", "0.3"],
                 tmp_path, "reg")
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["mixup"] == 0.4 and cfg["class_weights"] and cfg["label_smoothing"] == 0.1
    assert np.isfinite(history(run)[0]["loss"])
    run2, _ = fit(["--data", str(tiny), "--model", "edgenet_s", "--epochs", "1", "--optimizer", "sgd",
                   "--schedule", "none", "--no-augment", "--model-opt", "widths=16,32,48"], tmp_path, "sgd")
    assert json.loads((run2 / "config.json").read_text())["model_opts"] == {"widths": [16, 32, 48]}


def test_ferplus_soft_labels(tiny, tmp_path):
    votes_path = write_votes(tiny, tmp_path / "votes.npz", contempt=3)  # soft targets, 8 classes
    run, _ = fit(["--data", str(tiny), "--ferplus-votes", str(votes_path), "--model", "edgenet_s",
                  "--epochs", "1"], tmp_path, "ferplus")
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["num_classes"] == 8 and cfg["labels"] == list(FERPLUS_EMOTIONS)
    assert keras.saving.load_model(run / "model.keras", compile=False).output_shape == (None, 8)
    assert json.loads((run / "data.json").read_text())["format"] == "npz+ferplus"


def test_init_from_copies_matching_layers_and_names_the_rest(tiny, tmp_path):
    """Warm start: a 7-class run's backbone goes under a fresh 8-class head; nothing matching -> clear error."""
    import keras as K

    from fer_train import models as M

    src, _ = fit(["--data", str(tiny), "--model", "edgenet_s", "--epochs", "1"], tmp_path, "src")
    source = K.saving.load_model(src / "model.keras", compile=False)
    target = M.build_model("edgenet_s", (48, 48), 8)
    report = F.init_from_run(target, str(src))
    head = target.layers[-1].name
    assert report["fresh"] == [head]  # only the 8-way head differs in shape
    assert len(report["copied"]) == sum(1 for layer in target.layers if layer.get_weights()) - 1
    for name in report["copied"]:
        for a, b in zip(target.get_layer(name).get_weights(), source.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ConfigError, match="no layer matches"):
        F.init_from_run(M.build_model("baseline", (48, 48), 7), str(src))
    # through the CLI: recorded in config.json, training continues from the copied weights
    run, out = fit(["--data", str(tiny), "--model", "edgenet_s", "--epochs", "1", "--init-from", str(src)],
                   tmp_path, "warm")
    init = json.loads((run / "config.json").read_text())["init"]
    assert init["source"] == str(src) and init["fresh_layers"] == []


def test_knowledge_distillation(baseline_run, tiny, tmp_path):
    teacher, _ = baseline_run
    run, _ = fit(["--data", str(tiny), "--model", "edgenet_s", "--epochs", "1", "--teacher", str(teacher),
                  "--kd-alpha", "0.7", "--kd-temperature", "3"], tmp_path, "kd")
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["teacher"] == str(teacher) and cfg["kd_alpha"] == 0.7
    assert np.isfinite(history(run)[0]["loss"])


def test_teacher_targets_temperature(baseline_run, tiny):
    teacher, _ = baseline_run
    with np.load(tiny) as d:
        x = d["pixels"][:10]
    t1 = F.teacher_targets(str(teacher), x, 7, temperature=1.0, flip=False)
    model = keras.saving.load_model(teacher / "model.keras", compile=False)
    np.testing.assert_allclose(t1, model.predict(x[..., None].astype("float32"), verbose=0), atol=1e-5)
    hot = F.teacher_targets(str(teacher), x, 7, temperature=100.0, flip=True)
    np.testing.assert_allclose(hot.sum(axis=1), 1, atol=1e-5)
    assert hot.max() < 0.2  # T -> infinity flattens towards uniform (1/7)
    with pytest.raises(ConfigError, match="outputs"):
        F.teacher_targets(str(teacher), x, 8, 1.0, False)


def test_ensemble_of_teachers_averages_their_probabilities(baseline_run, tiny, tmp_path):
    from fer_train import models as M

    teacher, _ = baseline_run
    other = tmp_path / "other.keras"
    M.build_model("edgenet_s", (48, 48), 7).save(other)
    with np.load(tiny) as d:
        x = d["pixels"][:10]
    pa = F.teacher_targets(str(teacher), x, 7, temperature=1.0, flip=False)
    pb = F.teacher_targets(str(other), x, 7, temperature=1.0, flip=False)
    both = F.teacher_targets([str(teacher), str(other)], x, 7, temperature=1.0, flip=False)
    np.testing.assert_allclose(both, 0.5 * (pa + pb), atol=1e-5)
    run, out = fit(["--data", str(tiny), "--model", "edgenet_s", "--epochs", "1", "--teacher", str(teacher),
                    "--teacher", str(other)], tmp_path, "ens")
    assert json.loads((run / "config.json").read_text())["teacher"] == [str(teacher), str(other)]


def test_online_teachers_score_the_views_the_student_sees(tiny):
    """--kd-online: each batch's targets mix the labels with the teachers' view of the *augmented* faces."""
    with np.load(tiny) as d:
        x, y = d["pixels"][:40], d["emotion"][:40]
    seen = []

    def teacher(faces):  # a stand-in whose answer depends on the pixels it is shown
        seen.append(np.array(faces))
        bright = faces.reshape(len(faces), -1).mean(axis=1) / 255.0
        p = np.stack([bright, 1 - bright] + [np.zeros_like(bright)] * 5, axis=1)
        return p.astype(np.float32)

    labels = np.eye(7, dtype=np.float32)[y]
    aug = AugmentConfig(enabled=True, shift=0.1, rotation=15, zoom=0.2, erasing=0.5, brightness=0.3, noise=5.0)
    batches = TrainBatches(x, labels, 16, aug, seed=3, teacher=teacher, kd_alpha=0.6)
    xb, yb, _ = batches[1]
    shown = np.clip(xb[..., 0], 0, 255)
    np.testing.assert_array_equal(seen[-1], shown)  # the augmented faces, not the clean ones
    idx = np.sort(batches.order[16:32])
    assert not np.allclose(shown, x[idx])
    np.testing.assert_allclose(yb, 0.4 * labels[idx] + 0.6 * teacher(shown), atol=1e-6)
    np.testing.assert_allclose(yb.sum(axis=1), 1, atol=1e-5)
    xb2, yb2, _ = batches[1]  # a resumed run draws the same batch and the same targets
    np.testing.assert_array_equal(xb, xb2)
    np.testing.assert_array_equal(yb, yb2)


def test_fit_with_online_distillation(baseline_run, tiny, tmp_path):
    teacher, _ = baseline_run
    with np.load(tiny) as d:
        x = d["pixels"][:10]
    teachers = F.Teachers(str(teacher), 7, temperature=2.0)
    np.testing.assert_allclose(teachers(x, flip=True), F.teacher_targets(str(teacher), x, 7, 2.0, True), atol=1e-6)
    run, out = fit(["--data", str(tiny), "--model", "edgenet_s", "--epochs", "1", "--teacher", str(teacher),
                    "--kd-online", "--kd-alpha", "0.7"], tmp_path, "online")
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["kd_online"] is True and cfg["kd_alpha"] == 0.7
    assert not (run / "teacher_targets.npy").exists()
    assert np.isfinite(history(run)[0]["loss"])
    with pytest.raises(ConfigError, match="--kd-online needs --teacher"):
        F.FitConfig(kd_online=True).validate()


def test_grid_search(tiny, tmp_path):
    res = CliRunner().invoke(cli, ["fit", "--data", str(tiny), "--model", "edgenet_s", "--epochs", "1", "-q",
                                   "--grid", "lr=1e-3,3e-3", "--out", str(tmp_path), "--name", "g"])
    assert res.exit_code == 0, res.output
    gdir = tmp_path / "g"
    with open(gdir / "grid.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [float(r["lr"]) for r in rows] == [1e-3, 3e-3]
    best = json.loads((gdir / "grid_best.json").read_text())
    assert best["chosen_on"] == "PublicTest accuracy"
    assert best["best"]["public_accuracy"] == max(float(r["public_accuracy"]) for r in rows)
    assert "best (PublicTest acc" in res.output
    # PrivateTest is looked at once, for the chosen trial only
    with_private = [r for r in rows if "PrivateTest" in json.loads((Path(r["run"]) / "metrics.json").read_text())]
    assert [r["run"] for r in with_private] == [best["best"]["run"]]


def test_parse_grid():
    assert F.parse_grid("lr=1e-3,3e-4; batch-size=32") == {"lr": [1e-3, 3e-4], "batch_size": [32]}
    with pytest.raises(ConfigError):
        F.parse_grid("nonsense=1")
    with pytest.raises(ConfigError):
        F.parse_grid("lr")


def test_ctrl_c_keeps_best_checkpoint(tiny, tmp_path, monkeypatch):
    original = F._callbacks

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    monkeypatch.setattr(F, "_callbacks", lambda *a, **k: [*original(*a, **k), Interrupt()])
    run = F.run_fit(F.FitConfig(data=str(tiny), model="edgenet_s", epochs=5, swa_epochs=4, out=str(tmp_path),
                                name="int", verbose=0))
    m = json.loads((run / "metrics.json").read_text())
    assert m["interrupted"] is True and m["epochs_run"] == 2
    assert (run / "model.keras").is_file() and "PrivateTest" in m
    assert m["swa"]["epochs_averaged"] == 1  # the weight average keeps the epoch it had (epochs 2-5 asked)


def test_user_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        F.run_fit(F.FitConfig(data=str(tmp_path / "missing.npz"), verbose=0))
    with pytest.raises(ConfigError):
        F.FitConfig(epochs=0).validate()
    res = CliRunner().invoke(cli, ["fit", "--data", str(tmp_path / "missing.npz"), "--epochs", "1"])
    assert isinstance(res.exception, DataError)


def test_default_data_path(monkeypatch, tmp_path):
    monkeypatch.setenv("FER_DATA", str(tmp_path / "x.npz"))
    assert F.resolve_data_path(None) == tmp_path / "x.npz"
    assert F.resolve_data_path("given.npz") == Path("given.npz")


# --------------------------------------------------------------------------- augmentation
def test_flip_only_mirrors():
    x, _ = make_tiny_faces(n_per_class=2)
    out = augment_images(x, np.random.default_rng(0), AugmentConfig(shift=0, rotation=0, zoom=0))
    same = [(o == xi).all() for o, xi in zip(out, x.astype(np.float32))]
    mirrored = [(o == xi[:, ::-1]).all() for o, xi in zip(out, x.astype(np.float32))]
    assert all(s or m for s, m in zip(same, mirrored)) and any(mirrored) and any(same)


def test_augmentation_is_seeded_and_keeps_range():
    x, y = make_tiny_faces(n_per_class=4)
    t = np.eye(7, dtype=np.float32)[y]
    cfg = AugmentConfig(erasing=0.5, mixup=0.2, cutmix=1.0)
    a = TrainBatches(x, t, 8, cfg, seed=1)
    b = TrainBatches(x, t, 8, cfg, seed=1)
    xa, ya, wa = a[0]
    xb, yb, _ = b[0]
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
    assert xa.shape == (8, 48, 48, 1) and xa.dtype == np.float32
    assert xa.min() >= 0 and xa.max() <= 255
    np.testing.assert_allclose(ya.sum(axis=1), 1, atol=1e-5)
    assert (wa == 1).all() and len(a) == 4
    a.on_epoch_end()
    assert not np.array_equal(a[0][0], xa)  # a new epoch, new order and new augmentation


def test_mixup_mixes_targets():
    x = np.zeros((4, 8, 8), np.float32)
    x[2:] = 255
    y = np.eye(2, dtype=np.float32)[[0, 0, 1, 1]]
    xm, ym = mix_batch(x, y, np.random.default_rng(0), AugmentConfig(mixup=1.0))
    np.testing.assert_allclose(ym.sum(axis=1), 1, atol=1e-6)
    # image and target are mixed with the same weight
    np.testing.assert_allclose(xm[:, 0, 0] / 255, ym[:, 1], atol=1e-5)


def test_balanced_class_weights():
    w = F.balanced_class_weights(np.array([0, 0, 0, 1]), 3)
    np.testing.assert_allclose(w, [4 / (2 * 3), 4 / (2 * 1), 1.0])


# --------------------------------------------------------------------------- real data
@pytest.mark.slow
@pytest.mark.shared_data
def test_smoke_fit_v2_on_real_data(shared_npz, tmp_path):
    run, output = fit(["--data", str(shared_npz), "--model", "v2", "--epochs", "1", "--max-train-rows", "1000",
                       "--max-eval-rows", "300"], tmp_path, "v2smoke")
    for f in RUN_FILES:
        assert (run / f).is_file(), f
    m = json.loads((run / "metrics.json").read_text())
    assert m["PublicTest"]["n"] == 300 and m["eval_rows_subsampled"]["PrivateTest"] == 300
    data = json.loads((run / "data.json").read_text())
    assert data["sha256"] == "0f324ead77296c0676a7470cb61f80e5da93168bc362e8e30a01dd4adfd20ef8"
    assert data["train_rows_used"] == 1000

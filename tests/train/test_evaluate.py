"""`fer-train evaluate` and the evaluation API: metrics, consistency, plots, TTA."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from click.testing import CliRunner  # noqa: E402

from fer_edge.errors import ModelError  # noqa: E402
from fer_train import evaluate as E  # noqa: E402
from fer_train.cli import cli  # noqa: E402
from fer_train.data import load_npz  # noqa: E402
from fer_train.fit import FitConfig, run_fit  # noqa: E402
from tests.conftest import make_tiny_faces, write_npz  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("evaldata")
    data = write_npz(base / "tiny.npz", *make_tiny_faces(n_per_class=15, seed=1))
    run = run_fit(FitConfig(data=str(data), model="edgenet_s", epochs=2, batch_size=16, out=str(base / "runs"),
                            name="r", verbose=0))
    return run, data


def test_evaluate_command_writes_plots_and_metrics(tiny_run):
    run, data = tiny_run
    res = CliRunner().invoke(cli, ["evaluate", str(run), "--data", str(data), "--tta"])
    assert res.exit_code == 0, res.output
    for f in ("confusion_matrix.png", "learning_curves.png", "worst_mistakes.png", "metrics_PrivateTest.json"):
        assert (run / f).is_file() and (run / f).stat().st_size > 1000, f
    m = json.loads((run / "metrics_PrivateTest.json").read_text())
    cm = np.array(m["confusion_matrix"])
    assert cm.sum() == m["n"] == 21
    assert m["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    # the same number fit recorded for the reported split
    fit_metrics = json.loads((run / "metrics.json").read_text())
    assert m["accuracy"] == pytest.approx(fit_metrics["PrivateTest"]["accuracy"])
    # per-class recall from the confusion matrix
    for i, lab in enumerate(m["labels"]):
        if cm[i].sum():
            assert m["per_class"][lab]["recall"] == pytest.approx(cm[i, i] / cm[i].sum())
    # TTA is reported separately, never in place of the single-crop figure
    assert m["tta"] is None and m["tta_metrics"]["description"] == E.TTA_DESCRIPTION
    assert np.array(m["tta_metrics"]["confusion_matrix"]).sum() == 21
    assert "TTA" in res.output and "accuracy=" in res.output


def test_evaluate_public_split_and_model_file(tiny_run, tmp_path):
    run, data = tiny_run
    res = CliRunner().invoke(cli, ["evaluate", str(run / "model.keras"), "--data", str(data), "--split", "public",
                                   "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "metrics_PublicTest.json").read_text())
    assert m["split"] == "PublicTest" and m["n"] == 21
    assert m["accuracy"] == pytest.approx(json.loads((run / "metrics.json").read_text())["PublicTest"]["accuracy"])
    assert (tmp_path / "confusion_matrix.png").is_file()


def test_evaluate_model_api_and_predict_probs(tiny_run):
    run, data = tiny_run
    model = E.load_keras_model(run)
    split = load_npz(data).split("public")
    m = E.evaluate_model(model, split)
    assert m["n"] == 21 and 0 <= m["accuracy"] <= 1 and m["tta"] is None
    p = E.predict_probs(model, split.x, batch_size=8)
    assert p.shape == (21, 7) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1, atol=1e-5)
    pt = E.predict_probs(model, split.x[..., None], tta=True)
    assert pt.shape == (21, 7)
    assert E.evaluate_model(model, split, tta=True)["tta"] == E.TTA_DESCRIPTION


def test_classification_metrics_by_hand():
    y = np.array([0, 0, 1, 1, 2])
    probs = np.eye(3)[[0, 1, 1, 1, 0]] * 0.8 + 0.2 / 3
    m = E.classification_metrics(y, probs, ("a", "b", "c"))
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert m["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["c"]["f1"] == 0.0
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    p_true = probs[np.arange(5), y]
    assert m["loss"] == pytest.approx(-np.log(p_true).mean())


def test_tta_views():
    x = np.arange(2 * 48 * 48, dtype=np.uint8).reshape(2, 48, 48)
    views = E.tta_views(x)
    assert len(views) == 10 and all(v.shape == (2, 48, 48) for v in views)
    np.testing.assert_array_equal(views[0], x)        # centre crop is the face itself
    np.testing.assert_array_equal(views[5], x[:, :, ::-1])


def test_missing_model_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="no model"):
        E.resolve_model_path(tmp_path)
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="not a loadable"):
        E.load_keras_model(bad)


def test_learning_curves_from_history(tmp_path):
    h = tmp_path / "history.csv"
    h.write_text("epoch,accuracy,learning_rate,loss,val_accuracy,val_loss\n"
                 "0,0.3,0.001,1.8,0.35,1.7\n1,0.4,0.001,1.6,0.42,1.5\n2,0.5,0.0005,1.4,0.40,1.55\n")
    out = E.plot_learning_curves(h, tmp_path / "lc.png")
    assert Path(out).stat().st_size > 1000


def test_ferplus_evaluate_reports_the_majority_protocol_next_to_the_plurality(tiny, tmp_path):
    """A FER+ model: `fer-train evaluate` reports every face with an emotion plurality (accuracy) and,
    beside it, Microsoft's majority protocol (ferplus_majority), computed on exactly the protocol's rows."""
    from fer_train.data import FERPLUS_MAJORITY_PROTOCOL, ferplus_majority_protocol, load_ferplus
    from tests.train.conftest import write_votes

    votes_path = write_votes(tiny, tmp_path / "votes.npz")
    with np.load(votes_path) as d:
        votes, usage = d["votes"].copy(), d["usage"]
    private = np.flatnonzero(usage == 2)
    top = votes[private].argmax(axis=1)  # each face's own FER2013 label, never contempt
    votes[private[:3], top[:3]] = 5  # 5 of 10, 5 for contempt: the label stays the plurality, no majority
    votes[private[:3], 7] = 5
    for i, t in zip(private[3:5], top[3:5]):  # 4 of 12, single votes elsewhere: a majority once they go
        votes[i] = [1, 1, 1, 1, 1, 1, 1, 1, 1, 0]
        votes[i, t] = 4
    np.savez_compressed(votes_path, votes=votes, usage=usage)
    keep, _ = ferplus_majority_protocol(votes)
    n_majority = int(keep[private].sum())
    assert n_majority == len(private) - 3

    keras.utils.set_random_seed(0)
    inp = keras.Input((48, 48, 1))
    h = keras.layers.Rescaling(1 / 255.0)(inp)
    h = keras.layers.Conv2D(4, 5, strides=4, activation="relu")(h)
    out = keras.layers.Dense(8, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, out)
    model_path = tmp_path / "fp.keras"
    model.save(model_path)

    res = CliRunner().invoke(cli, ["evaluate", str(model_path), "--data", str(tiny), "--ferplus-votes",
                                   str(votes_path), "--out", str(tmp_path / "out"), "--tta"])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "out" / "metrics_PrivateTest.json").read_text())
    fm = m["ferplus_majority"]
    assert fm["protocol"] == FERPLUS_MAJORITY_PROTOCOL and fm["n"] == n_majority < m["n"]
    # the same figure by hand, from the model's predictions on the protocol's rows
    part = load_ferplus(tiny, votes_path).split("private")
    pred = E.predict_probs(model, part.x).argmax(axis=1)
    mask = part.ferplus_majority
    assert fm["accuracy"] == pytest.approx(float(np.mean(pred[mask] == part.y[mask])))
    assert m["accuracy"] == pytest.approx(float(np.mean(pred == part.y)))
    assert fm["tta_metrics"]["n"] == n_majority
    assert "FER+ majority protocol" in res.output and f"n={n_majority}" in res.output
    # FER2013 data has no such protocol: no key
    assert E.ferplus_majority_metrics(load_npz(tiny).split("private"), np.zeros((21, 7))) is None

"""Evaluation: loss, accuracy, macro-F1, per-class P/R/F1, confusion matrix, plots, TTA.

Python API (defined in scoring.py, one layer down, and re-exported here):
  predict_probs(model, x_uint8, batch_size=256, tta=False) -> (N, C) float32 probabilities
  evaluate_model(model, dataset_split, tta=False) -> dict of metrics
  classification_metrics(y_true, probs, labels) -> dict of metrics (pure numpy)

`fer-train evaluate RUN_OR_MODEL` writes metrics_<split>.json, confusion_matrix.png,
learning_curves.png (when the run has a history.csv) and worst_mistakes.png.
Keras and matplotlib are imported inside functions: importing this module is cheap.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from fer_edge.contract import write_json_atomic
from fer_edge.errors import ModelError

from .data import SPLITS, load_training_data, resolve_data_path, split_index
# the scoring API lives one layer down (scoring.py); these names stay importable from here
from .scoring import (  # noqa: F401
    TTA_DESCRIPTION, classification_metrics, confusion_matrix, evaluate_model, ferplus_majority_metrics,
    load_keras_model, predict_probs, read_history, resolve_model_path, tta_views,
)

# --------------------------------------------------------------------------- plots
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(cm: np.ndarray, labels: Sequence[str], path: str | Path, title: str = "") -> Path:
    plt = _plt()
    cm = np.asarray(cm)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, axes = plt.subplots(1, 2, figsize=(14, 6))
    for ax, data, kind in ((axes[0], norm, "normalised by true label"), (axes[1], cm, "counts")):
        im = ax.imshow(data, cmap="Blues", vmin=0)
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted label")
        ax.set_ylabel("true label")
        ax.set_title(f"{title} ({kind})" if title else kind)
        thresh = data.max() / 2 if data.size else 0
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                txt = f"{data[i, j]:.2f}" if data is norm else str(int(data[i, j]))
                ax.text(j, i, txt, ha="center", va="center", fontsize=8,
                        color="white" if data[i, j] > thresh else "black")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_learning_curves(history_csv: str | Path, path: str | Path) -> Path:
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    h = read_history(history_csv)
    epochs = np.arange(1, len(next(iter(h.values()), [])) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    best = int(np.nanargmax(h["val_accuracy"])) + 1 if h.get("val_accuracy") else None
    for ax, key, name in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        if key in h:
            ax.plot(epochs, h[key], label=f"Training {name} (augmented)")
        if f"val_{key}" in h:
            ax.plot(epochs, h[f"val_{key}"], label=f"PublicTest {name}")
        if best is not None:
            ax.axvline(best, color="gray", ls="--", label=f"best epoch {best}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_worst_mistakes(x: np.ndarray, y_true: np.ndarray, probs: np.ndarray, labels: Sequence[str],
                        path: str | Path, n: int = 24) -> Path:
    """Grid of the most confident wrong predictions, titled 'true -> pred (confidence)'."""
    plt = _plt()
    x = np.asarray(x)
    if x.ndim == 4:
        x = x[..., 0]
    pred = probs.argmax(axis=1)
    wrong = np.flatnonzero(pred != y_true)
    wrong = wrong[np.argsort(-probs[wrong, pred[wrong]])][:n]
    cols = 6
    rows = max(1, int(np.ceil(len(wrong) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.1, rows * 2.7), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), wrong):
        ax.imshow(x[i], cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"true {labels[y_true[i]]}\npred {labels[pred[i]]} {probs[i, pred[i]]:.2f}", fontsize=8)
    if not len(wrong):
        axes[0, 0].set_title("no mistakes")
    fig.suptitle("Most confident mistakes")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


# --------------------------------------------------------------------------- the command's work
def run_evaluate(run_or_model: str | Path, data: str | None = None, split: str = "private", tta: bool = False,
                 out: str | Path | None = None, batch_size: int = 256, ferplus_votes: str | None = None) -> dict:
    """What `fer-train evaluate` does; returns the metrics dict that it writes."""
    model_path = resolve_model_path(run_or_model)
    run_dir = model_path.parent if Path(run_or_model).is_dir() else None
    out_dir = Path(out) if out else (run_dir or model_path.parent)
    if model_path.suffix == ".tflite":  # a shipped model: its card says what it was trained on; models/ stays data only
        from fer_edge.contract import base_name

        from .from_tflite import card_config

        recorded = card_config(model_path)
        ferplus_votes = ferplus_votes or _existing(recorded.get("ferplus_votes"))
        data = data or _existing(recorded.get("data"))
        out_dir = Path(out) if out else Path("runs") / f"evaluate-{base_name(model_path)}"
    out_dir.mkdir(parents=True, exist_ok=True)
    split_name = SPLITS[split_index(split)]
    if ferplus_votes is None and run_dir is not None and (run_dir / "config.json").is_file():
        ferplus_votes = json.loads((run_dir / "config.json").read_text()).get("ferplus_votes")
    if data is None and run_dir is not None and (run_dir / "data.json").is_file():
        recorded = json.loads((run_dir / "data.json").read_text()).get("path")
        if recorded and Path(recorded).exists():
            data = recorded
    ds = load_training_data(resolve_data_path(data), ferplus_votes)
    part = ds.split(split_name)
    model = load_keras_model(model_path)
    if int(model.output_shape[-1]) != len(part.labels):
        raise ModelError(f"{model_path}: {model.output_shape[-1]} outputs but the data has {len(part.labels)} labels"
                         + (" (a FER+ model? pass --ferplus-votes)" if model.output_shape[-1] == 8 else ""))
    probs = predict_probs(model, part.x, batch_size=batch_size)
    metrics = classification_metrics(part.y, probs, part.labels)
    metrics.update({"split": split_name, "model": str(model_path), "data": ds.data_info(), "tta": None})
    majority = ferplus_majority_metrics(part, probs)  # FER+: Microsoft's majority protocol next to the above
    if majority is not None:
        metrics["ferplus_majority"] = majority
    if tta:
        tprobs = predict_probs(model, part.x, batch_size=batch_size, tta=True)
        tm = classification_metrics(part.y, tprobs, part.labels)
        metrics["tta_metrics"] = {"description": TTA_DESCRIPTION, **tm}
        if majority is not None:
            metrics["ferplus_majority"]["tta_metrics"] = {"description": TTA_DESCRIPTION,
                                                          **ferplus_majority_metrics(part, tprobs)}
    plot_confusion(np.array(metrics["confusion_matrix"]), part.labels, out_dir / "confusion_matrix.png",
                   title=f"{split_name} acc {metrics['accuracy']:.4f}")
    plot_worst_mistakes(part.x, part.y, probs, part.labels, out_dir / "worst_mistakes.png")
    if run_dir is not None and (run_dir / "history.csv").is_file():
        plot_learning_curves(run_dir / "history.csv", out_dir / "learning_curves.png")
    write_json_atomic(out_dir / f"metrics_{split_name}.json", metrics)
    metrics["out_dir"] = str(out_dir)
    return metrics


def _existing(path: str | None) -> str | None:
    return path if path and Path(path).exists() else None


def format_metrics(m: dict) -> str:
    lines = [f"{m.get('split', '')}: n={m['n']}  loss={m['loss']:.4f}  accuracy={m['accuracy']:.4f}  "
             f"macro-F1={m['macro_f1']:.4f}"]
    width = max(len(k) for k in m["per_class"])
    lines.append(f"  {'class':<{width}}  precision  recall     f1  support")
    for k, v in m["per_class"].items():
        lines.append(f"  {k:<{width}}  {v['precision']:9.3f}  {v['recall']:6.3f}  {v['f1']:5.3f}  {v['support']:7d}")
    if m.get("tta_metrics"):
        t = m["tta_metrics"]
        lines.append(f"TTA ({t['description']}): loss={t['loss']:.4f}  accuracy={t['accuracy']:.4f}  "
                     f"macro-F1={t['macro_f1']:.4f}")
    if m.get("ferplus_majority"):
        f = m["ferplus_majority"]
        lines.append(f"FER+ majority protocol (Microsoft's: single votes dropped, top emotion > 50 % of the rest): "
                     f"n={f['n']}  accuracy={f['accuracy']:.4f}  macro-F1={f['macro_f1']:.4f}"
                     + (f"  TTA accuracy={f['tta_metrics']['accuracy']:.4f}" if f.get("tta_metrics") else ""))
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI
import click  # noqa: E402


@click.command("evaluate")
@click.argument("run_or_model")
@click.option("--data", envvar="FER_DATA", default=None,
              help="Data file/folder (default: the run's data.json path, $FER_DATA, ../shared/data/fer2013.npz).")
@click.option("--ferplus-votes", default=None, help="FER+ votes (default: the run's own setting).")
@click.option("--split", type=click.Choice(["public", "private"]), default="private", show_default=True,
              help="private = PrivateTest (the reported split); public = PublicTest (the selection split).")
@click.option("--tta", is_flag=True, help=f"Also report test-time augmentation: {TTA_DESCRIPTION}.")
@click.option("--out", default=None, help="Output folder (default: the run folder / the model's folder; "
              "runs/evaluate-<name> for a .tflite, so models/ stays data only).")
@click.option("--batch-size", type=int, default=256, show_default=True)
def evaluate_cmd(run_or_model, data, ferplus_votes, split, tta, out, batch_size) -> None:
    """Metrics, confusion matrix, learning curves and worst mistakes of a run, a .keras model or a float32
    .tflite with its model card (e.g. models/fer_default_float32.tflite)."""
    m = run_evaluate(run_or_model, data=data, split=split, tta=tta, out=out, batch_size=batch_size,
                     ferplus_votes=ferplus_votes)
    click.echo(format_metrics(m))
    click.echo(f"wrote metrics_{m['split']}.json and plots to {m['out_dir']}")

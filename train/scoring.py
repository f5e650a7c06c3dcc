"""Scoring a trained model: load it (a run folder, a .keras file, or a float32 .tflite rebuilt as Keras),
predict probabilities (optionally with TTA), and compute the metrics (pure numpy). Used by fit (best
checkpoint, teachers, warm starts), swa/soup, evaluate and fer_convert's gate for the float side.

Below fit and evaluate in train/'s one-way layering (data -> models -> from_tflite -> scoring -> swa ->
fit -> evaluate). Keras is imported inside functions: importing this module is cheap.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fer_edge.contract import batch_to_model_input
from fer_edge.errors import ModelError

TTA_DESCRIPTION = "10 views: 5 crops (4 corners + centre) of the face reflect-padded by 3 px, and their mirror images"


# --------------------------------------------------------------------------- prediction
def tta_views(x: np.ndarray, pad: int = 3) -> list[np.ndarray]:
    """(N, H, W) faces -> 10 (N, H, W) float32 views: 5 crops of the reflect-padded face + mirrors."""
    x = np.asarray(x, np.float32)
    if x.ndim == 4:
        x = x[..., 0]
    h, w = x.shape[1:3]
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
    offsets = [(pad, pad), (0, 0), (0, 2 * pad), (2 * pad, 0), (2 * pad, 2 * pad)]
    crops = [padded[:, oy:oy + h, ox:ox + w] for oy, ox in offsets]
    return crops + [c[:, :, ::-1] for c in crops]


def predict_probs(model, x_uint8: np.ndarray, batch_size: int = 256, tta: bool = False) -> np.ndarray:
    """Probabilities (N, C) float32 for faces (N, H, W) or (N, H, W, 1) of raw 0..255 values.

    tta=True averages the probabilities of the 10 TTA views (see TTA_DESCRIPTION).
    """
    x = np.asarray(x_uint8)
    if x.ndim == 4:
        x = x[..., 0]
    if len(x) == 0:
        return np.zeros((0, int(model.output_shape[-1])), np.float32)
    views = tta_views(x) if tta else [x]
    total = None
    for view in views:
        p = np.asarray(model.predict(batch_to_model_input(view), batch_size=batch_size, verbose=0), np.float32)
        total = p if total is None else total + p
    return total / len(views)


# --------------------------------------------------------------------------- metrics (numpy)
def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return cm


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Loss (mean cross-entropy of the true label), accuracy, macro-F1, per-class P/R/F1, confusion."""
    y_true = np.asarray(y_true, np.int64)
    probs = np.asarray(probs, np.float64)
    n, c = probs.shape
    if len(labels) != c:
        raise ModelError(f"model outputs {c} scores but the data has {len(labels)} labels")
    y_pred = probs.argmax(axis=1) if n else np.zeros(0, np.int64)
    cm = confusion_matrix(y_true, y_pred, c)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros(c), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(c), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(c), where=(precision + recall) > 0)
    present = support > 0
    loss = float(-np.mean(np.log(np.clip(probs[np.arange(n), y_true], 1e-7, 1.0)))) if n else float("nan")
    return {
        "n": int(n),
        "loss": loss,
        "accuracy": float(tp.sum() / n) if n else float("nan"),
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "per_class": {
            lab: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                  "support": int(support[i])}
            for i, lab in enumerate(labels)
        },
        "labels": list(labels),
        "confusion_matrix": cm.tolist(),  # rows = true label, columns = predicted label
    }


def ferplus_majority_metrics(dataset_split, probs: np.ndarray) -> dict[str, Any] | None:
    """FER+ data: the metrics on Microsoft's majority protocol, the rows `dataset_split.ferplus_majority`
    marks (see fer_train.data.ferplus_majority_protocol), with the protocol in words; None for other data.
    `probs` are the predictions for every row of `dataset_split`."""
    mask = getattr(dataset_split, "ferplus_majority", None)
    if mask is None:
        return None
    from .data import FERPLUS_MAJORITY_PROTOCOL

    mask = np.asarray(mask, bool)
    m = classification_metrics(np.asarray(dataset_split.y)[mask], np.asarray(probs)[mask], dataset_split.labels)
    return {"protocol": FERPLUS_MAJORITY_PROTOCOL, **m}


def evaluate_model(model, dataset_split, tta: bool = False, batch_size: int = 256) -> dict[str, Any]:
    """Metrics of a Keras model on one split (a `fer_train.data.Dataset`, already split).

    Uses the split's hard labels `y` (for FER+ data: the plurality vote of every face with an emotion
    plurality); FER+ data adds "ferplus_majority": the same on Microsoft's majority protocol.
    """
    probs = predict_probs(model, dataset_split.x, batch_size=batch_size, tta=tta)
    metrics = classification_metrics(dataset_split.y, probs, dataset_split.labels)
    metrics["tta"] = TTA_DESCRIPTION if tta else None
    majority = ferplus_majority_metrics(dataset_split, probs)
    if majority is not None:
        metrics["ferplus_majority"] = majority
    return metrics


# --------------------------------------------------------------------------- model / run resolution
def resolve_model_path(run_or_model: str | Path) -> Path:
    """A run folder (-> its model.keras), a .keras/.h5 file, or a float32 .tflite with its model card."""
    p = Path(run_or_model)
    if p.is_dir():
        p = p / "model.keras"
    if not p.is_file():
        raise ModelError(f"no model found at {run_or_model} (give a run folder with model.keras, a .keras file "
                         "or a float32 .tflite with its model card)")
    return p


def load_keras_model(run_or_model: str | Path, faces=None, as_trained: bool = False):
    """Load a run's model. A float32 .tflite is rebuilt as Keras (from_tflite.py); `faces` (Training faces)
    then give its BatchNorms real statistics, which training on it needs, and `as_trained` takes a calibration
    temperature folded into its last layer back out (to train on or average weights with)."""
    import keras

    path = resolve_model_path(run_or_model)
    if path.suffix == ".tflite":
        from .from_tflite import keras_from_tflite

        return keras_from_tflite(path, faces=faces, as_trained=as_trained)
    from . import models  # noqa: F401 - registers the builders' own layers (FusedBatchNormalization) for loading

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001 - corrupt/foreign files are user errors
        raise ModelError(f"{path}: not a loadable Keras model ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None


def read_history(path: str | Path) -> dict[str, list[float]]:
    """history.csv (keras CSVLogger) -> column -> values."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    cols: dict[str, list[float]] = {}
    for row in rows:
        for k, v in row.items():
            try:
                cols.setdefault(k, []).append(float(v))
            except (TypeError, ValueError):
                cols.setdefault(k, []).append(float("nan"))
    return cols

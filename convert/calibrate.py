"""Calibration faces for int8 conversion, and the labelled data the gate evaluates on.

Calibration uses real Training faces, a class-balanced, seeded sample (never random noise): the
int8 ranges of every activation come from them, so they must look like what the device will see.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from fer_edge import contract
from fer_edge.errors import DataError

from .tflite_graph import tflite_logits  # noqa: F401  (calibration reads a file's logits)


DEFAULT_CALIB_SIZE = 500
#: below this pixel standard deviation (grey levels) calibration data carries no range information
MIN_PIXEL_STD = 1.0
SHARED_NPZ = Path("shared") / "data" / "fer2013.npz"


def default_data_candidates(run_dir: Path | None = None) -> list[Path]:
    """Where calibration / gate data is looked for when --data is not given, in order.

    1. the data file the run was trained on (`data.json` "path" in the run folder),
    2. ../shared/data/fer2013.npz ($FER_SHARED_DATA/fer2013.npz, then relative to the working
       directory, then relative to this checkout).
    """
    out: list[Path] = []
    if run_dir is not None:
        out += _run_relative(run_data_files(read_json(run_dir / "data.json"))[0], run_dir)
    if os.environ.get("FER_SHARED_DATA"):
        out.append(Path(os.environ["FER_SHARED_DATA"]) / "fer2013.npz")
    out.append(Path("..") / SHARED_NPZ)
    out.append(Path(__file__).resolve().parents[2] / SHARED_NPZ)
    return out


def run_data_files(info: dict) -> tuple[str | None, str | None]:
    """(data file, FER+ votes file) named by a run's data.json (FER+ data lists both as components)."""
    components = info.get("components") or {}
    if str(info.get("format", "")).endswith("ferplus") and len(components) == 2:
        data, votes = list(components)
        return data, votes
    return info.get("path"), info.get("ferplus_votes")


def _run_relative(name: str | None, run_dir: Path) -> list[Path]:
    """A path a run recorded: as is when absolute, else relative to the run folder, then to the cwd."""
    if not name:
        return []
    p = Path(name)
    return [p] if p.is_absolute() else [run_dir / p, p]


def resolve_votes(votes: str | os.PathLike | None, run_dir: Path | None, data_path: Path,
                  labels: Sequence[str]) -> Path | None:
    """FER+ votes for an 8-label (FER+) model: --ferplus-votes, the run's, or ferplus_votes.npz
    beside the data file; None for FER2013-labelled models."""
    if votes is not None:
        path = Path(votes)
        if not path.is_file():
            raise DataError(f"FER+ votes not found: {path}")
        return path
    if list(labels) != list(contract.FERPLUS_EMOTIONS):
        return None
    candidates = _run_relative(run_data_files(read_json(run_dir / "data.json"))[1], run_dir) if run_dir else []
    if data_path.suffix.lower() == ".npz":
        candidates.append(data_path.parent / "ferplus_votes.npz")
    return next((p for p in candidates if p.is_file()), None)


def resolve_data_path(data: str | os.PathLike | None, run_dir: Path | None = None) -> Path:
    """--data if given (must exist), else the first default candidate that exists, else DataError."""
    if data is not None:
        path = Path(data)
        if not path.exists():
            raise DataError(f"data not found: {path}")
        return path
    candidates = default_data_candidates(run_dir)
    for path in candidates:
        if path.exists():
            return path
    raise DataError(
        "no calibration data: pass --data (a fer2013.npz / .csv / image folder); looked for "
        + ", ".join(str(p) for p in candidates)
    )


def read_json(path: Path) -> dict:
    """A small JSON file as a dict; {} when it is absent, DataError when it is unreadable."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object")
    return data


def load_data(path: Path, ferplus_votes: Path | None = None):
    """Load a labelled data set with fer-train's loaders (`load_dataset` picks by format)."""
    from fer_train import data as train_data

    if ferplus_votes is not None:
        return train_data.load_dataset(path, ferplus_votes=ferplus_votes)
    return train_data.load_dataset(path)


def resize_faces(x: np.ndarray, input_size: Sequence[int]) -> np.ndarray:
    """(N, h, w) uint8 faces -> (N, H, W) uint8 at the model's input size, via the contract."""
    h, w = int(input_size[0]), int(input_size[1])
    if x.shape[1:3] == (h, w):
        return x
    return np.stack([contract.preprocess(face, (h, w)) for face in x]).astype(np.uint8)


def calibration_faces(dataset, size: int = DEFAULT_CALIB_SIZE, seed: int = 0,
                      input_size: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A class-balanced, seeded sample of `size` Training faces: ((N, H, W) uint8, row indices).

    Each class gets an equal share (classes with fewer faces give all they have; the rest is
    filled from the other classes). DataError when there are no Training faces, or when they are
    constant (std < 1 grey level: no range to calibrate).
    """
    from fer_train.data import split_index

    if size < 1:
        raise DataError(f"--calib-size must be >= 1, got {size}")
    train = np.flatnonzero(dataset.usage == split_index("Training"))
    where = getattr(dataset, "source", "") or "the data"
    if len(train) == 0:
        raise DataError(f"no Training faces in {where}: calibration needs real faces")
    rng = np.random.default_rng(seed)
    y = dataset.y[train]
    classes = np.unique(y)
    pools = {c: rng.permutation(train[y == c]) for c in classes}
    size = min(size, len(train))
    picked: list[np.ndarray] = []
    remaining = size
    # fill class by class, smallest first, so small classes give all they have and the
    # shortfall is shared among the larger ones
    order = sorted(classes, key=lambda c: len(pools[c]))
    for i, c in enumerate(order):
        share = remaining // (len(order) - i)
        take = pools[c][:share]
        picked.append(take)
        remaining -= len(take)
    idx = np.sort(np.concatenate(picked))
    x = dataset.x[idx]
    if input_size is not None:
        x = resize_faces(x, input_size)
    check_calibration_faces(x, where)
    return x, idx


def check_calibration_faces(x: np.ndarray, where: str = "the data") -> None:
    if x.size == 0:
        raise DataError(f"calibration data from {where} is empty")
    std = float(np.asarray(x, np.float32).std())
    if not np.isfinite(std) or std < MIN_PIXEL_STD:
        raise DataError(
            f"calibration data from {where} is constant (pixel std {std:.3f} grey levels): "
            "int8 ranges cannot be calibrated on it; use real Training faces"
        )


def representative_dataset(faces: np.ndarray) -> Iterator[list[np.ndarray]]:
    """The converter's representative dataset: one (1, H, W, 1) float32 face of raw 0..255 pixels
    per step — exactly what the model contract feeds the float model."""
    batch = contract.batch_to_model_input(faces)
    for i in range(len(batch)):
        yield [batch[i: i + 1]]


def class_balance(dataset, idx: np.ndarray | None = None) -> dict[str, int]:
    y = dataset.y if idx is None else dataset.y[idx]
    labels = list(getattr(dataset, "labels", contract.EMOTIONS))
    return {labels[int(c)] if int(c) < len(labels) else str(int(c)): int(n) for c, n in zip(*np.unique(y, return_counts=True))}


# --------------------------------------------------------------------------- confidence calibration
# A classifier's probabilities are *calibrated* when, among the faces it scores p, a fraction p is
# right. Distillation at temperature 2 and label smoothing squeeze the shipped models' scores (no
# score above ~0.65, none below ~0.05): one temperature T, fitted on PublicTest by minimum negative
# log-likelihood, stretches them back: probs = softmax(logits / T). The argmax, hence top-1, does not
# change. fer-convert folds 1/T into the last Dense layer (before the softmax) and converts that,
# so the int8 softmax output (steps of 1/256) quantises the calibrated probabilities, not the
# squeezed ones.

#: reliability bins (equal width over the top score, 0..1)
ECE_BINS = 15
#: the search range of the temperature (T < 1 sharpens, T > 1 flattens)
T_RANGE = (0.05, 20.0)


def logits_from_probs(probs: np.ndarray) -> np.ndarray:
    """Log-probabilities: logits up to a per-row constant, which softmax ignores (softmax(log p / T)
    = softmax(z / T) for p = softmax(z)). Exact for a float model's output; for an int8 output the
    1/256 steps are already lost, so read the int8 logits instead (`int8_logits`)."""
    return np.log(np.clip(np.asarray(probs, np.float64), 1e-12, None))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the labels under softmax(logits / T)."""
    z = np.asarray(logits, np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(log_norm - z[np.arange(len(y)), np.asarray(y, np.int64)]))


def fit_temperature(logits: np.ndarray, y: np.ndarray, bounds: tuple[float, float] = T_RANGE,
                    tol: float = 1e-5) -> float:
    """The T minimising nll(logits, y, T): golden-section search over beta = 1/T, where the NLL is
    convex (a log-sum-exp of beta * z minus a linear term), so the minimum found is the minimum."""
    y = np.asarray(y, np.int64)
    if len(y) == 0:
        raise DataError("cannot fit a temperature on no faces")
    lo, hi = 1.0 / bounds[1], 1.0 / bounds[0]
    f = lambda beta: nll(logits, y, 1.0 / beta)  # noqa: E731
    g = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol * max(1.0, abs(a)):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return float(1.0 / ((a + b) / 2.0))


def reliability(probs: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """Per equal-width bin of the top score: faces, mean top score (confidence), accuracy."""
    probs = np.asarray(probs, np.float64)
    conf = probs.max(axis=1)
    right = probs.argmax(axis=1) == np.asarray(y)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        m = which == b
        n = int(m.sum())
        out.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": n,
                    "confidence": float(conf[m].mean()) if n else None,
                    "accuracy": float(right[m].mean()) if n else None})
    return out


def ece(probs: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: sum over bins of (faces in bin / all) * |accuracy - confidence|."""
    total = len(y)
    if total == 0:
        return 0.0
    return float(sum(b["n"] / total * abs(b["accuracy"] - b["confidence"])
                     for b in reliability(probs, y, bins) if b["n"]))


def calibration_summary(probs: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> dict:
    """ECE, NLL, top-1 and the range of the top score, rounded for a card or a report."""
    probs = np.asarray(probs, np.float64)
    conf = probs.max(axis=1)
    return {"ece": round(ece(probs, y, bins), 4), "nll": round(nll(logits_from_probs(probs), y), 4),
            "top1": round(float(np.mean(probs.argmax(1) == y)) * 100.0, 3), "n": int(len(y)),
            "top_score_min": round(float(conf.min()), 4), "top_score_max": round(float(conf.max()), 4),
            "prob_min": round(float(probs.min()), 6), "bins": bins}


def uncertain_threshold(scores: np.ndarray, right: np.ndarray, max_accuracy: float = 0.5, window: float = 0.1,
                        min_faces: int = 30, grid: np.ndarray | None = None) -> dict:
    """The largest score t (on a 0.01 grid) such that the faces scored just below it, in [t - window, t),
    are labelled right less than `max_accuracy` of the time: with 0.5, a label scored under t is more
    often wrong than right, so "uncertain" there means what it says. Windows with fewer than
    `min_faces` faces are not judged.

    Returns {"threshold", "window", "accuracy_just_below", "share_below", "accuracy_below",
    "accuracy_above"} (threshold 0.0 when no window is that bad).
    """
    scores = np.asarray(scores, np.float64)
    right = np.asarray(right, bool)
    grid = np.round(np.arange(0.01, 1.0, 0.01), 2) if grid is None else grid
    best, best_acc = 0.0, None
    for t in grid:
        m = (scores >= t - window) & (scores < t)
        if m.sum() >= min_faces and float(right[m].mean()) < max_accuracy:
            best, best_acc = float(t), float(right[m].mean())
    below = scores < best
    return {"threshold": best, "window": window,
            "accuracy_just_below": round(best_acc, 4) if best_acc is not None else None,
            "share_below": round(float(below.mean()), 4),
            "accuracy_below": round(float(right[below].mean()), 4) if below.any() else None,
            "accuracy_above": round(float(right[~below].mean()), 4) if (~below).any() else None}

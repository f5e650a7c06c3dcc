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

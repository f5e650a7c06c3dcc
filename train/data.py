"""Data loaders: one function per format, all returning the same `Dataset`.

Formats: the shared `fer2013.npz` (+ optional FER+ votes), Kaggle `fer2013.csv`,
`icml_face_data.csv`, and the Kaggle image-folder layout. `load_dataset(path)` picks by path.

Protocol, always: fit on Training, choose on PublicTest, report PrivateTest.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from fer_edge.contract import EMOTIONS, file_sha256
from fer_edge.errors import DataError

SPLITS: tuple[str, ...] = ("Training", "PublicTest", "PrivateTest")
#: short names accepted on the command line
SPLIT_ALIASES = {
    "train": "Training", "training": "Training",
    "public": "PublicTest", "publictest": "PublicTest", "val": "PublicTest", "validation": "PublicTest",
    "private": "PrivateTest", "privatetest": "PrivateTest", "test": "PrivateTest",
}


@dataclasses.dataclass
class Dataset:
    """Faces with labels and the official split of each row.

    x      (N, H, W) uint8 raw grayscale pixels (the model contract's input values)
    y      (N,) int64 label index into `labels`
    usage  (N,) int64 index into SPLITS (0 Training, 1 PublicTest, 2 PrivateTest)
    soft   (N, len(labels)) float32 label distribution (FER+ votes) or None
    rows   (N,) int64 row number in the source (CSV line index / npz row) for error reports
    """

    x: np.ndarray
    y: np.ndarray
    usage: np.ndarray
    labels: tuple[str, ...] = EMOTIONS
    soft: np.ndarray | None = None
    rows: np.ndarray | None = None
    source: str = ""
    sha256: str = ""
    format: str = ""
    skipped: list[str] = dataclasses.field(default_factory=list)  # "<file>:<row>: reason" with --skip-bad

    def __post_init__(self) -> None:
        if self.rows is None:
            self.rows = np.arange(len(self.x))

    def __len__(self) -> int:
        return len(self.x)

    @property
    def input_size(self) -> tuple[int, int]:
        return (int(self.x.shape[1]), int(self.x.shape[2]))

    def subset(self, mask: np.ndarray) -> "Dataset":
        return dataclasses.replace(
            self,
            x=self.x[mask], y=self.y[mask], usage=self.usage[mask],
            soft=None if self.soft is None else self.soft[mask],
            rows=self.rows[mask],
        )

    def split(self, name: str) -> "Dataset":
        """Rows of one split: 'Training'/'train', 'PublicTest'/'public', 'PrivateTest'/'private'."""
        return self.subset(self.usage == split_index(name))

    def data_info(self) -> dict:
        """What a model card / run folder records about the data."""
        return {"path": self.source, "sha256": self.sha256, "format": self.format, "rows": len(self),
                "skipped": len(self.skipped)}


def split_index(name: str) -> int:
    canonical = SPLIT_ALIASES.get(name.lower(), name)
    if canonical not in SPLITS:
        raise DataError(f"unknown split {name!r} (use one of {', '.join(SPLITS)})")
    return SPLITS.index(canonical)


def load_npz(path: str | Path) -> Dataset:
    """The shared `fer2013.npz` (arrays pixels, emotion, usage)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    try:
        with np.load(path) as d:
            missing = {"pixels", "emotion", "usage"} - set(d.files)
            if missing:
                raise DataError(f"{path}: missing array(s) {', '.join(sorted(missing))}")
            x, y, usage = d["pixels"], d["emotion"], d["usage"]
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    if x.ndim != 3 or len(x) != len(y) or len(y) != len(usage):
        raise DataError(f"{path}: pixels {x.shape}, emotion {y.shape}, usage {usage.shape} do not line up")
    bad = np.flatnonzero((y >= len(EMOTIONS)) | (usage >= len(SPLITS)))
    if len(bad):
        raise DataError(f"{path}: row {int(bad[0])}: label or usage out of range")
    return Dataset(
        x=np.ascontiguousarray(x, dtype=np.uint8), y=y.astype(np.int64), usage=usage.astype(np.int64),
        source=str(path), sha256=file_sha256(path), format="npz",
    )

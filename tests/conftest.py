"""Fixtures shared by every room's tests. Real data only from ../shared/data (skipped when absent)."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FER_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_npz() -> Path:
    """../shared/data/fer2013.npz, or skip with the reason."""
    path = SHARED_DATA / "fer2013.npz"
    if not path.is_file():
        pytest.skip(f"real FER2013 data not present at {path} (set FER_SHARED_DATA to point elsewhere)")
    return path


@pytest.fixture(scope="session")
def shared_votes() -> Path:
    path = SHARED_DATA / "ferplus_votes.npz"
    if not path.is_file():
        pytest.skip(f"FER+ votes not present at {path}")
    return path


@pytest.fixture(scope="session")
def astronaut_bgr() -> np.ndarray:
    """A real photograph with one frontal face (bundled in scikit-image's wheel, no network)."""
    skdata = pytest.importorskip("skimage.data", reason="scikit-image (dev extra) provides the test face")
    rgb = skdata.astronaut()
    return np.ascontiguousarray(rgb[:, :, ::-1])


@pytest.fixture(scope="session")
def astronaut_face_box() -> tuple[int, int, int, int]:
    """Approximate (x, y, w, h) of the astronaut's face in the 512x512 image."""
    return (170, 40, 110, 130)


def make_tiny_faces(n_per_class: int = 12, size: int = 48, seed: int = 0, n_classes: int = 7):
    """Small synthetic labelled 'faces' a model can learn: each class a different pattern.

    Not real faces: for plumbing tests only (shapes, files, CLIs), never for accuracy claims.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    xs, ys = [], []
    for c in range(n_classes):
        angle = np.pi * c / n_classes
        base = 127 + 100 * np.sin(2 * np.pi * (3 * (np.cos(angle) * xx + np.sin(angle) * yy)))
        for _ in range(n_per_class):
            img = base + rng.normal(0, 12, size=base.shape)
            xs.append(np.clip(img, 0, 255).astype(np.uint8))
            ys.append(c)
    x = np.stack(xs)
    y = np.array(ys, np.int64)
    order = rng.permutation(len(y))
    return x[order], y[order]


def split_usage(n: int) -> np.ndarray:
    """60 % Training, 20 % PublicTest, 20 % PrivateTest (rows are already shuffled)."""
    usage = np.zeros(n, np.uint8)
    usage[n * 6 // 10: n * 8 // 10] = 1
    usage[n * 8 // 10:] = 2
    return usage


def write_npz(path: Path, x: np.ndarray, y: np.ndarray, usage: np.ndarray | None = None) -> Path:
    """A fer2013.npz-shaped file (usage: split_usage by default)."""
    usage = split_usage(len(y)) if usage is None else usage
    np.savez_compressed(path, pixels=x.astype(np.uint8), emotion=y.astype(np.uint8), usage=usage.astype(np.uint8))
    return path


@pytest.fixture
def tiny_npz(tmp_path) -> Path:
    """A small fer2013.npz-shaped file: 7 classes, all three splits."""
    return write_npz(tmp_path / "tiny_fer2013.npz", *make_tiny_faces(n_per_class=15))


def sideways_phone_jpeg(upright_bgr: np.ndarray) -> bytes:
    """A JPEG stored as a phone held sideways writes it: pixels turned 90° anticlockwise, and EXIF
    orientation 6 ("turn 90° clockwise to show it") to put it upright."""
    image_mod = pytest.importorskip("PIL.Image", reason="Pillow (pulled in by scikit-image) writes the EXIF")
    stored = np.ascontiguousarray(np.rot90(upright_bgr[:, :, ::-1]))  # RGB, turned anticlockwise
    pil = image_mod.fromarray(stored)
    exif = pil.getexif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


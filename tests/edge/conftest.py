"""Fixtures for the runtime's tests: a tiny contract-honouring int8 TFLite model, test videos.

`tiny_tflite_model` builds (once per session, cached in pytest's cache folder between runs) a small
Keras CNN that honours the model contract -- (1, 48, 48, 1) raw 0..255 gray pixels in, Rescaling
inside the model, 7 softmax scores out -- and converts it to a fully int8 TFLite file with
TFLiteConverter, calibrated on real face crops (the astronaut photo, flipped and re-lit). Its
weights are random: it exercises plumbing (shapes, quantisation, the loop, the logs), never
accuracy. Building it needs TensorFlow (the `train` extra); without it, tests that use it skip.
The runtime under test never imports TensorFlow (test_no_tensorflow checks that).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_edge import contract

TINY_MODEL_VERSION = "tiny-v1"  # bump to rebuild cached copies after changing the builder


def face_crops(astronaut_bgr: np.ndarray, face_box, n: int = 64, seed: int = 0) -> np.ndarray:
    """(n, 48, 48) real face crops: the astronaut's face, jittered, flipped and re-lit."""
    rng = np.random.default_rng(seed)
    gray = cv2.cvtColor(astronaut_bgr, cv2.COLOR_BGR2GRAY)
    x, y, w, h = face_box
    out = np.empty((n, 48, 48), np.uint8)
    for i in range(n):
        dx, dy = rng.integers(-12, 13, size=2)
        grow = rng.uniform(0.9, 1.2)
        cx, cy = x + w / 2 + dx, y + h / 2 + dy
        half = max(w, h) * grow / 2
        x0, y0 = int(max(0, cx - half)), int(max(0, cy - half))
        crop = gray[y0:int(cy + half), x0:int(cx + half)]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        face = cv2.resize(crop, (48, 48), interpolation=cv2.INTER_AREA).astype(np.float32)
        face = face * rng.uniform(0.6, 1.3) + rng.uniform(-30, 30)
        out[i] = np.clip(face, 0, 255).astype(np.uint8)
    return out


def build_tiny_tflite(out_dir: Path, calibration: np.ndarray) -> Path:
    """Keras CNN (random init) -> int8 TFLite + model card in `out_dir`; returns the .tflite path."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((48, 48, 1)),
        keras.layers.Rescaling(1.0 / 255.0),
        keras.layers.Conv2D(8, 3, activation="relu", padding="same"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(16, 3, activation="relu", padding="same"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu", padding="same"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(len(contract.EMOTIONS), activation="softmax"),
    ])
    x = contract.batch_to_model_input(calibration)

    def representative():
        for i in range(len(x)):
            yield [x[i:i + 1]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    data = converter.convert()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "tiny_int8.tflite"
    contract.write_bytes_atomic(path, data)
    card = contract.ModelCard(name="tiny", architecture="tiny-test-cnn (random weights)",
                              files={"int8": path.name}, notes="plumbing tests only; random weights")
    card.save(out_dir / "tiny.json")
    return path


def cache_dir(request, tmp_path_factory, name: str) -> Path:
    """pytest's cache folder (kept between runs), or a fresh temporary one without the cache plugin."""
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir(name))
    return tmp_path_factory.mktemp(name)


@pytest.fixture(scope="session")
def tiny_tflite_model(request, tmp_path_factory, astronaut_bgr, astronaut_face_box) -> Path:
    """Path of a tiny int8 TFLite model honouring the contract (with its card `tiny.json` beside it)."""
    cache = cache_dir(request, tmp_path_factory, "fer-edge-" + TINY_MODEL_VERSION)
    cached = cache / "tiny_int8.tflite"
    if not (cached.is_file() and (cache / "tiny.json").is_file()):
        try:
            import tensorflow  # noqa: F401
        except ImportError as exc:
            pytest.skip(f"tensorflow (train extra) is needed to build the test model: {exc}")
        build_tiny_tflite(cache, face_crops(astronaut_bgr, astronaut_face_box))
    folder = tmp_path_factory.mktemp("tiny_model")
    shutil.copy(cached, folder / cached.name)
    shutil.copy(cache / "tiny.json", folder / "tiny.json")
    return folder / cached.name


# --------------------------------------------------------------------------- test videos
FRAME_W, FRAME_H = 640, 480


def background(width: int = FRAME_W, height: int = FRAME_H) -> np.ndarray:
    """A smooth, face-free BGR background (gradients: nothing a Haar cascade mistakes for a face)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    b = 90 + 60 * xx / width
    g = 110 + 40 * yy / height
    r = 140 - 30 * xx / width
    return np.clip(np.stack([b, g, r], axis=-1), 0, 255).astype(np.uint8)


def head_patch(astronaut_bgr: np.ndarray, face_box, size: int = 200) -> np.ndarray:
    """The astronaut's head with some margin, resized to size x size."""
    x, y, w, h = face_box
    m = int(0.45 * max(w, h))
    cx, cy = x + w // 2, y + h // 2
    half = max(w, h) // 2 + m
    crop = astronaut_bgr[max(0, cy - half):cy + half, max(0, cx - half):cx + half]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


def face_video_frames(astronaut_bgr, face_box, n_moving: int = 40, n_empty: int = 6, size: int = 200):
    """Frames of a test clip and where the head is in each.

    `n_empty` frames without a face; then `n_moving` frames in which the head (a size x size patch)
    moves steadily right (~14 px a frame), entering across the left edge (partly outside the frame
    for the first few) and ending inside it; then `n_empty` empty frames again. Returns
    (frames, states, rects): states[i] is "none", "partial" or "full"; rects[i] is the head patch's
    (x, y, w, h) inside frame i (clipped), or None.
    """
    bg = background()
    patch = head_patch(astronaut_bgr, face_box, size)
    frames, states, rects = [], [], []

    def add(x: int | None, y: int = (FRAME_H - size) // 2) -> None:
        frame = bg.copy()
        if x is None:
            frames.append(frame)
            states.append("none")
            rects.append(None)
            return
        x0, x1 = max(0, x), min(FRAME_W, x + size)
        frame[y:y + size, x0:x1] = patch[:, x0 - x:x1 - x]
        frames.append(frame)
        states.append("full" if (x0, x1) == (x, x + size) else "partial")
        rects.append((x0, y, x1 - x0, size))

    for _ in range(n_empty):
        add(None)
    for i, x in enumerate(np.linspace(-size // 2, FRAME_W - size - 20, n_moving).astype(int)):
        add(int(x), (FRAME_H - size) // 2 + int(10 * np.sin(i / 4)))
    for _ in range(n_empty):
        add(None)
    return frames, states, rects


def write_video(path: Path, frames, fps: float = 15.0, fourcc: str = "MJPG") -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened(), f"cannot write {path} with {fourcc}"
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


@dataclasses.dataclass(frozen=True)
class Clip:
    path: Path
    states: list[str]  # per frame: "none", "partial" or "full"
    rects: list  # per frame: the head's (x, y, w, h) or None

    def frames_where(self, *states: str) -> list[int]:
        return [i for i, s in enumerate(self.states) if s in states]


@pytest.fixture(scope="session")
def face_clip(tmp_path_factory, astronaut_bgr, astronaut_face_box) -> Clip:
    """An MJPG .avi (640x480, 15 fps, 52 frames) with the astronaut's head crossing it (see above)."""
    frames, states, rects = face_video_frames(astronaut_bgr, astronaut_face_box)
    path = write_video(tmp_path_factory.mktemp("clips") / "face.avi", frames)
    return Clip(path, states, rects)


@pytest.fixture
def read_jsonl():
    def read(path: Path) -> list[dict]:
        lines = Path(path).read_text().splitlines()
        return [json.loads(line) for line in lines]

    return read


@pytest.fixture
def notify_log(tmp_path):
    """A stand-in for systemd's notify socket: (address, list of (monotonic time, message))."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.05)
    got: list[tuple[float, str]] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            try:
                got.append((time.monotonic(), sock.recv(4096).decode()))
            except (TimeoutError, socket.timeout):
                continue

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    yield str(path), got
    done.set()
    thread.join()
    sock.close()

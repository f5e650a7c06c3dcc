"""Camera-like frames made from a face crop: a real background photo, the face upscaled, tilted and
pasted with a print's border, then a webcam's exposure, blur and sensor noise.

Two users: benchmarks/pipeline_accuracy.py (PublicTest / PrivateTest faces in scenes, the whole-pipeline
benchmark) and runtime_views.py (Training faces in scenes, cut out again by the runtime's face stage to
train on). No Keras here: numpy, OpenCV and scikit-image's sample photos.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

FRAME_W, FRAME_H = 640, 480
#: mean-grey margin around a pasted FER2013 face, a fraction of its side (see paste)
PRINT_BORDER = 0.25


def background_images() -> list[np.ndarray]:
    """Real photos without a (large) face, as BGR: scikit-image's sample images (the train extra installs it)."""
    from skimage import data

    out = []
    for name in ("coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "colorwheel"):
        try:
            img = getattr(data, name)()
        except Exception:  # noqa: BLE001 - an image missing from this skimage version
            continue
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        out.append(np.ascontiguousarray(img[:, :, :3][:, :, ::-1]))
    for name in ("brick", "grass", "gravel", "camera", "text"):
        img = getattr(data, name)()
        out.append(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
    return out


def scene(backgrounds: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """A 640x480 crop of a random background, resized as needed."""
    bg = backgrounds[rng.integers(len(backgrounds))]
    scale = max(FRAME_W / bg.shape[1], FRAME_H / bg.shape[0]) * rng.uniform(1.0, 1.6)
    big = cv2.resize(bg, (math.ceil(bg.shape[1] * scale), math.ceil(bg.shape[0] * scale)))
    x = rng.integers(0, big.shape[1] - FRAME_W + 1)
    y = rng.integers(0, big.shape[0] - FRAME_H + 1)
    return big[y:y + FRAME_H, x:x + FRAME_W].copy()


def paste(frame: np.ndarray, face_gray: np.ndarray, centre: tuple[float, float], side: int, tilt: float,
          feather: float = 0.08, border: float = PRINT_BORDER) -> None:
    """Upscale a square face to `side` px, rotate it by `tilt` degrees about its centre and blend it
    into `frame` at `centre` through a feathered square mask (in place).

    The face keeps a `border` (a fraction of its side, each way) of its own mean grey around it, as a
    photo print of it would: a tight 48-px FER2013 crop pasted edge to edge into a busy scene has no
    head outline, and a face detector finds only half of them (52 % against 76 % with the border, on
    80 PublicTest faces of 110-240 px, measured while writing this benchmark)."""
    if border > 0:
        b = int(round(face_gray.shape[0] * border))
        face_gray = cv2.copyMakeBorder(face_gray, b, b, b, b, cv2.BORDER_CONSTANT, value=int(face_gray.mean()))
        side = int(round(side * face_gray.shape[0] / (face_gray.shape[0] - 2 * b)))
    face = cv2.resize(face_gray, (side, side), interpolation=cv2.INTER_CUBIC)
    mask = np.zeros((side, side), np.float32)
    edge = max(1, int(side * feather))
    mask[edge:-edge, edge:-edge] = 1.0
    mask = cv2.GaussianBlur(mask, (0, 0), edge / 2.0)
    cx, cy = centre
    m = cv2.getRotationMatrix2D((side / 2.0, side / 2.0), tilt, 1.0)
    m[:, 2] += (cx - side / 2.0, cy - side / 2.0)
    size = (frame.shape[1], frame.shape[0])
    warped = cv2.warpAffine(face, m, size, flags=cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(mask, m, size, flags=cv2.INTER_LINEAR)[..., None]
    frame[:] = (frame * (1 - alpha) + warped[..., None] * alpha).astype(np.uint8)


def camera_look(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast, light blur and sensor noise, as a webcam gives them."""
    out = frame.astype(np.float32) * rng.uniform(0.6, 1.3) + rng.uniform(-30, 30)
    sigma = rng.uniform(0.0, 1.2)
    if sigma > 0.3:
        out = cv2.GaussianBlur(out, (0, 0), sigma)
    out += rng.normal(0, rng.uniform(1, 5), out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def nearest(boxes, centre: tuple[float, float], side: float) -> int | None:
    """Index of the box (x, y, w, h) whose centre is nearest to where a face of `side` px was pasted at
    `centre`, if within half that side: the rule by which a pasted face counts as found."""
    best, best_dist = None, side / 2
    for i, (x, y, w, h) in enumerate(boxes):
        dist = math.hypot(x + w / 2 - centre[0], y + h / 2 - centre[1])
        if dist <= best_dist and (best is None or dist < best_dist):
            best, best_dist = i, dist
    return best

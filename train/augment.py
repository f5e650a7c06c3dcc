"""Host-side data augmentation: numpy + cv2, any Keras backend.

`TrainBatches` is a `keras.utils.PyDataset` that yields augmented float32 batches
``(x (B, H, W, 1) raw 0..255, targets (B, C) float32, sample_weight (B,))``. Randomness comes
from a numpy Generator seeded by (seed, epoch, batch index), so a run is reproducible no matter
how batches are scheduled (and a resumed run replays exactly the epochs it has not done yet).
Per image: one cv2.warpAffine for flip+shift+rotation+zoom (about 10 us for 48x48), random erasing
by slicing; per batch: mixup / cutmix. ~28 k images per epoch cost well under a second on one core,
so augmentation is never the bottleneck.

The photometric options imitate what the runtime's crops really look like (a camera frame, a face
detector's box, an aligner's resize): `blur` (Gaussian, sigma 0.3-1.2 px), `brightness` (+- a fraction
of 255), `contrast` (x [1 - c, 1 + c] about the face's mean), `jpeg` (re-encoded at quality 30-90)
and `noise` (Gaussian sensor noise, its sigma in grey levels drawn up to the value). Scale and shift
jitter of the crop are `zoom` and `shift`, the small roll is `rotation`. All are off by default and
draw random numbers only when on, so runs without them keep their exact stream.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import cv2
import keras
import numpy as np


@dataclasses.dataclass
class AugmentConfig:
    enabled: bool = True
    flip: bool = True          # horizontal flip with probability 0.5
    shift: float = 0.1         # max translation, fraction of width/height
    rotation: float = 10.0     # max rotation, degrees
    zoom: float = 0.1          # scale drawn from [1 - zoom, 1 + zoom]
    erasing: float = 0.0       # probability of random erasing (one rectangle, 2-20 % of the area)
    mixup: float = 0.0         # mixup Beta(alpha, alpha); 0 = off
    cutmix: float = 0.0        # cutmix Beta(alpha, alpha); 0 = off (with mixup too: one of them per batch)
    blur: float = 0.0          # probability of a Gaussian blur (sigma 0.3-1.2 px)
    brightness: float = 0.0    # max brightness shift, fraction of 255
    contrast: float = 0.0      # max contrast change: factor in [1 - c, 1 + c] about the face's mean
    jpeg: float = 0.0          # probability of a JPEG round trip at quality 30-90
    noise: float = 0.0         # max sigma (grey levels) of Gaussian noise; each face draws sigma in [0, noise]

    @property
    def geometric(self) -> bool:
        return self.enabled and (self.flip or self.shift > 0 or self.rotation > 0 or self.zoom > 0)


def augment_images(x: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """(B, H, W) uint8 -> (B, H, W) float32 augmented copies (values stay 0..255)."""
    x = np.asarray(x)
    b, h, w = x.shape
    out = x.astype(np.float32)
    if not cfg.enabled:
        return out
    if cfg.geometric:
        flips = rng.random(b) < 0.5 if cfg.flip else np.zeros(b, bool)
        angles = rng.uniform(-cfg.rotation, cfg.rotation, b) if cfg.rotation > 0 else np.zeros(b)
        scales = rng.uniform(1 - cfg.zoom, 1 + cfg.zoom, b) if cfg.zoom > 0 else np.ones(b)
        shifts = rng.uniform(-cfg.shift, cfg.shift, (b, 2)) * (w, h) if cfg.shift > 0 else np.zeros((b, 2))
        center = ((w - 1) / 2.0, (h - 1) / 2.0)
        for i in range(b):
            m = cv2.getRotationMatrix2D(center, float(angles[i]), float(scales[i]))
            if flips[i]:  # mirror about the vertical centre line, then rotate/scale
                m[:, 0] = -m[:, 0]
                m[:, 2] += m[:, 0] * -(w - 1)
            m[:, 2] += shifts[i]
            out[i] = cv2.warpAffine(out[i], m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    if cfg.erasing > 0:
        for i in np.flatnonzero(rng.random(b) < cfg.erasing):
            area = rng.uniform(0.02, 0.2) * h * w
            ratio = math.exp(rng.uniform(math.log(0.3), math.log(3.3)))
            eh = int(min(h, round(math.sqrt(area * ratio))))
            ew = int(min(w, round(math.sqrt(area / ratio))))
            y0 = int(rng.integers(0, h - eh + 1))
            x0 = int(rng.integers(0, w - ew + 1))
            out[i, y0:y0 + eh, x0:x0 + ew] = rng.uniform(0, 255, (eh, ew))
    return photometric(out, rng, cfg)


def photometric(out: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """The runtime-crop variation (see the module docstring), in place on float (B, H, W) 0..255."""
    b = len(out)
    if cfg.blur > 0:
        for i in np.flatnonzero(rng.random(b) < cfg.blur):
            out[i] = cv2.GaussianBlur(out[i], (0, 0), float(rng.uniform(0.3, 1.2)), borderType=cv2.BORDER_REFLECT_101)
    if cfg.contrast > 0:
        f = rng.uniform(1 - cfg.contrast, 1 + cfg.contrast, b).astype(np.float32)[:, None, None]
        mean = out.mean(axis=(1, 2), keepdims=True)
        out[:] = (out - mean) * f + mean
    if cfg.brightness > 0:
        out += (rng.uniform(-cfg.brightness, cfg.brightness, b) * 255.0).astype(np.float32)[:, None, None]
    if cfg.jpeg > 0:
        for i in np.flatnonzero(rng.random(b) < cfg.jpeg):
            q = int(rng.integers(30, 91))
            ok, buf = cv2.imencode(".jpg", np.clip(out[i], 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, q])
            if ok:
                out[i] = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE).astype(np.float32)
    if cfg.noise > 0:
        sigma = rng.uniform(0, cfg.noise, b).astype(np.float32)[:, None, None]
        out += rng.standard_normal(out.shape, dtype=np.float32) * sigma
    if cfg.contrast > 0 or cfg.brightness > 0 or cfg.noise > 0:
        np.clip(out, 0, 255, out=out)
    return out


def mix_batch(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig):
    """Mixup or CutMix on a float batch x (B, H, W) with soft targets y (B, C)."""
    use_mixup, use_cutmix = cfg.mixup > 0, cfg.cutmix > 0
    if not cfg.enabled or not (use_mixup or use_cutmix) or len(x) < 2:
        return x, y
    perm = rng.permutation(len(x))
    if use_cutmix and (not use_mixup or rng.random() < 0.5):
        lam = float(rng.beta(cfg.cutmix, cfg.cutmix))
        h, w = x.shape[1:3]
        ch, cw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        x = x.copy()
        x[:, y0:y1, x0:x1] = x[perm, y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        lam = float(rng.beta(cfg.mixup, cfg.mixup))
        x = lam * x + (1 - lam) * x[perm]
    y = lam * y + (1 - lam) * y[perm]
    return x.astype(np.float32), y.astype(np.float32)


@dataclasses.dataclass
class RuntimeViews:
    """Training faces as the runtime's face stage cut them out of camera-like frames (runtime_views.py):
    detector box jitter, alignment, resampling from an upscaled, tilted, noisy frame. A face that has
    views is shown as one of them, drawn at random, with probability `p` (then augmented like any face).

    crops  (V, H, W) uint8, the aligned crops at the model's input size
    owner  (V,) int, the position in the training arrays of the face each crop shows
    """
    crops: np.ndarray
    owner: np.ndarray
    p: float = 0.5

    def __post_init__(self) -> None:
        if len(self.crops) != len(self.owner):
            raise ValueError("crops and owner differ in length")
        order = np.argsort(self.owner, kind="stable")
        self.crops, self.owner = self.crops[order], np.asarray(self.owner)[order]

    def swap(self, faces: np.ndarray, idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The batch `faces` (the faces at positions `idx`) with some of them replaced by a view."""
        first = np.searchsorted(self.owner, idx, side="left")
        count = np.searchsorted(self.owner, idx, side="right") - first
        chosen = (count > 0) & (rng.random(len(idx)) < self.p)
        if not chosen.any():
            return faces
        out = faces.copy()
        out[chosen] = self.crops[first[chosen] + rng.integers(0, count[chosen])]
        return out


class TrainBatches(keras.utils.PyDataset):
    """Shuffled, augmented training batches (x, targets, sample_weight) for `model.fit`.

    With `teacher` (a callable: faces (N, H, W) raw 0..255 -> (N, C) probabilities, fit's Teachers), each
    batch's targets become (1 - kd_alpha) * targets + kd_alpha * teacher(the augmented faces): the teachers
    judge the view the student is shown (`fer-train fit --kd-online`)."""

    def __init__(self, x: np.ndarray, targets: np.ndarray, batch_size: int, augment: AugmentConfig,
                 seed: int = 0, sample_weight: np.ndarray | None = None, workers: int = 1,
                 views: RuntimeViews | None = None, teacher: Callable[[np.ndarray], np.ndarray] | None = None,
                 kd_alpha: float = 0.5, **kwargs):
        super().__init__(workers=workers, use_multiprocessing=False, **kwargs)
        if views is not None and views.crops.shape[1:] != np.shape(x)[1:]:
            raise ValueError(f"runtime views are {views.crops.shape[1:]}, the faces {np.shape(x)[1:]}")
        self.views = views
        self.teacher, self.kd_alpha = teacher, float(kd_alpha)
        if len(x) != len(targets):
            raise ValueError("x and targets differ in length")
        self.x = np.ascontiguousarray(x, dtype=np.uint8) if x.dtype == np.uint8 else np.asarray(x)
        self.targets = np.asarray(targets, np.float32)
        self.sample_weight = None if sample_weight is None else np.asarray(sample_weight, np.float32)
        self.batch_size = int(batch_size)
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        self._shuffle()

    def _shuffle(self) -> None:
        self.order = np.random.default_rng([self.seed, self.epoch, 0]).permutation(len(self.x))

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, index: int):
        idx = np.sort(self.order[index * self.batch_size:(index + 1) * self.batch_size])
        rng = np.random.default_rng([self.seed, self.epoch, 1, index])
        faces = self.x[idx]
        if self.views is not None:  # its own stream: the augmentation draws stay those of a run without views
            faces = self.views.swap(faces, idx, np.random.default_rng([self.seed, self.epoch, 2, index]))
        xb = augment_images(faces, rng, self.augment)
        yb = self.targets[idx]
        xb, yb = mix_batch(xb, yb, rng, self.augment)
        if self.teacher is not None:  # consistent teaching: the teachers see exactly what the student sees
            yb = (1 - self.kd_alpha) * yb + self.kd_alpha * self.teacher(np.clip(xb, 0, 255))
        sw = np.ones(len(idx), np.float32) if self.sample_weight is None else self.sample_weight[idx]
        return xb[..., None], yb, sw

    def set_epoch(self, epoch: int) -> None:
        """Start at `epoch` (a resumed run): its order and augmentation are those of an unbroken run."""
        self.epoch = int(epoch)
        self._shuffle()

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._shuffle()

    def epoch_callback(self) -> keras.callbacks.Callback:
        """A callback that pins this dataset's epoch to the training epoch at the start of each one, so
        epoch k draws the stream of (seed, k) however often Keras peeked or called on_epoch_end before
        (a resumed run starts at epoch k with initial_epoch=k). Use with model.fit(shuffle=False): the
        batch order is this dataset's own seeded permutation, not Keras' (global-RNG) one."""
        batches = self

        class PinEpoch(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                batches.set_epoch(epoch)

        return PinEpoch()

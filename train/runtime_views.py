"""`fer-train runtime-views`: Training faces as the runtime's face stage really cuts them out.

Why: a model is judged in the pipeline (benchmarks/ship_check.py), where a face reaches it through the
default face stage: BlazeFace's box and eye keypoints on a camera frame, then the aligner's rotation,
scale and resampling. On the PublicTest scenes the shipped models lose 2-5 pp between the 48-px crops and
the faces the pipeline found; random shifts and zooms of a clean crop do not reproduce the detector's
jitter, the levelling or the resampling of an upscaled, tilted, noisy face.

So each Training face is pasted into a camera-like frame (scenes.py: real background, 60-240 px, tilted
up to +-30 degrees, a webcam's exposure, blur and noise), the runtime's detector looks for it, and the
aligner cuts out what the classifier would get. `fer-train fit --runtime-views FILE` then shows a face as
one of its views with probability `--runtime-view-p` (augment.RuntimeViews). Only Training faces are
rendered: the pipeline benchmark's PublicTest and PrivateTest scenes stay unseen.

The file (npz): rows (the data's row numbers), crops (V, H, W) uint8, tilts, sides, and what made them:
data sha256, detector, seed, input size. Faces the detector misses have no view (about a third, as in
the benchmark: upscaled 48-px crops are harder to find than real faces).
"""
from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import numpy as np

from fer_edge.errors import ConfigError, DataError

#: face side (px) and tilt (degrees) ranges of the rendered frames: those of the pipeline benchmark
SIDES = (60, 240)
MAX_TILT = 30.0
#: `--runtime-views auto` (the recipes): this many renders per face, this seed, kept in the runs folder
AUTO_VIEWS, AUTO_SEED = 2, 1


def auto_views_path(out: str | Path, data_sha256: str | None) -> Path:
    """Where `--runtime-views auto` keeps the views of one data file: made once, shared by every run."""
    return Path(out) / f"runtime_views_{(data_sha256 or 'data')[:12]}_v{AUTO_VIEWS}_s{AUTO_SEED}.npz"


def render_views(faces: np.ndarray, rng: np.random.Generator, detector, aligner, backgrounds,
                 progress: bool = True):
    """Each face (N, h, w) uint8 once in a rendered frame; returns (index of the face, crop, tilt, side)
    for the faces the detector found near where they were pasted."""
    import cv2

    from .scenes import FRAME_H, FRAME_W, camera_look, nearest, paste, scene

    cv2.setNumThreads(1)  # a frame at a time: OpenCV's thread pool only contends with training
    found = []
    it = range(len(faces))
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="runtime views", unit="face", mininterval=5)
    for i in it:
        side = int(rng.integers(SIDES[0], SIDES[1] + 1))
        tilt = float(rng.uniform(-MAX_TILT, MAX_TILT))
        reach = side * 0.75  # the rotated square's half diagonal, and a little more
        cx, cy = rng.uniform(reach, FRAME_W - reach), rng.uniform(reach, FRAME_H - reach)
        frame = scene(backgrounds, rng)
        paste(frame, faces[i], (cx, cy), side, tilt)
        frame = camera_look(frame, rng)
        detections = detector.detect(frame)
        k = nearest([d.box for d in detections], (cx, cy), side)
        if k is not None:
            crop = aligner(frame, detections[k].box, detections[k].keypoints)
            found.append((i, np.clip(np.rint(crop), 0, 255).astype(np.uint8), tilt, side))
    return found


def _render_one_view(data_path: str, rows: np.ndarray, v: int, seed: int, detector_kind: str,
                     progress: bool) -> list:
    """View `v` of these Training rows, from its own random stream (seed, v): the same crops whether the
    views are rendered one after another or in parallel processes. A whole face stage per call, so a
    worker process shares nothing with its parent."""
    from fer_edge.align import Aligner
    from fer_edge.config import DetectorConfig
    from fer_edge.detectors import create_detector

    from .data import load_training_data
    from .scenes import background_images

    ds = load_training_data(data_path)
    train = ds.split("Training")
    position = {int(r): i for i, r in enumerate(train.rows)}
    faces = train.x[np.array([position[int(r)] for r in rows], np.int64)]
    detector = create_detector(DetectorConfig(kind=detector_kind), fallback=False)
    try:
        aligner = Aligner.for_detector(detector.name, ds.input_size, align=True)
        return render_views(faces, np.random.default_rng([seed, v]), detector, aligner, background_images(),
                            progress=progress)
    finally:
        detector.close()


def make_runtime_views(data: str | None, out: str | Path, views: int = 1, seed: int = 0,
                       max_faces: int | None = None, detector_kind: str = "blazeface", jobs: int = 1,
                       log=print) -> dict:
    """Render every Training face `views` times, keep what the detector finds, write `out` (npz).

    `jobs` > 1 renders that many views at once, one process (one core) each."""
    from concurrent.futures import ProcessPoolExecutor

    from fer_edge.config import DetectorConfig
    from fer_edge.detectors import create_detector

    from .data import load_training_data, resolve_data_path

    if views < 1:
        raise ConfigError("--views must be >= 1")
    if jobs < 1:
        raise ConfigError("--jobs must be >= 1")
    data_path = resolve_data_path(data)
    ds = load_training_data(data_path)
    train = ds.split("Training")
    if len(train) == 0:
        raise DataError(f"{data_path}: no Training rows to render")
    if max_faces and max_faces < len(train):
        rng = np.random.default_rng(seed)
        train = train.subset(np.sort(rng.choice(len(train), max_faces, replace=False)))
    detector = create_detector(DetectorConfig(kind=detector_kind), fallback=False)  # fails here, not in a worker
    detector_name = detector.name
    detector.close()
    jobs = min(jobs, views)
    log(f"{views} view(s) of {len(train)} Training faces in camera-like frames, {detector_name}, "
        f"{jobs} at a time")
    args = [(str(data_path), train.rows, v, seed, detector_kind, v == 0) for v in range(views)]
    if jobs == 1:
        rendered = [_render_one_view(*a) for a in args]
    else:
        # spawn, not fork: a process that has TensorFlow's (or any) threads running deadlocks a forked child
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            rendered = list(pool.map(_render_one_view, *zip(*args)))
    owners, crops, tilts, sides = [], [], [], []
    for found in rendered:
        for i, crop, tilt, side in found:
            owners.append(i)
            crops.append(crop)
            tilts.append(tilt)
            sides.append(side)
    if not crops:  # not faces (synthetic test data), or a detector that cannot see them: training goes on without
        log(f"warning: the {detector_name} detector found none of the {views * len(train)} rendered faces; "
            f"the file holds no views")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"data": str(data_path), "data_sha256": ds.sha256, "detector": detector_name, "seed": seed,
            "views_per_face": views, "faces": len(train), "input_size": list(ds.input_size),
            "found": len(crops), "found_pct": round(100.0 * len(crops) / (views * len(train)), 2),
            "sides": list(SIDES), "max_tilt": MAX_TILT}
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, rows=train.rows[np.asarray(owners, np.int64)],
                            crops=np.stack(crops) if crops else np.zeros((0, *train.x.shape[1:]), np.uint8),
                            tilts=np.asarray(tilts, np.float32), sides=np.asarray(sides, np.int16),
                            meta=np.asarray(json.dumps(meta)))
    os.replace(tmp, out)
    log(f"wrote {out}: {len(crops)} views of {views * len(train)} renders ({meta['found_pct']} % found)")
    return meta


def load_runtime_views(path: str | Path, train, data_sha256: str | None, p: float):
    """The views file for these Training faces (`train`: a data.Dataset) as augment.RuntimeViews.

    Refuses a file made from other data or at another input size; views of rows not in `train` (a
    --max-train-rows subset) are left out."""
    from .augment import RuntimeViews

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--runtime-views {path}: no such file (make it with `fer-train runtime-views`)")
    try:
        with np.load(path) as z:
            rows, crops, meta = z["rows"], z["crops"], json.loads(str(z["meta"]))
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"--runtime-views {path}: not a runtime views file ({e})") from e
    if data_sha256 and meta.get("data_sha256") and meta["data_sha256"] != data_sha256:
        raise ConfigError(f"--runtime-views {path} was made from other data (sha256 {meta['data_sha256'][:12]}, "
                          f"this data {data_sha256[:12]})")
    if crops.shape[1:] != train.x.shape[1:]:
        raise ConfigError(f"--runtime-views {path} holds {crops.shape[1]}x{crops.shape[2]} crops, "
                          f"the model takes {train.x.shape[1]}x{train.x.shape[2]}")
    position = {int(r): i for i, r in enumerate(train.rows)}
    keep = np.array([int(r) in position for r in rows], bool)
    owner = np.array([position[int(r)] for r in rows[keep]], np.int64)
    return RuntimeViews(crops[keep], owner, p), meta

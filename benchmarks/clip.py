"""Benchmark clips made from real face photos bundled with scikit-image (offline, reproducible).

Two kinds:

* ``crossing`` (default; the speed benchmarks): the astronaut's head crossing a 640x480 frame and
  back, 15 fps, with a few frames without a face at each end (the generator the runtime's tests use,
  tests/edge/conftest.py, longer). An easy clip: one steady, clearly happy face on a flat background.
* ``handheld`` (label stability, realistic speed): two real photos filmed as by a hand-held webcam,
  30 fps: the cameraman (`skimage.data.camera`, a serious face the models find ambiguous: sad, fear,
  neutral) for 20 s, then the astronaut (`skimage.data.astronaut`) for 10 s; now and then a hand (a
  skin-coloured ellipse) rises from the chin over the mouth for 1-3 s; throughout, the camera drifts,
  shakes, zooms and rolls, the exposure and a side light wander, frames are noisy, sometimes
  motion-blurred and JPEG-compressed (quality 35-85).
  The faces are still photographs: no speech, no change of expression; what moves the labels is
  what moves them on a real camera (pose, scale, light, blur, compression, occlusion). Seeded.

    python benchmarks/clip.py                              # crossing -> runs/bench/face_clip.mp4
    python benchmarks/clip.py runs/bench/handheld.avi --kind handheld
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
KINDS = ("crossing", "handheld")


def _skimage_data():
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    try:
        from skimage import data
    except ImportError as exc:  # pragma: no cover
        raise SystemExit(f"the benchmark clips need scikit-image (dev extra), or pass --source: {exc}")
    return data


def make_clip(path: str | Path, moving: int = 120, empty: int = 10, fourcc: str = "mp4v") -> Path:
    """Write the crossing clip (2 x `moving` frames with the face, 2 x `empty` without) to `path`."""
    data = _skimage_data()
    from tests.edge.conftest import face_video_frames, write_video

    astronaut = np.ascontiguousarray(data.astronaut()[:, :, ::-1])
    frames, _, _ = face_video_frames(astronaut, (170, 40, 110, 130), n_moving=moving, n_empty=empty)
    frames = frames + frames[::-1]  # across and back: no jump when the clip loops
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, frames, fps=15.0, fourcc=fourcc)


#: (photo, face centre in the photo (x, y), seconds, zoom range, hand over the mouth now and then)
HANDHELD_SHOTS = (("camera", (224, 161), 20.0, (1.1, 2.6), True),
                  ("astronaut", (235, 150), 10.0, (0.7, 1.4), True))


def handheld_frames(fps: float = 30.0, seed: int = 0, size: tuple[int, int] = (640, 480),
                    scale_s: float = 1.0) -> list[np.ndarray]:
    """The frames of the handheld clip (BGR uint8); `scale_s` shortens or lengthens every shot."""
    import cv2

    data = _skimage_data()
    rng = np.random.default_rng(seed)
    w, h = size
    frames: list[np.ndarray] = []
    for name, (cx, cy), seconds, (z_lo, z_hi), hand in HANDHELD_SHOTS:
        photo = getattr(data, name)()
        photo = cv2.cvtColor(photo, cv2.COLOR_GRAY2BGR) if photo.ndim == 2 else np.ascontiguousarray(photo[:, :, ::-1])
        fill = tuple(int(v) for v in np.median(photo.reshape(-1, 3), axis=0))
        n = int(round(seconds * scale_s * fps))
        dx = dy = roll = 0.0
        gain, hand_left = 1.0, 0
        phase = rng.uniform(0, 2 * np.pi, 3)
        for i in range(n):
            t = i / fps
            zoom = z_lo + (z_hi - z_lo) * (0.5 + 0.5 * np.sin(2 * np.pi * t / 11 + phase[0])) + rng.normal(0, 0.01)
            dx = float(np.clip(0.95 * dx + rng.normal(0, 4), -90, 90))  # drift + shake
            dy = float(np.clip(0.95 * dy + rng.normal(0, 3), -50, 50))
            roll = float(np.clip(0.97 * roll + rng.normal(0, 0.8), -10, 10))
            gain = float(np.clip(gain + rng.normal(0, 0.015), 0.6, 1.25))  # auto-exposure wandering
            m = cv2.getRotationMatrix2D((cx, cy), roll, zoom)
            m[0, 2] += w / 2 - cx + dx
            m[1, 2] += h / 2 - cy + dy
            frame = cv2.warpAffine(photo, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                   borderValue=fill).astype(np.float32)
            side = 0.3 * np.sin(2 * np.pi * t / 8 + phase[1])  # a light on one side, moving
            frame *= gain + side * np.linspace(-1, 1, w, dtype=np.float32)[None, :, None]
            if hand:
                if hand_left == 0 and rng.random() < 0.03:
                    hand_left = int(rng.integers(int(1.0 * fps), int(3.0 * fps)))
                if hand_left > 0:  # a hand at the chin, rising over the mouth and back
                    hand_left -= 1
                    mx, my = w / 2 + dx, h / 2 + dy + (50 + 30 * np.sin(hand_left / fps * 2.0)) * zoom
                    cv2.ellipse(frame, (int(mx), int(my)), (int(55 * zoom), int(30 * zoom)), roll, 0, 360,
                                (110, 140, 185), -1)
            frame = np.clip(frame + rng.normal(0, 5, frame.shape), 0, 255).astype(np.uint8)
            if rng.random() < 0.15:  # motion blur along the shake
                k = int(rng.integers(3, 9))
                kernel = np.zeros((k, k), np.float32)
                kernel[k // 2] = 1.0 / k
                frame = cv2.filter2D(frame, -1, kernel)
            ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(35, 86))])
            frames.append(cv2.imdecode(buf, cv2.IMREAD_COLOR))
        frames += [np.full((h, w, 3), 40, np.uint8)] * int(fps // 2)  # a cut between the shots: no face
    return frames


def make_handheld_clip(path: str | Path, fps: float = 30.0, seed: int = 0, fourcc: str = "MJPG",
                       scale_s: float = 1.0) -> Path:
    """Write the handheld clip (see the module doc) to `path` (.avi with MJPG by default)."""
    _skimage_data()
    from tests.edge.conftest import write_video

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, handheld_frames(fps, seed, scale_s=scale_s), fps=fps, fourcc=fourcc)


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("out", nargs="?", type=Path, help="output video (default: runs/bench/face_clip.mp4, "
                                                      "or runs/bench/handheld.avi for --kind handheld)")
    ap.add_argument("--kind", choices=KINDS, default="crossing", help="which clip (default: crossing)")
    ap.add_argument("--seed", type=int, default=0, help="handheld: seed of the camera's motion and noise")
    args = ap.parse_args(argv)
    if args.kind == "handheld":
        out = make_handheld_clip(args.out or Path("runs/bench/handheld.avi"), seed=args.seed)
    else:
        out = make_clip(args.out or Path("runs/bench/face_clip.mp4"))
    print(out)
    return out


if __name__ == "__main__":
    main()

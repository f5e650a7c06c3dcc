"""The benchmark clip: a real face (the astronaut photo bundled with scikit-image) crossing the frame.

The same generator the runtime's tests use (tests/edge/conftest.py), longer: the head moves across
a 640x480 frame and back, with a few frames without a face at each end, so a benchmark measures
frames with and without faces the way a desk camera sees them.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def make_clip(path: str | Path, moving: int = 120, empty: int = 10, fourcc: str = "mp4v") -> Path:
    """Write the clip (2 x `moving` frames with the face, 2 x `empty` without) to `path`."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    try:
        from skimage import data
    except ImportError as exc:  # pragma: no cover
        raise SystemExit(f"the benchmark clip needs scikit-image (dev extra), or pass --source: {exc}")
    from tests.edge.conftest import face_video_frames, write_video

    astronaut = np.ascontiguousarray(data.astronaut()[:, :, ::-1])
    frames, _, _ = face_video_frames(astronaut, (170, 40, 110, 130), n_moving=moving, n_empty=empty)
    frames = frames + frames[::-1]  # across and back: no jump when the clip loops
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, frames, fps=15.0, fourcc=fourcc)


if __name__ == "__main__":
    out = make_clip(sys.argv[1] if len(sys.argv) > 1 else "runs/bench/face_clip.mp4")
    print(out)

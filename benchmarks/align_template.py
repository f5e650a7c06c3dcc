"""Measure where FER2013's framing puts a face, for each detector: the aligner's template.

    python benchmarks/align_template.py --faces 1500 --json benchmarks/results/align_template.json

Each sampled FER2013 *Training* face is upscaled 4x (48 -> 192 px, bicubic) and framed by a
border of its own mean grey (a detector needs some context around a face), then each detector
looks for it. For every face found near the middle, the box and the keypoints are mapped back to
48-px coordinates and divided by 48. The template is the median over the found faces: the eye
midpoint, the box centre and the box side (BlazeFace), the box centre and side (Haar).
Printed as the `FACE_TEMPLATES` entries of edge/contract.py, which hold these numbers.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

UPSCALE = 4
PAD = 96  # px of the upscaled face's mean grey on every side


def framed(face48: np.ndarray) -> np.ndarray:
    face = cv2.resize(face48, (48 * UPSCALE, 48 * UPSCALE), interpolation=cv2.INTER_CUBIC)
    canvas = cv2.copyMakeBorder(face, PAD, PAD, PAD, PAD, cv2.BORDER_CONSTANT, value=int(face.mean()))
    return cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGR)


def measure(detector, faces: np.ndarray) -> np.ndarray:
    """Rows (cx, cy, side, then the keypoints x, y... if any), 48-px units divided by 48, per found face."""
    from tqdm import tqdm

    rows = []
    centre = PAD + 24 * UPSCALE
    for face in tqdm(faces, desc=detector.describe(), unit="face", leave=False):
        found = detector.detect(framed(face))
        near = [d for d in found if abs(d.box[0] + d.box[2] / 2 - centre) < 12 * UPSCALE
                and abs(d.box[1] + d.box[3] / 2 - centre) < 12 * UPSCALE]
        if not near:
            continue
        det = max(near, key=lambda d: d.score * d.box[2] * d.box[3])
        x, y, w, h = det.box
        row = [(x + w / 2 - PAD) / UPSCALE, (y + h / 2 - PAD) / UPSCALE, (w + h) / 2 / UPSCALE]
        if det.keypoints is not None:
            row += list(((det.keypoints - PAD) / UPSCALE).reshape(-1))
        rows.append(row)
    return np.asarray(rows, np.float64) / 48.0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "fer2013.npz"))
    ap.add_argument("--faces", type=int, default=1500, help="Training faces sampled.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", dest="json_path")
    args = ap.parse_args(argv)

    from fer_edge.detectors.blazeface import BlazeFaceDetector, shipped_model
    from fer_edge.detectors.haar import HaarDetector

    d = np.load(args.data)
    train = np.flatnonzero(d["usage"] == 0)
    pick = np.random.default_rng(args.seed).choice(train, size=min(args.faces, len(train)), replace=False)
    faces = d["pixels"][pick]
    report: dict = {"faces": int(len(faces)), "seed": args.seed, "split": "Training", "upscale": UPSCALE, "pad": PAD}
    bf = measure(BlazeFaceDetector(shipped_model("blazeface"), score_threshold=0.5), faces)
    kp = bf[:, 3:].reshape(len(bf), -1, 2)
    eye_mid = (kp[:, 0] + kp[:, 1]) / 2
    angle = np.degrees(np.arctan2(kp[:, 1, 1] - kp[:, 0, 1], kp[:, 1, 0] - kp[:, 0, 0]))
    report["blazeface"] = {
        "found": int(len(bf)), "eye_mid": np.median(eye_mid, 0).round(4).tolist(),
        "box_center": np.median(bf[:, :2], 0).round(4).tolist(), "box_side": round(float(np.median(bf[:, 2])), 4),
        "eye_distance": round(float(np.median(np.hypot(*(kp[:, 1] - kp[:, 0]).T))), 4),
        "eye_angle_deg_median": round(float(np.median(angle)), 2), "eye_angle_deg_std": round(float(angle.std()), 2),
        "keypoints_median": np.median(kp, 0).round(4).tolist(),
    }
    hr = measure(HaarDetector(scale=1.0, min_face=24 * UPSCALE), faces)
    report["haar"] = {"found": int(len(hr)), "box_center": np.median(hr[:, :2], 0).round(4).tolist(),
                      "box_side": round(float(np.median(hr[:, 2])), 4)}
    print(json.dumps({k: v for k, v in report.items()}, indent=1))
    b, h = report["blazeface"], report["haar"]
    print("\nFACE_TEMPLATES = {")
    print(f'    "blazeface": FaceTemplate(eye_mid=({b["eye_mid"][0]}, {b["eye_mid"][1]}), '
          f'box_center=({b["box_center"][0]}, {b["box_center"][1]}), box_side={b["box_side"]}),')
    print(f'    "haar": FaceTemplate(eye_mid=({b["eye_mid"][0]}, {b["eye_mid"][1]}), '
          f'box_center=({h["box_center"][0]}, {h["box_center"][1]}), box_side={h["box_side"]}),')
    print("}")
    if args.json_path:
        Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_path).write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()

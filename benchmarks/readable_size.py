"""How small can a face be and still be read? Accuracy of the shipped model against face size.

    python benchmarks/readable_size.py --split PublicTest --json benchmarks/results/readable_size.json

Each FER2013 face of the split is shrunk (INTER_AREA) to the size a detector box of `side` px
would give it (BlazeFace's box covers `FACE_TEMPLATES["blazeface"].box_side` of the 48-px crop),
then brought back to the model's input size (INTER_LINEAR), as the aligner does for a small face.
The default `--min-readable` is the smallest box side whose accuracy stays within 5 pp of the
full-resolution accuracy on PublicTest.
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
SPLITS = {"PublicTest": 1, "PrivateTest": 2}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "fer2013.npz"))
    ap.add_argument("--split", default="PublicTest", choices=list(SPLITS))
    ap.add_argument("--sides", default="12,16,20,24,28,32,40,48,64")
    ap.add_argument("--model", default=None)
    ap.add_argument("--json", dest="json_path")
    args = ap.parse_args(argv)

    from fer_edge.classifier import EmotionClassifier
    from fer_edge.contract import FACE_TEMPLATES
    from fer_edge.loop import resolve_model

    clf = EmotionClassifier(resolve_model(args.model))
    d = np.load(args.data)
    rows = d["usage"] == SPLITS[args.split]
    faces, labels = d["pixels"][rows], d["emotion"][rows]
    h, w = clf.input_size
    box_side = FACE_TEMPLATES["blazeface"].box_side
    full = float((clf.predict_pixels(faces).argmax(1) == labels).mean())
    out = {"split": args.split, "faces": int(len(faces)), "model": clf.model_path.name, "full_resolution": full, "sides": {}}
    print(f"{args.split}, {len(faces)} faces, {clf.model_path.name}: full resolution {100 * full:.2f} %")
    for side in (int(s) for s in args.sides.split(",")):
        crop = max(2, round(side / box_side))  # the 48-px crop's side at this box size
        small = [cv2.resize(cv2.resize(f, (crop, crop), interpolation=cv2.INTER_AREA), (w, h),
                            interpolation=cv2.INTER_LINEAR) for f in faces]
        acc = float((clf.predict_pixels(np.stack(small)).argmax(1) == labels).mean())
        out["sides"][side] = acc
        print(f"box side {side:3d} px (face crop {crop:3d} px): {100 * acc:.2f} %  ({100 * (acc - full):+.2f} pp)")
    readable = [s for s, a in out["sides"].items() if a >= full - 0.05]
    out["min_readable"] = min(readable) if readable else None
    print(f"smallest box side within 5 pp of full resolution: {out['min_readable']} px")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()

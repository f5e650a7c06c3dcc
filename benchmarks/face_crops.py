"""A folder of face crops: BlazeFace (the default) against `--detector whole-image`, the same crops, one run.

    python benchmarks/face_crops.py --json benchmarks/results/face_crops.json

Researchers often hold datasets of face crops rather than scenes. This takes `--faces` FER2013
`--split` faces, upscales each to `--size` px (a dataset's crops are rarely 48 px) and runs every crop
through the runtime's still-image path (`loop.analyse_still`, as `fer-edge --source crops/` does) with
each detector. A crop counts as found when the pipeline logs a face for it; top-1 counts a crop with
no face as wrong (end to end) and is also given on the crops found. The classifier is the shipped
default, 1 thread.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fer_edge.classifier import EmotionClassifier  # noqa: E402
from fer_edge.config import RunConfig  # noqa: E402
from fer_edge.loop import analyse_still, build_pipeline, resolve_model  # noqa: E402

SPLITS = {"Training": 0, "PublicTest": 1, "PrivateTest": 2}
DETECTORS = ("blazeface", "whole-image")


def run(kind: str, classifier: EmotionClassifier, crops: np.ndarray, labels: np.ndarray) -> dict:
    cfg = RunConfig()
    cfg.detector.kind = kind
    cfg.tracker.min_confidence = 0.0
    pipeline = build_pipeline(cfg, classifier)
    from tqdm import tqdm

    found = correct = 0
    ms = []
    for i, (crop, label) in enumerate(tqdm(list(zip(crops, labels)), desc=kind, unit="crop")):
        t0 = time.perf_counter()
        result = analyse_still(pipeline, crop, f"crop_{i}.png", index=i)
        ms.append((time.perf_counter() - t0) * 1e3)
        if result.faces:
            found += 1
            face = max(result.faces, key=lambda f: f.box[2] * f.box[3])
            correct += int(np.argmax(face.raw_probs)) == int(label)
    n = len(crops)
    return {"crops": n, "found_pct": round(100 * found / n, 2), "top1_end_to_end_pct": round(100 * correct / n, 2),
            "top1_on_found_pct": round(100 * correct / found, 2) if found else None,
            "ms_per_crop_median": round(float(np.median(ms)), 2)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "fer2013.npz"))
    ap.add_argument("--split", default="PublicTest", choices=["PublicTest", "PrivateTest"])
    ap.add_argument("--faces", type=int, default=1000)
    ap.add_argument("--size", type=int, default=96, help="crop side, px (the 48-px faces upscaled, bicubic)")
    ap.add_argument("--model", default=None, help="emotion model (default: the shipped int8 default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", dest="json_path")
    args = ap.parse_args(argv)

    data = np.load(args.data)
    pixels, emotion = data["pixels"], data["emotion"]  # an npz member is read (and decompressed) at each access
    rows = np.flatnonzero(data["usage"] == SPLITS[args.split])
    pick = np.sort(np.random.default_rng(args.seed).choice(rows, size=min(args.faces, len(rows)), replace=False))
    crops = np.stack([cv2.cvtColor(cv2.resize(pixels[r], (args.size, args.size), interpolation=cv2.INTER_CUBIC),
                                   cv2.COLOR_GRAY2BGR) for r in pick])
    labels = emotion[pick]
    classifier = EmotionClassifier(resolve_model(args.model), threads=1)
    report = {"command": "python benchmarks/face_crops.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": platform.machine(), "split": args.split, "size": args.size, "model": classifier.model_path.name,
              "detectors": {kind: run(kind, classifier, crops, labels) for kind in DETECTORS}}
    print(f"{len(crops)} FER2013 {args.split} crops at {args.size} px, {classifier.model_path.name}:")
    print("| detector | found | top-1 end to end | top-1 on found | ms / crop |\n|---|---|---|---|---|")
    for kind, r in report["detectors"].items():
        print(f"| {kind} | {r['found_pct']:.2f} % | {r['top1_end_to_end_pct']:.2f} % | {r['top1_on_found_pct']} % | "
              f"{r['ms_per_crop_median']:.2f} |")
    if args.json_path:
        Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_path).write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()

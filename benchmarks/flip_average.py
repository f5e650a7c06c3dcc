"""Mirror averaging (`fer-edge --flip-average`): what it buys and what it costs, measured in one run.

    python benchmarks/flip_average.py --json benchmarks/results/flip_average.json
    python benchmarks/flip_average.py --split PrivateTest      # report (choose on PublicTest)

For each shipped FER2013 model (int8, the runtime's own classifier, 1 thread), the plain classifier and
the mirror-averaged one (each face and its mirror image, probabilities averaged) on the same faces:

* **crops**: top-1 on the split's 48-px faces, expected calibration error (15 bins), mean top score,
  the share of faces at or above the runtime's `--min-confidence` default and how often those are
  right, the threshold benchmarks/calibration.py's rule would choose on these scores, and ms per face;
* **pipeline**: FER2013 faces of the split pasted into 640x480 scenes (benchmarks/pipeline_accuracy.py's
  frames, tilts -15/0/+15), through the default pipeline (BlazeFace, alignment, quality check):
  end-to-end accuracy and the whole frame's p50 ms.

Why: a face and its mirror are the same expression, and the models were trained on both (flip
augmentation), so the two predictions err partly independently; averaging them is the cheapest
ensemble there is. The cost is a second classifier invoke per face; detection is unchanged.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = REPO.parent / "shared" / "data"
MODELS = ("fer_default", "fer_fast")


def _pipeline_accuracy():
    """benchmarks/pipeline_accuracy.py, imported from this folder (its frames and pipeline runner)."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    import pipeline_accuracy

    return pipeline_accuracy


def crop_figures(classifier, x: np.ndarray, y: np.ndarray, min_confidence: float) -> dict:
    from fer_convert.calibrate import ece, uncertain_threshold

    start = time.perf_counter()
    probs = classifier.predict_pixels(x)
    ms = (time.perf_counter() - start) * 1e3 / len(x)
    top, right = probs.max(1), probs.argmax(1) == y
    sure = top >= min_confidence
    return {"top1_pct": round(100 * float(right.mean()), 2), "ece": round(ece(probs, y), 4),
            "mean_top_score": round(float(top.mean()), 3),
            "at_or_above_min_confidence_pct": round(100 * float(sure.mean()), 2),
            "right_when_at_or_above_pct": round(100 * float(right[sure].mean()), 2) if sure.any() else None,
            # what benchmarks/calibration.py's rule (faces just below are right < 50 %) would choose on these scores
            "rule_min_confidence": uncertain_threshold(top, right)["threshold"],
            "ms_per_face": round(ms, 3)}


def pipeline_figures(P, classifier, frames: Path, truths: list) -> dict:
    records = P.run_config("blazeface", classifier, frames, truths)
    s = P.summarise(records)
    return {"frames": s["faces"], "end_to_end_pct": round(100 * s["accuracy"], 2),
            "on_found_pct": round(100 * s["accuracy_on_found"], 2),
            "frame_ms_p50": round(float(np.median([r["frame_ms"] for r in records])), 2)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=SHARED / "fer2013.npz")
    ap.add_argument("--split", default="PublicTest", choices=["PublicTest", "PrivateTest"])
    ap.add_argument("--models", default=",".join(MODELS), help="shipped model names in models/ (int8 files)")
    ap.add_argument("--faces", type=int, default=300, help="faces per tilt in the pipeline frames (0: crops only)")
    ap.add_argument("--frames-dir", type=Path, default=REPO / "runs" / "bench" / "pipeline_frames")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", dest="json_path", type=Path)
    args = ap.parse_args(argv)
    if not args.data.is_file():
        sys.exit(f"error: {args.data}: no such file (the FER2013 npz, ../shared/data)")

    from fer_edge.classifier import EmotionClassifier
    from fer_edge.config import TrackerConfig
    from fer_train.data import load_npz

    split = load_npz(args.data).split(args.split)
    min_confidence = TrackerConfig().min_confidence
    P = frames = truths = None
    if args.faces:
        P = _pipeline_accuracy()
        tilts = [-15.0, 0.0, 15.0]
        frames = args.frames_dir / f"fer_{args.split}_{args.faces}_{args.seed}_{'_'.join(f'{t:+.0f}' for t in tilts)}"
        truths = P.make_fer_frames(frames, args.data, args.split, args.faces, tilts, args.seed)
    report: dict = {"command": "python benchmarks/flip_average.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                    "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}", "split": args.split,
                    "faces": int(len(split.y)), "min_confidence": min_confidence, "models": {}}
    for name in args.models.split(","):
        path = REPO / "models" / f"{name}_int8.tflite"
        row = {}
        for mode, flip in (("plain", False), ("mirror_averaged", True)):
            clf = EmotionClassifier(path, threads=1, flip_average=flip)
            row[mode] = {"crops": crop_figures(clf, split.x, split.y, min_confidence)}
            if P is not None:
                row[mode]["pipeline"] = pipeline_figures(P, clf, frames, truths)
        report["models"][name] = row
        for mode in ("plain", "mirror_averaged"):
            c, p = row[mode]["crops"], row[mode].get("pipeline")
            print(f"{name:12s} {mode:16s} crops {c['top1_pct']:.2f} % (ECE {c['ece']:.3f}, mean top {c['mean_top_score']:.3f}, "
                  f">= {min_confidence}: {c['at_or_above_min_confidence_pct']:.1f} % of faces, right "
                  f"{c['right_when_at_or_above_pct']} %; the rule's threshold here {c['rule_min_confidence']}), "
                  f"{c['ms_per_face']:.2f} ms/face"
                  + (f"; pipeline end to end {p['end_to_end_pct']:.2f} % (on found {p['on_found_pct']:.2f} %), "
                     f"frame p50 {p['frame_ms_p50']:.1f} ms" if p else ""))
    if args.json_path:
        args.json_path.parent.mkdir(parents=True, exist_ok=True)
        args.json_path.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()

"""Should a candidate model replace a shipped one? The shipping rule, measured in one run.

    python benchmarks/ship_check.py runs/X/X_int8.tflite --shipped models/fer_default_int8.tflite --check

A candidate ships only when, on PublicTest (the split every choice is made on):
1. its top-1 on the 48-px crops is higher than the shipped model's (for FER+ models: on Microsoft's
   majority protocol, the figure the FER+ literature reports), and
2. the whole pipeline does not get worse with it: FER2013 PublicTest faces pasted into 640x480 scenes
   (benchmarks/pipeline_accuracy.py's frames: upscaled, tilted, real backgrounds, camera noise), run
   through the runtime's default pipeline (BlazeFace, alignment, quality check), end-to-end accuracy
   at least the shipped model's minus `--pipeline-tolerance` percentage points (default 0).

The pipeline figure is measured on 1,000 PublicTest faces per tilt (3,000 frames). The face stage does not depend
on the classifier: it runs once per frames folder (and again when its code changes), its crops are kept beside the
frames, and each model classifies them (benchmarks/pipeline_crops.py: the same figures as running the pipeline per
model, tested; about 2 minutes instead of 12). Both models see the same faces, so the difference is decided by
the faces where exactly one of them is right; with 300 per tilt that difference had a standard error of about
1 pp (session 15: a candidate kept for -1.11 pp).
The report gives the paired counts and that standard error beside the verdict, so a reader sees how sure it is.

Both models go through the runtime's own classifier (fer_edge.classifier, 1 thread) on the same faces
and frames in the same run. PrivateTest is not touched: it is reported once, for the model that ships.
Writes a JSON report (`--json`); `--check` exits 1 when the verdict is "keep the shipped model".
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = REPO.parent / "shared" / "data"


@functools.cache
def _pipeline_accuracy():
    """benchmarks/pipeline_accuracy.py as a module, loaded once."""
    spec = importlib.util.spec_from_file_location("pipeline_accuracy", HERE / "pipeline_accuracy.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["pipeline_accuracy"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def crop_figures(model: Path, data: Path, votes: Path | None) -> dict:
    """PublicTest top-1 on the 48-px crops through the edge classifier (and the FER+ majority protocol's)."""
    from fer_convert import gate as gate_mod
    from fer_edge import contract
    from fer_edge.classifier import EmotionClassifier
    from fer_train.data import load_training_data

    classifier = EmotionClassifier(model, threads=1)
    labels = list(classifier.labels)
    ferplus = len(labels) == len(contract.FERPLUS_EMOTIONS)
    dataset = load_training_data(data, votes if ferplus else None, False)
    g = gate_mod.gate_split(dataset, "public", None, 0, classifier.input_size)
    probs = classifier.predict_pixels(g.x, progress=False)
    out = {"labels": len(labels), "faces": int(len(g.y)), "top1": round(gate_mod.top1(g.y, probs), 3)}
    majority = gate_mod.ferplus_majority_figures(g.y, g.ferplus_majority, top1=probs)
    if majority is not None:
        out["ferplus_majority"] = {"top1": majority["top1"], "faces": majority["n"]}
    return out


@functools.cache
def _pipeline_crops():
    """benchmarks/pipeline_crops.py as a module (it imports pipeline_accuracy from this folder)."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    _pipeline_accuracy()
    spec = importlib.util.spec_from_file_location("pipeline_crops", HERE / "pipeline_crops.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["pipeline_crops"] = module
    spec.loader.exec_module(module)
    return module


def pipeline_figures(model: Path, frames_dir: Path, truths: list) -> tuple[dict, list[bool]]:
    """End-to-end accuracy and found-rate of the default pipeline with this classifier, same frames; and
    per frame whether the face was found and named right (for the paired comparison).

    The face stage does not depend on the classifier, so it runs once per frames folder and face-stage
    version; its crops are kept (benchmarks/pipeline_crops.py) and each model classifies them: the
    figures of running the whole pipeline with each model (tests/benchmarks/test_pipeline_crops.py)."""
    from fer_edge.classifier import EmotionClassifier

    rec = _pipeline_crops().cached_crops(frames_dir, truths, model)
    n = rec["n_frames"]
    correct = (EmotionClassifier(model, threads=1).predict_pixels(rec["crops"], progress=False).argmax(axis=1)
               == rec["labels"]) if len(rec["labels"]) else np.zeros(0, bool)
    right = [False] * n
    for frame, ok in zip(rec["frames"], correct):
        right[int(frame)] = bool(ok)
    found = len(rec["labels"])
    return {"frames": n, "found_pct": round(100 * found / n, 2) if n else 0.0,
            "end_to_end_pct": round(100 * sum(right) / n, 2) if n else 0.0,
            "on_found_pct": round(100 * float(correct.mean()), 2) if found else 0.0}, right


def paired(candidate_right: list[bool], shipped_right: list[bool]) -> dict:
    """The two models on the same frames: where only one is right, and the standard error of the difference
    in end-to-end accuracy (percentage points) that those discordant frames imply."""
    if len(candidate_right) != len(shipped_right):
        raise ValueError("the two models were not run on the same frames")
    n = len(candidate_right)
    only_c = sum(c and not s for c, s in zip(candidate_right, shipped_right))
    only_s = sum(s and not c for c, s in zip(candidate_right, shipped_right))
    diff = (only_c - only_s) / n if n else 0.0
    variance = ((only_c + only_s) / n - diff ** 2) / n if n else 0.0
    return {"frames": n, "only_candidate_right": only_c, "only_shipped_right": only_s,
            "difference_pp": round(100 * diff, 2), "standard_error_pp": round(100 * max(variance, 0.0) ** 0.5, 2)}


def verdict(candidate: dict, shipped: dict, tolerance_pp: float) -> dict:
    """The shipping rule on the two models' figures; reasons name what failed."""
    key = "ferplus_majority" if "ferplus_majority" in candidate["crops"] and "ferplus_majority" in shipped["crops"] else None
    c_crop = candidate["crops"][key]["top1"] if key else candidate["crops"]["top1"]
    s_crop = shipped["crops"][key]["top1"] if key else shipped["crops"]["top1"]
    c_pipe, s_pipe = candidate["pipeline"]["end_to_end_pct"], shipped["pipeline"]["end_to_end_pct"]
    reasons = []
    if not c_crop > s_crop:
        reasons.append(f"PublicTest crops{' (FER+ majority protocol)' if key else ''}: "
                       f"{c_crop:.2f} % is not above the shipped {s_crop:.2f} %")
    if c_pipe < s_pipe - tolerance_pp:
        reasons.append(f"whole pipeline: end to end {c_pipe:.2f} % is below the shipped {s_pipe:.2f} %"
                       + (f" - {tolerance_pp} pp" if tolerance_pp else ""))
    return {"ship": not reasons, "reasons": reasons, "crop_metric": key or "top1",
            "crops_pp": round(c_crop - s_crop, 2), "pipeline_pp": round(c_pipe - s_pipe, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("candidate", type=Path, help="the candidate's converted .tflite (with its card beside it)")
    ap.add_argument("--shipped", type=Path, default=REPO / "models" / "fer_default_int8.tflite")
    ap.add_argument("--data", type=Path, default=SHARED / "fer2013.npz")
    ap.add_argument("--ferplus-votes", type=Path, default=SHARED / "ferplus_votes.npz", help="for 8-label models")
    ap.add_argument("--faces", type=int, default=1000, help="PublicTest faces per tilt in the pipeline frames")
    ap.add_argument("--tilts", default="-15,0,15")
    ap.add_argument("--pipeline-tolerance", type=float, default=0.0, metavar="PP",
                    help="how far below the shipped model's end-to-end accuracy the candidate may be")
    ap.add_argument("--frames-dir", type=Path, default=REPO / "runs" / "bench" / "pipeline_frames")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", dest="json_path", type=Path)
    ap.add_argument("--check", action="store_true", help="exit 1 when the shipped model stays")
    args = ap.parse_args(argv)
    for path in (args.candidate, args.shipped, args.data):
        if not path.is_file():
            print(f"error: {path}: no such file", file=sys.stderr)
            return 2
    from fer_edge.classifier import EmotionClassifier

    label_sets = {tuple(EmotionClassifier(m, threads=1).labels) for m in (args.candidate, args.shipped)}
    if len(label_sets) != 1:
        print("error: the candidate and the shipped model have different label sets", file=sys.stderr)
        return 2
    P = _pipeline_accuracy()
    tilts = [float(t) for t in args.tilts.split(",")]
    frames = args.frames_dir / f"fer_PublicTest_{args.faces}_{args.seed}_{'_'.join(f'{t:+.0f}' for t in tilts)}"
    truths = P.make_fer_frames(frames, args.data, "PublicTest", args.faces, tilts, args.seed)
    report = {"command": "python benchmarks/ship_check.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    right = {}
    for name, model in (("candidate", args.candidate), ("shipped", args.shipped)):
        pipeline, right[name] = pipeline_figures(model, frames, truths)
        report[name] = {"model": str(model), "crops": crop_figures(model, args.data, args.ferplus_votes),
                        "pipeline": pipeline}
    report["verdict"] = verdict(report["candidate"], report["shipped"], args.pipeline_tolerance)
    report["verdict"]["pipeline_paired"] = p = paired(right["candidate"], right["shipped"])
    for name in ("candidate", "shipped"):
        r = report[name]
        crops = r["crops"]
        print(f"{name:9s} {Path(r['model']).name}: PublicTest crops top-1 {crops['top1']:.2f} % ({crops['faces']} faces)"
              + (f", FER+ majority protocol {crops['ferplus_majority']['top1']:.2f} %" if "ferplus_majority" in crops else "")
              + f"; pipeline end to end {r['pipeline']['end_to_end_pct']:.2f} % (found {r['pipeline']['found_pct']:.2f} %, "
              f"on found {r['pipeline']['on_found_pct']:.2f} %, {r['pipeline']['frames']} frames)")
    v = report["verdict"]
    print(f"pipeline, same {p['frames']} frames: only the candidate right on {p['only_candidate_right']}, only the shipped "
          f"model on {p['only_shipped_right']}: {p['difference_pp']:+.2f} pp (standard error {p['standard_error_pp']:.2f} pp)")
    print("verdict: " + ("SHIP the candidate" if v["ship"] else "KEEP the shipped model: " + "; ".join(v["reasons"])))
    if args.json_path:
        args.json_path.parent.mkdir(parents=True, exist_ok=True)
        args.json_path.write_text(json.dumps(report, indent=1) + "\n")
    return 1 if args.check and not v["ship"] else 0


if __name__ == "__main__":
    sys.exit(main())

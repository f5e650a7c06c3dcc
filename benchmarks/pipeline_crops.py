"""Many models on the faces the pipeline really hands the classifier, in seconds each.

    python benchmarks/pipeline_crops.py models/fer_default_int8.tflite runs/edgenet_s-recipe-fast ... \
        --json benchmarks/results/pipeline_crops.json

The default pipeline's face stage (BlazeFace, alignment; tracker reset every frame) does not depend on
the classifier, so it runs once over ship_check's PublicTest frames (benchmarks/pipeline_accuracy.py's
FER2013 faces in scenes, 1,000 per tilt) and the aligned crops of the faces it found are kept
(`<frames>/pipeline_crops.npz`). Each model then reads those crops: a .tflite through the runtime's own
classifier (int8 quantisation included), a run folder or .keras file through Keras (float). Per model:
top-1 on the 48-px PublicTest crops, on the faces the pipeline found, and end to end (a missed face is
wrong). For a .tflite the end-to-end figure is the one ship_check's pipeline run gives
(tests/benchmarks/test_pipeline_crops.py).

Why: every model so far, whatever its crop accuracy (67-71 %), names about 65 % of the faces the pipeline
finds; a model is shipped on the pipeline figure, so its gap is what training has to close.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = REPO.parent / "shared" / "data"
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def record_crops(frames_dir: Path, truths: list, classifier_path: Path) -> dict:
    """Run the default pipeline over the frames once; the aligned pixels of each true face it found."""
    import cv2

    import pipeline_accuracy as P
    from fer_edge.classifier import EmotionClassifier
    from fer_edge.records import Frame
    from fer_train.scenes import nearest

    classifier = EmotionClassifier(classifier_path, threads=1)
    pipeline = P.pipeline_for("blazeface", classifier)
    handed: list[np.ndarray] = []

    def prepare(image, box, keypoints):  # what Pipeline.prepare does, keeping the pixels
        pixels = pipeline.aligner(image, box, keypoints)
        handed.append(pixels)
        return classifier.prepare_pixels(pixels)

    pipeline.prepare = prepare
    crops, labels, frames = [], [], []
    for i, t in enumerate(truths):
        image = cv2.imread(str(frames_dir / t.file), cv2.IMREAD_COLOR)
        pipeline.tracker.reset()
        pipeline.smoother.forget(list(range(1, pipeline.tracker.next_id + 1)))
        handed.clear()
        result = pipeline.process(Frame(i, image, 0.0, t.file), {})
        k = nearest([face.box for face in result.faces], t.centre, t.side)
        if k is not None:  # process() prepares the faces in the order it returns them
            crops.append(np.asarray(handed[k], np.float32))
            labels.append(t.label)
            frames.append(i)
    pipeline.detector.close()
    return {"crops": np.stack(crops) if crops else np.zeros((0, *classifier.input_size), np.float32),
            "labels": np.asarray(labels, np.int64), "frames": np.asarray(frames, np.int64), "n_frames": len(truths)}


#: what the recorded crops depend on besides the frames: the face stage's code, its defaults and its detector
FACE_STAGE_FILES = ("edge/align.py", "edge/contract.py", "edge/config.py", "edge/loop.py", "edge/tracker.py",
                    "edge/detectors/__init__.py", "edge/detectors/base.py", "edge/detectors/blazeface.py",
                    "models/face_detection/face_detection_short_range.tflite", "benchmarks/pipeline_accuracy.py")


def face_stage_key(input_size) -> str:
    """sha256 over the face stage's files and the input size: recorded crops are reused only while it holds."""
    import hashlib

    h = hashlib.sha256(repr(tuple(input_size)).encode())
    for name in FACE_STAGE_FILES:
        h.update(name.encode())
        h.update((REPO / name).read_bytes())
    return h.hexdigest()


def cached_crops(frames_dir: Path, truths: list, classifier_path: Path) -> dict:
    """record_crops, kept beside the frames, and recorded again when the frames or the face stage changed."""
    from fer_edge.classifier import EmotionClassifier

    key = face_stage_key(EmotionClassifier(classifier_path, threads=1).input_size)
    path = frames_dir / "pipeline_crops.npz"
    if path.is_file():
        with np.load(path) as z:
            if int(z["n_frames"]) == len(truths) and "face_stage" in z and str(z["face_stage"]) == key:
                return {k: z[k] for k in ("crops", "labels", "frames")} | {"n_frames": int(z["n_frames"])}
    rec = record_crops(frames_dir, truths, classifier_path)
    np.savez_compressed(path, **rec, face_stage=np.asarray(key))
    return rec


def predictor(model: str):
    """probabilities for (N, H, W) raw pixels: the runtime's classifier for a .tflite, Keras otherwise."""
    if str(model).endswith(".tflite"):
        from fer_edge.classifier import EmotionClassifier

        classifier = EmotionClassifier(model, threads=1)
        return lambda x: classifier.predict_pixels(x, progress=False)
    from fer_train.scoring import load_keras_model, predict_probs

    keras_model = load_keras_model(model)
    return lambda x: predict_probs(keras_model, x)


def score(model: str, rec: dict, public_x: np.ndarray, public_y: np.ndarray) -> dict:
    predict = predictor(model)
    right = predict(rec["crops"]).argmax(axis=1) == rec["labels"] if len(rec["labels"]) else np.zeros(0, bool)
    crops = float((predict(public_x).argmax(axis=1) == public_y).mean())
    on_found = float(right.mean()) if len(right) else 0.0
    return {"model": str(model), "crops_pct": round(100 * crops, 2), "on_found_pct": round(100 * on_found, 2),
            "end_to_end_pct": round(100 * right.sum() / rec["n_frames"], 2),
            "gap_pp": round(100 * (on_found - crops), 2)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help=".tflite files (with cards), run folders or .keras files")
    ap.add_argument("--data", type=Path, default=SHARED / "fer2013.npz")
    ap.add_argument("--faces", type=int, default=1000, help="PublicTest faces per tilt (ship_check's frames)")
    ap.add_argument("--tilts", default="-15,0,15")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frames-dir", type=Path, default=REPO / "runs" / "bench" / "pipeline_frames")
    ap.add_argument("--recorder", type=Path, default=REPO / "models" / "fer_default_int8.tflite",
                    help="the classifier the pipeline is built with while recording (only its input size matters)")
    ap.add_argument("--json", dest="json_path", type=Path)
    args = ap.parse_args(argv)
    missing = [m for m in args.models if not Path(m).exists()]
    if missing:
        ap.error(f"no such model file or run folder: {', '.join(missing)}")
    import pipeline_accuracy as P

    tilts = [float(t) for t in args.tilts.split(",")]
    frames = args.frames_dir / f"fer_PublicTest_{args.faces}_{args.seed}_{'_'.join(f'{t:+.0f}' for t in tilts)}"
    truths = P.make_fer_frames(frames, args.data, "PublicTest", args.faces, tilts, args.seed)
    rec = cached_crops(frames, truths, args.recorder)
    with np.load(args.data) as d:
        public = d["usage"] == P.SPLITS["PublicTest"]
        public_x, public_y = d["pixels"][public].astype(np.float32), d["emotion"][public]
    print(f"pipeline: found {len(rec['labels'])} of {rec['n_frames']} faces ({frames.name})")
    print(f"{'model':60s} {'crops %':>8s} {'on found %':>10s} {'end to end %':>12s} {'gap pp':>7s}")
    rows = []
    for model in args.models:
        r = score(model, rec, public_x, public_y)
        rows.append(r)
        print(f"{model:60s} {r['crops_pct']:8.2f} {r['on_found_pct']:10.2f} {r['end_to_end_pct']:12.2f} {r['gap_pp']:+7.2f}")
    report = {"command": "python benchmarks/pipeline_crops.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "frames": frames.name, "found": int(len(rec["labels"])), "n_frames": rec["n_frames"], "models": rows}
    if args.json_path:
        args.json_path.parent.mkdir(parents=True, exist_ok=True)
        args.json_path.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()

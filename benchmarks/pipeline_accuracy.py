"""Whole-pipeline accuracy: does the runtime find the face and name the emotion, frame by frame?

    python benchmarks/pipeline_accuracy.py --split PrivateTest --faces 300 \
        --json benchmarks/results/pipeline_accuracy.json --plot benchmarks/results/pipeline_accuracy.png

Two grids, each run through the real pipeline (`loop.build_pipeline`: detector, duplicate
suppression, tracker, aligner, classifier, quality check), reading its frames back from a folder
of PNG files the way `fer-edge --source folder/` does, tracker and smoother reset for every frame:

1. **FER2013 faces in scenes.** Labelled faces of one split (PublicTest to tune, PrivateTest to
   report), upscaled to 60-240 px, tilted by 0, +-15 or +-30 degrees, pasted with a feathered edge
   at a random place into a 640x480 crop of a real photo (scikit-image's and matplotlib's sample
   images), with random brightness, contrast, light blur and sensor noise. A face counts as found
   when a detection's box centre lies within half the face's side of the true centre; end-to-end
   accuracy counts a missed face as wrong. Beware the trap: an upscaled 48-px crop is harder to
   detect than a real photo of a face, so found-rate and accuracy-on-found are reported apart.
2. **Real photos.** The real face photos that ship offline inside wheels (scikit-image's
   astronaut, matplotlib's Grace Hopper), scaled so the face is 60-240 px and rotated by
   0..+-30 degrees, placed into 640x480 frames. No emotion labels exist for them: the grid reports
   found-rate, and how often the label agrees with the one the upright, largest face gets.

Configurations (a detector x a way to cut the face out):
  haar-box0.1     today's (until this benchmark) default: Haar, the box grown by 10 %
  haar            Haar, the box cut to FER2013's framing (contract.FACE_TEMPLATES["haar"])
  blazeface-box   BlazeFace short range, its box cut to FER2013's framing, no rotation
  blazeface       BlazeFace short range + alignment (the default)
  blazeface-full  BlazeFace full range + alignment

All configurations see the same frames in the same run. Stage times are measured as the pipeline
runs (1 interpreter thread): detect and whole-frame p50 in ms.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
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
from fer_edge.loop import build_pipeline  # noqa: E402
from fer_edge.records import Frame  # noqa: E402
from fer_train.scenes import (  # noqa: E402,F401 - the scene makers, shared with runtime_views
    FRAME_H, FRAME_W, PRINT_BORDER, background_images, camera_look, nearest, paste, scene,
)

SPLITS = {"Training": 0, "PublicTest": 1, "PrivateTest": 2}
CONFIGS = {  # name -> (detector kind, align, legacy box crop)
    "haar-box0.1": ("haar", False, True),
    "haar": ("haar", False, False),
    "blazeface-box": ("blazeface", False, False),
    "blazeface": ("blazeface", True, False),
    "blazeface-full": ("blazeface-full", True, False),
}


@dataclasses.dataclass
class Truth:
    file: str
    centre: tuple[float, float]
    side: float
    tilt: float
    label: int  # -1: unknown (real photos)
    group: str  # grid cell: tilt (FER faces) or photo name


def cached(out_dir: Path, params: dict, make) -> list[Truth]:
    """The frames in `out_dir` if a manifest there says they were made with `params`, else make them."""
    manifest = out_dir / "manifest.json"
    if manifest.is_file():
        saved = json.loads(manifest.read_text())
        if saved.get("params") == params:
            return [Truth(t["file"], tuple(t["centre"]), t["side"], t["tilt"], t["label"], t["group"])
                    for t in saved["truths"]]
    truths = make()
    manifest.write_text(json.dumps({"params": params, "truths": [dataclasses.asdict(t) for t in truths]}))
    return truths


def make_fer_frames(out_dir: Path, data_path: Path, split: str, faces: int, tilts: list[float], seed: int,
                    sizes: tuple[int, int] = (60, 240)) -> list[Truth]:
    """`faces` random faces of `split` per tilt, each in its own frame, written as PNG (cached)."""
    params = {"kind": "fer", "split": split, "faces": faces, "tilts": tilts, "seed": seed, "sizes": list(sizes),
              "data": str(data_path), "border": PRINT_BORDER}
    return cached(out_dir, params, lambda: _make_fer_frames(out_dir, data_path, split, faces, tilts, seed, sizes))


def _make_fer_frames(out_dir, data_path, split, faces, tilts, seed, sizes) -> list[Truth]:
    d = np.load(data_path)
    pixels, emotions = d["pixels"], d["emotion"]  # read once: d["pixels"][row] would read the whole array from the npz each time
    rows = np.flatnonzero(d["usage"] == SPLITS[split])
    rng = np.random.default_rng(seed)
    pick = rng.choice(rows, size=min(faces, len(rows)), replace=False)
    backgrounds = background_images()
    out_dir.mkdir(parents=True, exist_ok=True)
    truths = []
    for tilt in tilts:
        for i, row in enumerate(pick):
            side = int(rng.integers(sizes[0], sizes[1] + 1))
            reach = side * 0.75  # the rotated square's half diagonal, and a little more
            cx = rng.uniform(reach, FRAME_W - reach)
            cy = rng.uniform(reach, FRAME_H - reach)
            frame = scene(backgrounds, rng)
            paste(frame, pixels[row], (cx, cy), side, tilt)
            frame = camera_look(frame, rng)
            name = f"fer_{split}_t{tilt:+03.0f}_{i:04d}.png"
            cv2.imwrite(str(out_dir / name), frame)
            truths.append(Truth(name, (cx, cy), side, tilt, int(emotions[row]), f"tilt {tilt:+.0f}"))
    return truths


def real_photos() -> dict[str, tuple[np.ndarray, tuple[int, int, int, int]]]:
    """name -> (BGR photo, face box x, y, w, h) for the real face photos that ship in wheels.

    The boxes are BlazeFace's (short range) on each upright photo, checked by eye; a face's size is that box's side.
    """
    from skimage import data

    photos = {"astronaut": (np.ascontiguousarray(data.astronaut()[:, :, ::-1]), (178, 81, 94, 94))}
    try:
        import matplotlib.cbook

        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
            buf = np.frombuffer(fh.read(), np.uint8)
        photos["grace_hopper"] = (cv2.imdecode(buf, cv2.IMREAD_COLOR), (166, 143, 200, 200))
    except Exception:  # noqa: BLE001 - matplotlib absent or without sample data
        pass
    return photos


def make_photo_frames(out_dir: Path, tilts: list[float], sizes: list[int], seed: int, repeats: int = 1) -> list[Truth]:
    """Each real photo, scaled so its face is `size` px and rotated by `tilt`, laid at `repeats` random
    places over 640x480 scenes (the same backgrounds as the FER grid), with the camera look (cached)."""
    params = {"kind": "photos", "tilts": tilts, "sizes": sizes, "seed": seed, "repeats": repeats}
    return cached(out_dir, params, lambda: _make_photo_frames(out_dir, tilts, sizes, seed, repeats))


def _make_photo_frames(out_dir: Path, tilts: list[float], sizes: list[int], seed: int, repeats: int = 1) -> list[Truth]:
    rng = np.random.default_rng(seed)
    backgrounds = background_images()
    out_dir.mkdir(parents=True, exist_ok=True)
    truths = []
    for name, (photo, (x, y, w, h)) in real_photos().items():
        face_side = (w + h) / 2.0
        fcx, fcy = x + w / 2.0, y + h / 2.0
        opaque = np.full(photo.shape[:2], 255, np.uint8)
        for size, tilt, rep in itertools.product(sizes, tilts, range(repeats)):
            s = size / face_side
            reach = size * 0.75
            cx = rng.uniform(reach, FRAME_W - reach)
            cy = rng.uniform(reach, FRAME_H - reach)
            m = cv2.getRotationMatrix2D((fcx, fcy), tilt, s)
            m[:, 2] += (cx - fcx, cy - fcy)
            warped = cv2.warpAffine(photo, m, (FRAME_W, FRAME_H), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
            alpha = cv2.warpAffine(opaque, m, (FRAME_W, FRAME_H), flags=cv2.INTER_LINEAR)[..., None] / 255.0
            frame = (scene(backgrounds, rng) * (1 - alpha) + warped * alpha).astype(np.uint8)
            frame = camera_look(frame, rng)
            file = f"photo_{name}_s{size:03d}_t{tilt:+03.0f}_{rep}.png"
            cv2.imwrite(str(out_dir / file), frame)
            truths.append(Truth(file, (cx, cy), size, tilt, -1, name))
    return truths


# --------------------------------------------------------------------------- running
def pipeline_for(config: str, classifier: EmotionClassifier):
    kind, align, legacy = CONFIGS[config]
    cfg = RunConfig()
    cfg.detector.kind = kind
    cfg.detector.align = align
    cfg.detector.full_scan_every = 1
    cfg.tracker.min_confidence = 0.0
    pipeline = build_pipeline(cfg, classifier)
    if legacy:
        pipeline.aligner = None  # the plain box crop with CROP_MARGIN
    return pipeline


def run_config(config: str, classifier: EmotionClassifier, folder: Path, truths: list[Truth]) -> list[dict]:
    """Every frame through a fresh-state pipeline; one record per true face."""
    pipeline = pipeline_for(config, classifier)
    records = []
    for i, t in enumerate(truths):
        image = cv2.imread(str(folder / t.file), cv2.IMREAD_COLOR)
        pipeline.tracker.reset()
        pipeline.smoother.reset() if hasattr(pipeline.smoother, "reset") else pipeline.smoother.forget(
            list(range(1, pipeline.tracker.next_id + 1)))
        stage_ms: dict[str, float] = {}
        start = time.perf_counter()
        result = pipeline.process(Frame(i, image, 0.0, t.file), stage_ms)
        total_ms = (time.perf_counter() - start) * 1e3
        k = nearest([f.box for f in result.faces], t.centre, t.side)
        face = None if k is None else result.faces[k]
        rec = {"file": t.file, "group": t.group, "tilt": t.tilt, "side": t.side, "label": t.label,
               "found": face is not None, "extra_faces": len(result.faces) - (face is not None),
               "detect_ms": stage_ms.get("detect", 0.0), "frame_ms": total_ms}
        if face is not None:
            rec.update(pred=int(np.argmax(face.raw_probs)), score=float(np.max(face.raw_probs)),
                       reason=face.reason, yaw=None)
            if face.keypoints is not None:
                from fer_edge.align import yaw_estimate

                rec["yaw"] = yaw_estimate(face.keypoints)
        records.append(rec)
    pipeline.detector.close()
    return records


def summarise(records: list[dict], photo: bool = False) -> dict:
    n = len(records)
    found = [r for r in records if r["found"]]
    out = {"faces": n, "found_rate": len(found) / n if n else 0.0,
           "spurious_per_frame": sum(r["extra_faces"] for r in records) / n if n else 0.0}
    if not photo:
        correct = sum(1 for r in found if r["pred"] == r["label"])
        out["accuracy"] = correct / n if n else 0.0  # a missed face is wrong
        out["accuracy_on_found"] = correct / len(found) if found else 0.0
    return out


def photo_agreement(records: list[dict]) -> dict:
    """Per photo: the share of found faces whose label equals the upright, largest face's label."""
    out = {}
    for name in sorted({r["group"] for r in records}):
        rs = [r for r in records if r["group"] == name and r["found"]]
        ref = [r for r in rs if r["tilt"] == 0]
        if not ref:
            continue
        ref_label = max(ref, key=lambda r: r["side"])["pred"]
        out[name] = {"reference_label": ref_label, "agreement": sum(r["pred"] == ref_label for r in rs) / len(rs)}
    return out


def table(results: dict, key_groups: list[str], photo: bool = False) -> str:
    cols = ["found %"] if photo else ["found %", "acc %", "acc on found %"]
    lines = ["| config | group | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for config, per_group in results.items():
        for g in key_groups + ["all"]:
            s = per_group.get(g)
            if s is None:
                continue
            vals = [f"{100 * s['found_rate']:.1f}"]
            if not photo:
                vals += [f"{100 * s['accuracy']:.1f}", f"{100 * s['accuracy_on_found']:.1f}"]
            lines.append(f"| {config} | {g} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fer = report["fer_grid"]
    tilts = report["tilts"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for config, per_group in fer.items():
        xs = [t for t in tilts if f"tilt {t:+.0f}" in per_group]
        axes[0].plot(xs, [100 * per_group[f"tilt {t:+.0f}"]["found_rate"] for t in xs], marker="o", label=config)
        axes[1].plot(xs, [100 * per_group[f"tilt {t:+.0f}"]["accuracy"] for t in xs], marker="o", label=config)
    for config, per_group in report["photo_grid"].items():
        sizes = sorted({int(k.split()[1]) for k in per_group if k.startswith("size ")})
        axes[2].plot(sizes, [100 * per_group[f"size {s}"]["found_rate"] for s in sizes], marker="o", label=config)
    axes[0].set(title=f"FER2013 {report['split']} faces in scenes: found", xlabel="tilt (degrees)", ylabel="%")
    axes[1].set(title="end-to-end accuracy (missed = wrong)", xlabel="tilt (degrees)", ylabel="%")
    axes[2].set(title="real photos, 0..+-30 degrees: found", xlabel="face size (px)", ylabel="%")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "fer2013.npz"))
    ap.add_argument("--split", default="PublicTest", choices=["PublicTest", "PrivateTest"],
                    help="FER2013 split of the faces: tune on PublicTest, report PrivateTest.")
    ap.add_argument("--faces", type=int, default=300, help="FER2013 faces per tilt.")
    ap.add_argument("--tilts", default="-30,-15,0,15,30")
    ap.add_argument("--photo-sizes", default="60,80,100,140,180,240")
    ap.add_argument("--photo-tilts", default="-30,-20,-10,0,10,20,30")
    ap.add_argument("--photo-repeats", type=int, default=3, help="random placements per photo, size and tilt")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--model", default=None, help="Emotion model (default: the shipped int8 default).")
    ap.add_argument("--frames-dir", default=str(REPO / "runs" / "bench" / "pipeline_frames"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", dest="json_path")
    ap.add_argument("--plot", dest="plot_path")
    args = ap.parse_args(argv)

    from fer_edge.loop import resolve_model
    from tqdm import tqdm

    tilts = [float(t) for t in args.tilts.split(",")]
    classifier = EmotionClassifier(resolve_model(args.model), threads=1)
    fer_dir = Path(args.frames_dir) / f"fer_{args.split}_{args.faces}_{args.seed}"
    photo_dir = Path(args.frames_dir) / f"photos_{args.seed}"
    truths = make_fer_frames(fer_dir, Path(args.data), args.split, args.faces, tilts, args.seed)
    photos = make_photo_frames(photo_dir, [float(t) for t in args.photo_tilts.split(",")],
                               [int(s) for s in args.photo_sizes.split(",")], args.seed, args.photo_repeats)
    report: dict = {"split": args.split, "faces_per_tilt": args.faces, "tilts": tilts, "seed": args.seed,
                    "model": classifier.model_path.name, "machine": platform.machine(),
                    "command": "python benchmarks/pipeline_accuracy.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                    "fer_grid": {}, "photo_grid": {}, "photo_agreement": {}, "speed_ms": {}, "records": {}}
    for config in tqdm(args.configs.split(","), desc="configs", unit="config"):
        recs = run_config(config, classifier, fer_dir, truths)
        prec = run_config(config, classifier, photo_dir, photos)
        groups = {g: [r for r in recs if r["group"] == g] for g in dict.fromkeys(r["group"] for r in recs)}
        report["fer_grid"][config] = {g: summarise(rs) for g, rs in groups.items()} | {"all": summarise(recs)}
        sizes = sorted({int(r["side"]) for r in prec})
        report["photo_grid"][config] = ({f"size {s}": summarise([r for r in prec if int(r["side"]) == s], True) for s in sizes}
                                        | {"all": summarise(prec, True)})
        report["photo_agreement"][config] = photo_agreement(prec)
        ms = np.array([r["detect_ms"] for r in recs + prec])
        fm = np.array([r["frame_ms"] for r in recs + prec])
        report["speed_ms"][config] = {"detect_p50": float(np.median(ms)), "frame_p50": float(np.median(fm))}
        report["records"][config] = recs
    groups = [f"tilt {t:+.0f}" for t in tilts]
    print(f"FER2013 {args.split} faces in 640x480 scenes ({args.faces} per tilt; missed faces count as wrong):")
    print(table(report["fer_grid"], groups))
    print("\nReal photos (astronaut, Grace Hopper), faces 60-240 px, tilts 0..+-30:")
    print(table(report["photo_grid"], [f"size {s}" for s in sorted({int(r.side) for r in photos})], photo=True))
    print("\nlabel agreement with the upright photo:", json.dumps(report["photo_agreement"]))
    print("speed (ms, p50, this machine, 1 thread):", json.dumps(report["speed_ms"]))
    if args.json_path:
        Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_path).write_text(json.dumps(report, separators=(",", ":")) + "\n")  # records: compact
    if args.plot_path:
        plot(report, Path(args.plot_path))
    return report


if __name__ == "__main__":
    main()

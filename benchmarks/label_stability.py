"""Steady labels: label changes per minute and agreement with the per-frame argmax, before/after.

1. The clip: `benchmarks/clip.py --kind handheld` (two real photos from scikit-image filmed as by a
   hand-held webcam, 30 s at 30 fps; see that file), or --source.
2. The runtime runs it once with no smoothing and no hysteresis, logging every face's per-frame
   probabilities (the classifier's raw output, JSONL).
3. The same probability sequences go through the runtime's Smoother under each setting: the
   per-frame argmax, the old default (EMA 0.4, no hysteresis), the new default (EMA + hysteresis,
   TrackerConfig), and a small grid of hysteresis settings. Per setting: label changes per minute of
   face time (summed over tracks; "uncertain" ignored, see below), agreement of the label shown with
   the per-frame argmax, and how late a label follows a lasting change of the argmax.
4. Cross-check: the runtime runs the clip again with all its defaults; the label changes in its log
   ("uncertain" included) must equal the replay of the new default (same code path, same numbers).

Label changes are counted twice: on the emotion shown with min_confidence 0 (`changes_per_min`), and
on the label shown with the default --min-confidence, "uncertain" included
(`changes_per_min_with_uncertain`: a score hovering at the threshold flickers too); the share of
"uncertain" events is reported as well.

    python benchmarks/label_stability.py                 # -> benchmarks/results/label_stability.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
GRID_MARGINS = (0.1, 0.15, 0.2, 0.3)
GRID_FRAMES = (3, 5, 8, 12)


def _events(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            e = json.loads(line)
            if e.get("type", "event") == "event" and "probs" in e:
                out.append(e)
    return out


def base_config(clip: Path, model: str | None, detector: str | None, detector_model: str | None):
    """The runtime's defaults, on `clip`, with the detector and model asked for."""
    from fer_edge.config import RunConfig

    cfg = RunConfig()
    cfg.source.path = str(clip)
    cfg.classifier.model = model
    if detector:
        cfg.detector.kind = detector
    if detector_model:
        cfg.detector.model = detector_model
    return cfg


def raw_sequences(cfg, log: Path) -> tuple[dict[int, np.ndarray], list[str], float]:
    """Run the runtime with no smoothing/hysteresis; per-track (frames, labels) raw probabilities."""
    from fer_edge.loop import run

    clip = cfg.source.path
    t = cfg.tracker
    t.smoothing, t.min_confidence, t.switch_margin, t.switch_frames = "none", 0.0, 0.0, 0
    cfg.log.jsonl, cfg.log.summary_every_s = str(log), 0.0
    run(cfg)
    events = _events(log)
    labels = list(events[0]["probs"]) if events else []
    seqs: dict[int, list] = {}
    for e in events:
        seqs.setdefault(int(e["track_id"]), []).append([e["probs"][k] for k in labels])
    import cv2

    cap = cv2.VideoCapture(str(clip))
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 30.0)
    cap.release()
    return {k: np.asarray(v, np.float32) for k, v in seqs.items()}, labels, fps


def replay(seqs: dict[int, np.ndarray], labels: list[str], fps: float, min_confidence: float = 0.0,
           **tracker) -> dict:
    """The runtime's Smoother over the raw sequences: changes/min, argmax agreement, lag, uncertain share."""
    from fer_edge.config import TrackerConfig
    from fer_edge.smoother import UNCERTAIN, Smoother

    cfg = dataclasses.replace(TrackerConfig(), min_confidence=0.0, **tracker)
    sm = Smoother.from_config(labels, cfg)
    masked = Smoother.from_config(labels, dataclasses.replace(cfg, min_confidence=min_confidence))
    changes = frames = agree = uncertain = shown_changes = 0
    lags: list[int] = []
    per_track = {}
    for tid, seq in seqs.items():
        shown, with_uncertain = [], []
        for p in seq:
            shown.append(sm.update(tid, p)[1])
            with_uncertain.append(masked.update(tid, p)[1])
        uncertain += sum(lab == UNCERTAIN for lab in with_uncertain)
        shown_changes += sum(a != b for a, b in zip(with_uncertain, with_uncertain[1:]))
        argmax = [labels[int(i)] for i in seq.argmax(1)]
        c = sum(a != b for a, b in zip(shown, shown[1:]))
        changes += c
        frames += len(seq)
        agree += sum(a == b for a, b in zip(shown, argmax))
        per_track[tid] = {"frames": len(seq), "changes": c,
                          "argmax_changes": sum(a != b for a, b in zip(argmax, argmax[1:]))}
        lags += _lags(argmax, shown, int(round(fps)))
    minutes = frames / fps / 60.0
    return {"label_changes": changes, "changes_per_min": round(changes / minutes, 1) if minutes else None,
            "argmax_agreement_pct": round(100.0 * agree / frames, 2) if frames else None,
            "lag_frames_median": float(np.median(lags)) if lags else None, "lasting_argmax_changes": len(lags),
            "uncertain_pct_at_min_confidence": round(100.0 * uncertain / frames, 2) if frames else None,
            "changes_per_min_with_uncertain": round(shown_changes / minutes, 1) if minutes else None,
            "label_changes_with_uncertain": shown_changes,
            "frames": frames, "face_minutes": round(minutes, 3), "tracks": per_track}


def _lags(argmax: list[str], shown: list[str], hold: int) -> list[int]:
    """For every lasting change of the argmax (the new label stays the argmax for >= `hold` frames,
    one second): how many frames until the label shown is that label too."""
    out = []
    i = 1
    while i < len(argmax):
        new = argmax[i]
        if new != argmax[i - 1] and all(a == new for a in argmax[i:i + hold]) and i + hold <= len(argmax):
            lag = next((k for k in range(hold) if shown[i + k] == new), hold)
            out.append(lag)
            i += hold
        else:
            i += 1
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", type=Path, help="a clip (default: the handheld clip, made in a temp folder)")
    ap.add_argument("--model", help="emotion model .tflite (default: the shipped default)")
    ap.add_argument("--detector", help="face detector kind (default: the runtime's)")
    ap.add_argument("--detector-model", help="face detector .tflite (default: the runtime's)")
    ap.add_argument("--json", type=Path, default=BENCH / "results" / "label_stability.json")
    args = ap.parse_args(argv)
    for p in (str(REPO), str(BENCH)):
        if p not in sys.path:
            sys.path.insert(0, p)
    import copy

    from fer_edge.config import TrackerConfig
    from fer_edge.loop import run

    defaults = TrackerConfig()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = args.source
        what = f"--source {clip}"
        if clip is None:
            from clip import HANDHELD_SHOTS, make_handheld_clip

            clip = make_handheld_clip(tmp / "handheld.avi")
            what = ("benchmarks/clip.py --kind handheld (seed 0): " +
                    ", then ".join(f"skimage.data.{n} for {s:g} s" for n, _, s, _, _ in HANDHELD_SHOTS) +
                    ", filmed as by a hand-held webcam (drift, shake, zoom, roll, exposure, side light, noise, "
                    "motion blur, JPEG, a hand over the mouth); still photos: no change of expression")
        t0 = time.perf_counter()
        cfg0 = base_config(clip, args.model, args.detector, args.detector_model)
        seqs, labels, fps = raw_sequences(copy.deepcopy(cfg0), tmp / "raw.jsonl")
        settings = {
            "per_frame_argmax": dict(smoothing="none", switch_margin=0.0, switch_frames=0),
            "before_ema_only": dict(smoothing="ema", ema_alpha=0.4, switch_margin=0.0, switch_frames=0),
            "after_default": dict(smoothing=defaults.smoothing, ema_alpha=defaults.ema_alpha,
                                  switch_margin=defaults.switch_margin, switch_frames=defaults.switch_frames),
        }
        results = {k: replay(seqs, labels, fps, defaults.min_confidence, **v) | {"settings": v}
                   for k, v in settings.items()}
        grid = []
        for m in GRID_MARGINS:
            for n in GRID_FRAMES:
                r = replay(seqs, labels, fps, defaults.min_confidence, smoothing="ema", ema_alpha=0.4,
                           switch_margin=m, switch_frames=n)
                grid.append({"switch_margin": m, "switch_frames": n, **{k: r[k] for k in (
                    "changes_per_min", "changes_per_min_with_uncertain", "argmax_agreement_pct", "lag_frames_median")}})
        # cross-check: the runtime itself with all its defaults ("uncertain" included)
        cfg = copy.deepcopy(cfg0)
        cfg.log.jsonl, cfg.log.summary_every_s = str(tmp / "default.jsonl"), 0.0
        run(cfg)
        live = {}
        for e in _events(tmp / "default.jsonl"):
            live.setdefault(int(e["track_id"]), []).append(e["emotion"])
        live_changes = sum(sum(a != b for a, b in zip(v, v[1:])) for v in live.values())
    report = {
        "clip": what, "fps": fps, "labels": labels, "model": args.model or "shipped default",
        "detector": dataclasses.asdict(cfg0.detector),
        "tracks": {str(k): len(v) for k, v in seqs.items()},
        "min_confidence_default": defaults.min_confidence,
        "results": results, "grid_ema0.4": grid,
        "cross_check": {"runtime_default_label_changes": live_changes,
                        "replay_default_label_changes": results["after_default"]["label_changes_with_uncertain"],
                        "equal": live_changes == results["after_default"]["label_changes_with_uncertain"]},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    for k, r in results.items():
        print(f"{k:18s} {r['changes_per_min']:6.1f} changes/min, argmax agreement {r['argmax_agreement_pct']:6.2f} %, "
              f"median lag {r['lag_frames_median']} frames; with uncertain at {defaults.min_confidence}: "
              f"{r['changes_per_min_with_uncertain']:6.1f} changes/min, {r['uncertain_pct_at_min_confidence']} % uncertain")
    print(f"cross-check: runtime {live_changes} label changes, replay "
          f"{results['after_default']['label_changes_with_uncertain']}")
    print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    main()

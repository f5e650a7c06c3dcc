"""Ghost tracks before/after track confirmation ([tracker] confirm_frames, tracker.TrackGate).

A ghost is a track the detector saw in fewer than K detection passes (a second box on a face, a
pattern in the background for a frame). The runtime is run on a clip with its defaults, once with
confirm_frames = 1 (every track logged: before) and once per K (after), each writing a JSONL log;
with detection on every frame a track's logged frames are its detection passes.

Reported per K: the ghosts in the log before (tracks with fewer than K events) and after (must be
0), the tracks dropped unconfirmed (RunSummary.ghosts), and that nothing real was lost: the events
of the K run are exactly the events of the K = 1 run minus the ghosts' (same frames, same boxes).

    python benchmarks/ghost_tracks.py         # the handheld and the crossing clip (benchmarks/clip.py), BlazeFace and Haar
    python benchmarks/ghost_tracks.py --source my.mp4 --detector haar --k 2 3
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


def _events(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        e = json.loads(line)
        if e.get("type") == "event":
            out.append(e)
    return out


def measure(clip: Path, name: str, detector: str | None, ks: tuple[int, ...], tmp: Path) -> dict:
    from fer_edge.config import RunConfig
    from fer_edge.loop import run

    cfg0 = RunConfig()
    cfg0.source.path = str(clip)
    cfg0.log.summary_every_s = 0.0
    if detector:
        cfg0.detector.kind = detector
    runs = {}
    for k in (1, *ks):
        cfg = copy.deepcopy(cfg0)
        cfg.tracker.confirm_frames = k
        cfg.log.jsonl = str(tmp / f"{name}_{cfg0.detector.kind}_k{k}.jsonl")  # a new file (a log is appended to)
        t0 = time.perf_counter()
        summary = run(cfg)
        events = _events(Path(cfg.log.jsonl))
        runs[k] = {"summary": summary, "events": events, "seconds": time.perf_counter() - t0}
    before = runs[1]["events"]
    per_track = Counter(e["track_id"] for e in before)
    out = {"clip": name, "frames": runs[1]["summary"].frames, "detector": cfg0.detector.kind,
           "detect_every": cfg0.detector.every, "before": {"tracks": len(per_track), "events": len(before),
                                                           "events_per_track": dict(sorted(per_track.items()))},
           "after": {}}
    for k in ks:
        ghosts = {t for t, n in per_track.items() if n < k}
        after = runs[k]["events"]
        after_tracks = Counter(e["track_id"] for e in after)
        key = lambda e: (e["frame"], tuple(e["box"]), e["emotion"], e["score"])  # noqa: E731
        expected = sorted(key(e) for e in before if e["track_id"] not in ghosts)
        out["after"][str(k)] = {
            "ghost_tracks_before": len(ghosts),
            "ghost_events_before": sum(per_track[t] for t in ghosts),
            "ghost_tracks_after": sum(1 for n in after_tracks.values() if n < k),
            "tracks_after": len(after_tracks),
            "events_after": len(after),
            "dropped_unconfirmed": runs[k]["summary"].ghosts,
            "real_events_all_kept": sorted(key(e) for e in after) == expected,
            "late_events_out_of_frame_order": sum(1 for a, b in zip(after, after[1:]) if b["frame"] < a["frame"]),
        }
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", type=Path, help="a clip (default: the handheld and the crossing clips)")
    ap.add_argument("--detector", nargs="+", default=["blazeface", "haar"], help="face detector kinds to run")
    ap.add_argument("--k", type=int, nargs="+", default=[2, 3], help="confirm_frames values to try")
    ap.add_argument("--json", type=Path, default=BENCH / "results" / "ghost_tracks.json")
    args = ap.parse_args(argv)
    for p in (str(REPO), str(BENCH)):
        if p not in sys.path:
            sys.path.insert(0, p)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.source:
            clips = [(args.source, args.source.name)]
        else:
            from clip import make_clip, make_handheld_clip

            clips = [(make_handheld_clip(tmp / "handheld.avi"), "handheld (benchmarks/clip.py --kind handheld)"),
                     (make_clip(tmp / "crossing.avi", fourcc="MJPG"), "crossing (benchmarks/clip.py)")]
        for path, name in clips:
            for detector in args.detector:
                results.append(measure(path, name.split()[0], detector, tuple(args.k), tmp))
                results[-1]["clip"] = name
    for r in results:
        print(f"{r['clip']}: {r['frames']} frames, detector {r['detector']}: {r['before']['tracks']} tracks "
              f"logged with confirm_frames=1")
        for k, a in r["after"].items():
            print(f"  K={k}: ghost tracks {a['ghost_tracks_before']} -> {a['ghost_tracks_after']} "
                  f"(tracks {r['before']['tracks']} -> {a['tracks_after']}, dropped {a['dropped_unconfirmed']}); "
                  f"real events all kept: {a['real_events_all_kept']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.json}")
    return {"results": results}


if __name__ == "__main__":
    main()

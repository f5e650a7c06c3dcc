"""Soak test: run the real pipeline on a looping clip for a long time and watch its memory.

    python benchmarks/soak_rss.py --model models/fer_default_int8.tflite --minutes 30 --out runs/soak

The loop runs in this process exactly as `fer-edge --source CLIP --loop --log events.jsonl` would
(JSONL log with rotation and the per-track summary included, so the sinks are soaked too). A thread
samples the resident set size (/proc/self/statm) every --every seconds. After a warm-up (allocator
pools, interpreter arenas, OpenCV buffers settle), memory should be flat: the report gives the RSS
right after warm-up, at the end, the growth between them in per cent, and a least-squares slope in
MiB per hour over the post-warm-up samples. Writes soak_rss.json, and soak_rss.png when matplotlib
is installed.

It also checks that every event was written: an extra sink counts the events the pipeline produced
(one per face per frame), the JSONL sink counts what it wrote (rotated files included) and dropped;
`events_produced`, `events_written`, `events_dropped` and `all_events_written` (written ==
produced, nothing dropped) go into the report, and --check exits 1 when any event is missing or
RSS grew by more than --max-growth per cent after warm-up.

The configuration is the runtime's defaults (RunConfig(): detector, alignment, smoothing), so a
soak measures what ships; only the log settings are the soak's own.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

PAGE_MB = os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE_MB


class EventCounter:
    """A sink that counts the events the pipeline produced (what the event log should hold)."""

    def __init__(self) -> None:
        self.events = 0
        self.frames = 0

    def write(self, result) -> None:
        self.frames += 1
        # this frame's faces, and the first frames' of a track confirmed now (tracker.TrackGate)
        self.events += len(result.faces) + sum(len(r.faces) for r in result.late)

    def close(self) -> None:
        pass


def soak(model: Path, source: Path, minutes: float, every_s: float, warmup_s: float, out: Path) -> dict:
    from fer_edge.config import RunConfig
    from fer_edge.loop import run
    from fer_edge.notify import Notifier
    from fer_edge.sinks.eventlog import JsonlSink

    cfg = RunConfig()
    cfg.source.path = str(source)
    cfg.source.loop = True
    cfg.classifier.model = str(model)
    cfg.log.jsonl = str(out / "soak_events.jsonl")
    cfg.log.max_bytes = 5_000_000  # rotate often: the rotation path is soaked too
    cfg.log.backups = 2
    cfg.log.summary_every_s = 30.0
    duration = minutes * 60.0
    samples: list[tuple[float, float, int]] = []
    state: dict = {}
    done = threading.Event()

    def sampler() -> None:
        t0 = state["t0"]
        while not done.wait(every_s):
            pipe = state["pipeline"]
            samples.append((time.monotonic() - t0, rss_mb(), pipe.frames))
            if time.monotonic() - t0 >= duration:
                pipe.stop("duration reached")
                return

    def on_ready(pipeline, source) -> None:
        state["pipeline"] = pipeline
        state["t0"] = time.monotonic()
        samples.append((0.0, rss_mb(), 0))
        threading.Thread(target=sampler, name="rss-sampler", daemon=True).start()

    counter = EventCounter()
    summary = run(cfg, notifier=Notifier(env={}), on_ready=on_ready, extra_sinks=[counter])
    done.set()
    logs = [s for s in state["pipeline"].sinks if isinstance(s, JsonlSink)]
    written = sum(s.stats["events"] for s in logs)
    dropped = sum(s.stats.get("dropped", 0) for s in logs)
    # growth is judged on samples taken while the pipeline ran: once run() returns, the interpreters and
    # sinks are released and RSS drops, which said nothing about a leak (a 60-min run's -2.02 %)
    t = np.array([s[0] for s in samples])
    r = np.array([s[1] for s in samples])
    after_close = rss_mb()
    after = t >= warmup_s
    if after.sum() < 2:
        raise SystemExit(f"too few samples after the {warmup_s:.0f}s warm-up: run longer or sample more often")
    warm_rss = float(r[after][0])
    end_rss = float(r[-1])
    slope = float(np.polyfit(t[after], r[after], 1)[0]) * 3600.0
    return {
        "minutes": round(t[-1] / 60.0, 2),
        "frames": summary.frames,
        "fps": round(summary.fps, 1),
        "faces": summary.faces,
        "stopped_by": summary.stopped_by,
        "source_stats": summary.source,
        "config": {"detector": cfg.detector.kind, "align": getattr(cfg.detector, "align", None),
                   "smoothing": cfg.tracker.smoothing},
        "events_produced": counter.events,
        "events_written": written,
        "events_dropped": dropped,
        "all_events_written": written == counter.events and dropped == 0 and counter.frames == summary.frames,
        "warmup_s": warmup_s,
        "sample_every_s": every_s,
        "rss_start_mb": round(float(r[0]), 1),
        "rss_after_warmup_mb": round(warm_rss, 1),
        "rss_end_mb": round(end_rss, 1),  # the last sample while running
        "rss_after_close_mb": round(after_close, 1),
        "rss_max_mb": round(float(r.max()), 1),
        "growth_after_warmup_pct": round((end_rss - warm_rss) / warm_rss * 100.0, 2),
        "slope_mb_per_hour": round(slope, 2),
        "samples": [[round(a, 1), round(b, 2), c] for a, b, c in samples],
        "model": str(model),
        "source": str(source),
    }


def plot(report: dict, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
        return None
    t = [s[0] / 60.0 for s in report["samples"]]
    r = [s[1] for s in report["samples"]]
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=120)
    ax.plot(t, r, lw=1.2)
    ax.axvline(report["warmup_s"] / 60.0, color="grey", ls="--", lw=0.8, label="end of warm-up")
    ax.set_xlabel("minutes")
    ax.set_ylabel("RSS (MiB)")
    ax.set_title(f"fer-edge soak: {report['frames']} frames at {report['fps']} fps; "
                 f"{report['growth_after_warmup_pct']:+.2f} % after warm-up")
    ax.set_ylim(0, max(r) * 1.15)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="model (default: the shipped one)")
    ap.add_argument("--source", type=Path, help="clip to loop (default: the generated astronaut clip)")
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--every", type=float, default=5.0, help="seconds between RSS samples")
    ap.add_argument("--warmup", type=float, default=None,
                    help="seconds of warm-up before the baseline (default: 10%% of the run, 20..300 s)")
    ap.add_argument("--out", type=Path, default=Path("runs/soak"))
    ap.add_argument("--check", action="store_true",
                    help="exit 1 unless every event was written and RSS grew by at most --max-growth %% after warm-up")
    ap.add_argument("--max-growth", type=float, default=2.0, help="--check: allowed RSS growth after warm-up (%%)")
    args = ap.parse_args(argv)
    if args.model is None:
        from fer_edge_models import DEFAULT_MODEL

        args.model = DEFAULT_MODEL
    if not args.model.is_file():
        raise SystemExit(f"model not found: {args.model} (pass --model)")
    warmup = args.warmup if args.warmup is not None else min(300.0, max(20.0, args.minutes * 6.0))
    args.out.mkdir(parents=True, exist_ok=True)
    source = args.source
    if source is None:
        from clip import make_clip

        source = make_clip(args.out / "face_clip.mp4")
    report = soak(args.model, source, args.minutes, args.every, warmup, args.out)
    (args.out / "soak_rss.json").write_text(json.dumps(report, indent=2) + "\n")
    png = plot(report, args.out / "soak_rss.png")
    print(f"soak: {report['minutes']} min, {report['frames']} frames ({report['fps']} fps), {report['faces']} faces")
    print(f"RSS: start {report['rss_start_mb']} MiB, after {warmup:.0f}s warm-up {report['rss_after_warmup_mb']} MiB, "
          f"end {report['rss_end_mb']} MiB, max {report['rss_max_mb']} MiB")
    print(f"growth after warm-up {report['growth_after_warmup_pct']:+.2f} %, slope {report['slope_mb_per_hour']:+.2f} MiB/h")
    print(f"events: {report['events_produced']} produced, {report['events_written']} written, "
          f"{report['events_dropped']} dropped: {'all written' if report['all_events_written'] else 'NOT ALL WRITTEN'}")
    print(f"-> {args.out / 'soak_rss.json'}" + (f", {png}" if png else ""))
    if args.check:
        problems = []
        if not report["all_events_written"]:
            problems.append("not every event was written")
        if abs(report["growth_after_warmup_pct"]) > args.max_growth:
            problems.append(f"RSS changed {report['growth_after_warmup_pct']:+.2f} % after warm-up (> {args.max_growth} %)")
        if problems:
            raise SystemExit("soak check failed: " + "; ".join(problems))
    return report


if __name__ == "__main__":
    main()

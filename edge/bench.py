"""`fer-edge bench`: how fast is the pipeline on this machine, stage by stage?

Runs the real loop (same source, detector, classifier, tracker and -- with --log -- the JSONL sink)
for warm-up + N frames, replaying a file source as needed, and reports per-stage p50 / p95 / mean
milliseconds, end-to-end frames per second over the measured frames, faces per frame and the
process's peak resident memory (ru_maxrss).

For a file source "grab" is decode time; for a live source it is mostly waiting for the camera,
and the frame rate is capped by the camera's.
"""
from __future__ import annotations

import copy
import json
import os
import platform
import resource
import sys
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .config import RunConfig
from .loop import STAGES, run
from .notify import Notifier
from .sources import is_stream_url


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB.

    Linux: VmHWM from /proc/self/status, the high-water mark of this program's own memory.
    ru_maxrss would be the same, except that it survives execve(): a process started from a big
    parent would report the parent's size. Elsewhere: ru_maxrss (macOS counts bytes, others KiB).
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _stats(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, np.float64)
    if a.size == 0:
        return {"p50": 0.0, "p95": 0.0, "mean": 0.0, "max": 0.0}
    return {
        "p50": round(float(np.percentile(a, 50)), 3),
        "p95": round(float(np.percentile(a, 95)), 3),
        "mean": round(float(a.mean()), 3),
        "max": round(float(a.max()), 3),
    }


def bench_config(cfg: RunConfig, frames: int, warmup: int) -> RunConfig:
    """The run's config for benchmarking: file sources loop, outputs other than the JSONL log off."""
    cfg = copy.deepcopy(cfg)
    if cfg.source.path and not is_stream_url(str(cfg.source.path)):
        cfg.source.loop = True
    cfg.max_frames = warmup + frames
    cfg.display.enabled = False
    cfg.mqtt.host = None
    cfg.metrics.port = None
    cfg.log.csv = None
    cfg.log.save_frames = None
    cfg.log.summary_every_s = 0.0
    return cfg


def run_bench(cfg: RunConfig, frames: int = 300, warmup: int = 10) -> dict[str, Any]:
    cfg = bench_config(cfg, frames, warmup)
    parts: dict[str, Any] = {}

    def on_ready(pipeline, source) -> None:
        parts["detector"] = pipeline.detector.describe()
        parts["classifier"] = pipeline.classifier.describe()
        parts["source"] = source.name
        parts["pipeline"] = pipeline

    summary = run(cfg, use_sinks=bool(cfg.log.jsonl), record_timings=True, on_ready=on_ready,
                  notifier=Notifier(env={}))
    timings = summary.timings or {s: [] for s in STAGES}
    ends = summary.frame_end or []
    n = len(ends)
    skip = min(warmup, max(0, n - 1))
    measured = n - skip
    if skip > 0:
        seconds = ends[-1] - ends[skip - 1]
    else:
        seconds = summary.seconds
    fps = measured / seconds if seconds > 0 else 0.0
    stages = {s: _stats(timings[s][skip:]) for s in STAGES}
    total = [sum(timings[s][i] for s in STAGES) for i in range(skip, n)]
    work = [sum(timings[s][i] for s in STAGES if s != "grab") for i in range(skip, n)]
    faces = (summary.faces_per_frame or [])[skip:]
    return {
        "fer_edge": __version__,
        "source": parts.get("source", str(cfg.source.path)),
        "frames": measured,
        "warmup": skip,
        "fps": round(fps, 2),
        "stages_ms": stages,
        "total_ms": _stats(total),
        "work_ms": _stats(work),
        "faces_per_frame": round(float(np.mean(faces)), 3) if faces else 0.0,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "detector": parts.get("detector", cfg.detector.kind),
        "classifier": parts.get("classifier", str(cfg.classifier.model)),
        "threads": cfg.classifier.threads,
        "detect_every": cfg.detector.every,
        "full_scan_every": cfg.detector.full_scan_every,
        "detections": {"full_frame": getattr(parts.get("pipeline"), "full_scans", 0),
                       "around_faces": getattr(parts.get("pipeline"), "roi_scans", 0)},
        "source_stats": summary.source,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "processor": platform.machine(),
            "cpus": os.cpu_count(),
        },
    }


def format_table(report: dict[str, Any]) -> str:
    lines = [
        f"fer-edge bench: {report['source']}, {report['frames']} frames (after {report['warmup']} warm-up)",
        f"  classifier  {report['classifier']}, {report['threads']} thread(s)",
        f"  detector    {report['detector']}, every {report['detect_every']} frame(s); "
        f"{report['detections']['full_frame']} full-frame + {report['detections']['around_faces']} around-face searches",
        "",
        f"  {'stage':<11}{'p50 ms':>9}{'p95 ms':>9}{'mean ms':>9}",
    ]
    rows = list(report["stages_ms"].items()) + [("total", report["total_ms"])]
    for name, st in rows:
        lines.append(f"  {name:<11}{st['p50']:>9.2f}{st['p95']:>9.2f}{st['mean']:>9.2f}")
    lines += [
        "",
        f"  end-to-end {report['fps']:.1f} frames/s   faces/frame {report['faces_per_frame']:.2f}   "
        f"peak RSS {report['peak_rss_mb']:.0f} MiB",
    ]
    return "\n".join(lines)


def write_json(path: str | os.PathLike, report: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path

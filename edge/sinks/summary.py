"""Periodic per-track summary: who looked how, over the last minute(s), in a few lines.

Every `every_s` seconds of frame time (frame.timestamp, so a replayed file summarises like live
video) and once more at close, the sink reports each track seen since the previous summary:

    track_id (and file, for a file source: IDs count from 1 in each photo or file of a folder), first_seen,
    last_seen (ISO-8601), frames (frames it was in), dominant (the label it
    carried in most frames, "uncertain" included), counts (frames per label), mean_probs (mean of the
    smoothed probabilities over all its frames, by label name)

Counts and means run over the track's whole life, not just the window. A track that was not seen
in a window is forgotten after the summary that last reported it, so memory stays bounded however
many people pass by.

Where it goes: one INFO line per track on the `fer_edge.summary` logger (the journal, for a
service), and, when a JSONL event log is configured, one line
`{"type": "summary", "time": ..., "since": ..., "tracks": [...]}` appended to that same file, so
one file holds the whole story. The CSV log gets no summary (its columns are per-event).
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..records import FrameResult
from . import Sink
from .eventlog import JsonlSink, iso_time, with_late

log = logging.getLogger("fer_edge.summary")


class _Track:
    __slots__ = ("first", "last", "frames", "prob_sum", "counts", "fresh")

    def __init__(self, timestamp: float, n_labels: int):
        self.first = timestamp
        self.last = timestamp
        self.frames = 0
        self.prob_sum = np.zeros(n_labels, np.float64)
        self.counts: dict[str, int] = {}
        self.fresh = True  # seen since the last summary


class SummarySink(Sink):
    def __init__(self, labels: tuple[str, ...], every_s: float = 60.0, jsonl: JsonlSink | None = None,
                 logger: logging.Logger = log):
        super().__init__()
        self.labels = tuple(labels)
        self.every_s = float(every_s)
        self.jsonl = jsonl
        self.logger = logger
        self._tracks: dict[tuple[str, int], _Track] = {}  # by (file, track ID)
        self._window_start: float | None = None  # frame time the current window began
        self._now: float | None = None  # latest frame time
        self.stats = {"summaries": 0}
        self.last_summary: dict[str, Any] | None = None

    def write(self, result: FrameResult) -> None:
        now = result.frame.timestamp
        if self._window_start is None:
            self._window_start = now
        self._now = now
        for r in with_late(result):  # a track confirmed now brings its first frames (tracker.TrackGate)
            when = r.frame.timestamp
            file = r.frame.file
            for face in r.faces:
                track = self._tracks.get((file, face.track_id))
                if track is None:
                    track = self._tracks[(file, face.track_id)] = _Track(when, len(self.labels))
                track.first = min(track.first, when)
                track.last = max(track.last, when)
                track.fresh = True
                track.frames += 1
                track.prob_sum += face.probs
                track.counts[face.label] = track.counts.get(face.label, 0) + 1
        if self.every_s > 0 and now - self._window_start >= self.every_s:
            self.emit()

    def emit(self) -> dict[str, Any] | None:
        """Report the tracks seen in this window, start a new window; returns the summary record."""
        if self._window_start is None or self._now is None:
            return None
        start, now = self._window_start, self._now
        tracks = []
        for (file, track_id), track in sorted(self._tracks.items()):
            if not track.fresh:
                continue
            mean = track.prob_sum / max(track.frames, 1)
            dominant = max(track.counts.items(), key=lambda kv: kv[1])[0] if track.counts else "uncertain"
            tracks.append({
                "track_id": int(track_id),
                **({"file": file} if file else {}),
                "first_seen": iso_time(track.first),
                "last_seen": iso_time(track.last),
                "frames": track.frames,
                "dominant": dominant,
                "counts": dict(sorted(track.counts.items(), key=lambda kv: -kv[1])),
                "mean_probs": {name: round(float(p), 4) for name, p in zip(self.labels, mean)},
            })
        # forget tracks that this window did not see: their last summary has already been given
        self._tracks = {tid: t for tid, t in self._tracks.items() if t.fresh}
        for track in self._tracks.values():
            track.fresh = False
        record = {"type": "summary", "time": iso_time(now), "since": iso_time(start), "tracks": tracks}
        self._window_start = now
        self.stats["summaries"] += 1
        self.last_summary = record
        self._log(record)
        if self.jsonl is not None and not self.jsonl.closed:
            self.jsonl.write_record(record)
        return record

    def _log(self, record: dict[str, Any]) -> None:
        if not record["tracks"]:
            self.logger.info("summary %s .. %s: no faces", record["since"], record["time"])
            return
        for t in record["tracks"]:
            top = sorted(t["mean_probs"].items(), key=lambda kv: -kv[1])[:3]
            share = t["counts"].get(t["dominant"], 0) / max(t["frames"], 1)
            self.logger.info(
                "summary track %d%s: %s .. %s, %d frames, mostly %s (%.0f%%), mean %s",
                t["track_id"], f" ({t['file']})" if "file" in t else "", t["first_seen"], t["last_seen"], t["frames"], t["dominant"], 100 * share,
                " ".join(f"{name} {p:.2f}" for name, p in top),
            )

    def _close(self) -> None:
        if self._now is not None and (self.stats["summaries"] == 0 or any(t.fresh for t in self._tracks.values())):
            self.emit()

    def __repr__(self) -> str:
        return f"SummarySink(every_s={self.every_s})"

"""Event logs: one line per face per frame, as JSON Lines or CSV, rotated by size.

An event says, for one tracked face in one frame:

    time      ISO-8601 local time with its UTC offset, millisecond resolution (from frame.timestamp)
    frame     the source's frame index
    track_id  the tracker's ID (stable while the face stays in view)
    box       x, y, w, h in full-frame pixels
    emotion   the (smoothed) label, or "uncertain" below --min-confidence
    score     the probability of that label
    probs     every label's probability, by label name (4 decimals; they sum to 1 within rounding)

JSONL lines are objects with `"type": "event"` (the summary sink adds `"type": "summary"` lines to
the same file); CSV has the columns time, frame, track_id, x, y, w, h, emotion, score, then one column
per label, with the header at the top of every file.

Durability: each frame's lines are written with one write() and flushed to the OS at once, so a crash
of the process loses nothing already logged. The file is fsync'ed (forced to the storage) at most every
`fsync_every_s` seconds, at rotation and at close — not per frame, which would wear an SD card and
stall the loop; a power cut can lose at most the last few seconds.

Rotation: before a frame's lines would push the file past `max_bytes`, `events.jsonl` becomes
`events.jsonl.1` (`.1` -> `.2`, ... up to `backups`; the oldest is dropped), like
logging.handlers.RotatingFileHandler but only at frame boundaries, so no frame is split across two
files and every file starts with the CSV header. `max_bytes = 0` never rotates; `backups = 0` starts
the file afresh instead of keeping old ones.
"""
from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError
from ..records import FrameResult
from . import Sink


def iso_time(timestamp: float) -> str:
    """Seconds since the epoch -> '2026-11-21T14:03:07.123+01:00' (local time, with its offset)."""
    return _dt.datetime.fromtimestamp(timestamp, tz=_dt.timezone.utc).astimezone().isoformat(timespec="milliseconds")


def event_records(result: FrameResult, labels: tuple[str, ...]) -> list[dict[str, Any]]:
    """One event dict per face (the JSONL line and the MQTT payload)."""
    if not result.faces:
        return []
    when = iso_time(result.frame.timestamp)
    index = int(result.frame.index)
    events = []
    for face in result.faces:
        x, y, w, h = face.box
        probs = face.probs.tolist()
        events.append({
            "type": "event",
            "time": when,
            "frame": index,
            "track_id": int(face.track_id),
            "box": [int(x), int(y), int(w), int(h)],
            "emotion": face.label,
            "score": round(float(face.score), 4),
            "probs": {name: round(p, 4) for name, p in zip(labels, probs)},
        })
    return events


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"))


class RotatingWriter:
    """Append whole blocks of lines to a file, rotating by size only between blocks.

    Binary append mode keeps the byte count exact without a tell() per write. A file that a crash
    left without a final newline gets one before the first new line, so old and new never merge.
    A CSV file whose first line is not this run's header (other labels) is rotated away first.
    """

    def __init__(self, path: str | os.PathLike, max_bytes: int = 0, backups: int = 0, header: str | None = None,
                 fsync_every_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.path = Path(path)
        self.max_bytes = max(0, int(max_bytes))
        self.backups = max(0, int(backups))
        self.header = header.encode("utf-8") if header else b""
        self.fsync_every_s = float(fsync_every_s)
        self._clock = clock
        self.rotations = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "ab")
        except OSError as exc:
            raise ConfigError(f"cannot write the event log {self.path}: {exc.strerror or exc}") from None
        self._size = self._fh.tell()
        self._last_sync = self._clock()
        if self._size == 0:
            self._write_header()
        else:
            self._adopt_existing()

    def _adopt_existing(self) -> None:
        with open(self.path, "rb") as fh:
            first = fh.readline()
            fh.seek(-1, os.SEEK_END)
            last = fh.read(1)
        if self.header and first != self.header:
            self._rotate()
        elif last != b"\n":
            self._put(b"\n")

    def _write_header(self) -> None:
        if self.header:
            self._put(self.header)

    def _put(self, data: bytes) -> None:
        self._fh.write(data)
        self._size += len(data)

    def write(self, text: str) -> None:
        """Write complete lines (one frame's) and flush them to the OS."""
        data = text.encode("utf-8")
        if self.max_bytes and self._size > len(self.header) and self._size + len(data) > self.max_bytes:
            self._rotate()
        self._put(data)
        self._fh.flush()
        if self.fsync_every_s > 0:
            now = self._clock()
            if now - self._last_sync >= self.fsync_every_s:
                os.fsync(self._fh.fileno())
                self._last_sync = now

    def _sync(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._last_sync = self._clock()

    def _rotate(self) -> None:
        self._sync()
        self._fh.close()
        if self.backups:
            for i in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{i}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
            self._fh = open(self.path, "ab")
        else:
            self._fh = open(self.path, "wb")
        self._size = 0
        self.rotations += 1
        self._write_header()

    def close(self) -> None:
        if self._fh.closed:
            return
        try:
            self._sync()
        finally:
            self._fh.close()


class _LogSink(Sink):
    """Shared part of the JSONL and CSV sinks."""

    header: str | None = None

    def __init__(self, path: str | os.PathLike, labels: tuple[str, ...], max_bytes: int = 50_000_000,
                 backups: int = 5, fsync_every_s: float = 5.0):
        super().__init__()
        self.labels = tuple(labels)
        self.path = Path(path)
        self.writer = RotatingWriter(self.path, max_bytes, backups, header=self.make_header(),
                                     fsync_every_s=fsync_every_s)
        self.stats = {"events": 0, "rotations": 0}

    def make_header(self) -> str | None:
        return None

    def format(self, result: FrameResult) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def write(self, result: FrameResult) -> None:
        if not result.faces:
            return
        self.writer.write(self.format(result))
        self.stats["events"] += len(result.faces)
        self.stats["rotations"] = self.writer.rotations

    def _close(self) -> None:
        self.writer.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"


class JsonlSink(_LogSink):
    """events.jsonl: one JSON object per face per frame (see the module docstring)."""

    def format(self, result: FrameResult) -> str:
        return "".join(dumps(event) + "\n" for event in event_records(result, self.labels))

    def write_record(self, record: dict[str, Any]) -> None:
        """Append any other JSON line (the summary's), at a frame boundary."""
        if self.closed:
            raise ValueError(f"{self!r} is closed")
        self.writer.write(dumps(record) + "\n")


class CsvSink(_LogSink):
    """events.csv: time, frame, track_id, x, y, w, h, emotion, score, <one column per label>."""

    def make_header(self) -> str:
        return ",".join(("time", "frame", "track_id", "x", "y", "w", "h", "emotion", "score") + self.labels) + "\n"

    def __init__(self, *args: Any, **kwargs: Any):
        self._buf = io.StringIO()
        self._csv = csv.writer(self._buf, lineterminator="\n")
        super().__init__(*args, **kwargs)

    def format(self, result: FrameResult) -> str:
        buf = self._buf
        buf.seek(0)
        buf.truncate()
        when = iso_time(result.frame.timestamp)
        index = int(result.frame.index)
        for face in result.faces:
            x, y, w, h = face.box
            self._csv.writerow([when, index, int(face.track_id), int(x), int(y), int(w), int(h), face.label,
                                f"{float(face.score):.4f}", *(f"{p:.4f}" for p in face.probs.tolist())])
        return buf.getvalue()

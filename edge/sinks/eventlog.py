"""Event logs: one line per face per frame, as JSON Lines or CSV, rotated by size.

An event says, for one tracked face in one frame:

    time      ISO-8601 local time with its UTC offset, millisecond resolution (from frame.timestamp)
    frame     the source's frame index
    track_id  the tracker's ID (stable while the face stays in view)
    box       x, y, w, h in full-frame pixels
    emotion   the (smoothed) label, or "uncertain" below --min-confidence
    score     the probability of that label
    probs     every label's probability, by label name (4 decimals; they sum to 1 within rounding)
    reason    why the label is "uncertain" although the model named one: "turned" (head turned
              beyond --max-yaw), "small" (below --min-readable); "" otherwise
    file      the image or video file the frame came from (photo mode: which photo); "" for a
              camera or a stream

JSONL lines are objects with `"type": "event"` (the summary sink adds `"type": "summary"` lines to
the same file, and each run of `fer-edge` starts with a `"type": "run"` line: fer-edge's version, the
source, the model file and its sha256, the labels, mirror averaging, the detector, --min-confidence,
smoothing, --max-yaw, --min-readable and --photo-search; loop.run_record). CSV has the columns time,
frame, track_id, x, y, w, h, emotion, score, then one column per label, then reason, then file, with
the header at the top of every file.

Photos (photo mode): every photo is logged, a photo in which no face was found too, so a log of a
folder accounts for each of its photos. JSONL puts a `"type": "photo"` line (time, frame, file,
faces: how many) before the photo's events; CSV gives a photo without a face one row with only
time, frame, reason "no face" and file.

A face is logged once its track is confirmed (tracker.TrackGate, --confirm-frames): the events of
its first frames are written then, before that frame's, with their own frame number and time, so
a log is in frame order per track, and may step back a few frames where a new face was confirmed.

Durability: each frame's lines are written with one write() and flushed to the OS at once, so a crash
of the process loses nothing already logged. The file is fsync'ed (forced to the storage) at most every
`fsync_every_s` seconds, at rotation and at close — not per frame, which would wear an SD card and
stall the loop; a power cut can lose at most the last few seconds.

Disk full (ENOSPC, or any other write error): the frame's lines are dropped whole -- a block that
was written in part is cut off again, so the file never ends in half a line -- and counted
(`stats["dropped"]`, the metric fer_edge_log_dropped_events_total, systemd's STATUS line); one
warning per minute goes to the journal. The service keeps running, and every frame tries again, so
writing resumes by itself when space returns. Starting on a full disk works the same way.

Rotation: before a frame's lines would push the file past `max_bytes`, `events.jsonl` becomes
`events.jsonl.1` (`.1` -> `.2`, ... up to `backups`; the oldest is dropped), like
logging.handlers.RotatingFileHandler but only at frame boundaries, so no frame is split across two
files and every file starts with the CSV header. `max_bytes = 0` never rotates; `backups = 0` starts
the file afresh instead of keeping old ones.
"""
from __future__ import annotations

import csv
import datetime as _dt
import errno
import io
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError
from ..records import FrameResult
from . import Sink

log = logging.getLogger(__name__)


def iso_time(timestamp: float) -> str:
    """Seconds since the epoch -> '2026-11-21T14:03:07.123+01:00' (local time, with its offset)."""
    return _dt.datetime.fromtimestamp(timestamp, tz=_dt.timezone.utc).astimezone().isoformat(timespec="milliseconds")


def with_late(result: FrameResult) -> list[FrameResult]:
    """The earlier frames' results released with this one (result.late), then this one."""
    return [*result.late, result] if result.late else [result]


def event_count(result: FrameResult) -> int:
    """Events in `result`: its faces and its late ones."""
    return len(result.faces) + (sum(len(r.faces) for r in result.late) if result.late else 0)


def event_records(result: FrameResult, labels: tuple[str, ...]) -> list[dict[str, Any]]:
    """One event dict per face (the JSONL line and the MQTT payload), the late ones first."""
    if result.late:
        return [event for r in with_late(result) for event in _frame_events(r, labels)]
    return _frame_events(result, labels)


def _frame_events(result: FrameResult, labels: tuple[str, ...]) -> list[dict[str, Any]]:
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
            "reason": face.reason,
            "file": result.frame.file,
        })
    return events


def photo_record(result: FrameResult) -> dict[str, Any]:
    """The JSONL line before a photo's events: the photo and how many faces it has (0: none found)."""
    return {"type": "photo", "time": iso_time(result.frame.timestamp), "frame": int(result.frame.index),
            "file": result.frame.file, "faces": len(result.faces)}


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"))


#: the CSV row of a photo in which no face was found has this `reason`, and no track, box or emotion
NO_FACE = "no face"

#: errno values that mean "the storage is full": the sink drops and counts events and keeps trying
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
#: at most one "cannot write the event log" warning per this many seconds (per log)
WARN_EVERY_S = 60.0


class RotatingWriter:
    """Append whole blocks of lines to a file, rotating by size only between blocks.

    Each block goes to the file with os.write on an O_APPEND descriptor (no user-space buffer), so
    the byte count is exact and nothing is left in a buffer to spill out later. A block that fails
    half-way (ENOSPC: disk full) is cut off again (ftruncate to the size before it): the file never
    holds half a line, and `write` returns False so the caller can count what was dropped. The next
    block tries again, so writing resumes by itself when space returns.

    A file that a crash left without a final newline gets one before the first new line, so old and
    new never merge. A CSV file whose first line is not this run's header (other labels) is rotated
    away first. Whatever could not be written for want of space (the header of a fresh file, that
    newline) is written before the next block.
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
        self.failures = 0  # blocks that could not be written
        self.last_error: OSError | None = None  # the latest failure; None once a block went through again
        self._fd: int | None = None
        self._pending = b""  # bytes owed to the file before the next block (header, or a newline)
        self._size = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._open()
        except OSError as exc:
            if exc.errno not in DISK_FULL:
                raise ConfigError(f"cannot write the event log {self.path}: {exc.strerror or exc}") from None
            self.last_error = exc  # disk full at start: keep running, open at the first write that fits
        self._last_sync = self._clock()
        if self._fd is not None:
            if self._size == 0:
                self._pending = self.header
            else:
                self._adopt_existing()
            try:  # the header now, so a log without events is still a valid CSV
                if self._pending:
                    self._put(self._pending)
                    self._pending = b""
            except OSError as exc:
                self.failures += 1
                self.last_error = exc

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        self._size = os.fstat(self._fd).st_size

    def _adopt_existing(self) -> None:
        with open(self.path, "rb") as fh:
            first = fh.readline()
            fh.seek(-1, os.SEEK_END)
            last = fh.read(1)
        if self.header and first != self.header:
            try:
                self._rotate()
            except OSError as exc:
                raise ConfigError(f"cannot rotate the event log {self.path}: {exc.strerror or exc}") from None
        elif last != b"\n":
            self._pending = b"\n"

    def _put(self, data: bytes) -> None:
        """All of `data` or nothing: a partial write is cut off again and the OSError raised."""
        fd = self._fd
        done = 0
        view = memoryview(data)
        try:
            while done < len(data):
                done += os.write(fd, view[done:])
        except OSError:
            if done:
                try:
                    os.ftruncate(fd, self._size)
                except OSError:  # cannot cut it off: make sure the next block starts on a new line
                    self._size = os.fstat(fd).st_size
                    self._pending = b"\n" + self._pending
            raise
        self._size += len(data)

    def write(self, text: str) -> bool:
        """Write complete lines (one frame's); True once they are in the file, False if dropped.

        Never raises OSError: a full disk (or any write error) drops this block, keeps the file
        whole, and is remembered in `failures` / `last_error`."""
        data = text.encode("utf-8")
        try:
            if self._fd is None:
                self._open()
                if self._size == 0 and not self._pending:
                    self._pending = self.header
            if self.max_bytes and self._size > len(self.header) and self._size + len(data) > self.max_bytes:
                self._rotate()
            if self._pending:
                self._put(self._pending)
                self._pending = b""
            self._put(data)
        except OSError as exc:
            self.failures += 1
            self.last_error = exc
            return False
        self.last_error = None
        if self.fsync_every_s > 0:
            now = self._clock()
            if now - self._last_sync >= self.fsync_every_s:
                self._fsync()
                self._last_sync = now
        return True

    def _fsync(self) -> None:
        try:
            os.fsync(self._fd)
        except OSError as exc:  # delayed allocation on a full disk: the lines may be lost, say so
            self.failures += 1
            self.last_error = exc

    def _sync(self) -> None:
        if self._fd is not None:
            self._fsync()
        self._last_sync = self._clock()

    def _rotate(self) -> None:
        self._sync()
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        if self.backups:
            for i in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{i}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self.rotations += 1
        self._open()
        self._pending = self.header  # written with the next block (it may not fit right now)

    def close(self) -> None:
        if self._fd is None:
            return
        try:
            self._sync()
        finally:
            os.close(self._fd)
            self._fd = None


class _LogSink(Sink):
    """Shared part of the JSONL and CSV sinks: counts events written and dropped (disk full)."""

    header: str | None = None

    def __init__(self, path: str | os.PathLike, labels: tuple[str, ...], max_bytes: int = 50_000_000,
                 backups: int = 5, fsync_every_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.labels = tuple(labels)
        self.path = Path(path)
        self._clock = clock
        self.writer = RotatingWriter(self.path, max_bytes, backups, header=self.make_header(),
                                     fsync_every_s=fsync_every_s, clock=clock)
        #: events: written; dropped: lost to write errors (disk full); records_dropped: summary lines lost
        self.stats = {"events": 0, "rotations": 0, "dropped": 0, "records_dropped": 0, "write_errors": 0}
        self._warned_at: float | None = None
        self._failing = False
        if self.writer.last_error is not None:
            self._failed(0)

    def make_header(self) -> str | None:
        return None

    def format(self, result: FrameResult) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def write(self, result: FrameResult) -> None:
        n = event_count(result)
        if not n and not result.frame.still:  # a photo is always logged, with no face too
            return
        if self.writer.write(self.format(result)):
            self.stats["events"] += n
            self._wrote()
        else:
            self.stats["dropped"] += n
            self._failed(n)
        self.stats["rotations"] = self.writer.rotations

    def _wrote(self) -> None:
        if self._failing:
            self._failing = False
            log.warning("event log %s: writing again (%d events dropped while it could not be written)",
                        self.path, self.stats["dropped"])

    def _failed(self, n: int) -> None:
        """Count, and warn at most once per WARN_EVERY_S (a full disk would otherwise flood the journal)."""
        self.stats["write_errors"] = self.writer.failures
        self._failing = True
        now = self._clock()
        if self._warned_at is None or now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            exc = self.writer.last_error
            why = (exc.strerror or str(exc)) if exc is not None else "write failed"
            log.warning("event log %s: cannot write (%s): %d events dropped so far; the service keeps running "
                        "and writing resumes when space returns", self.path, why, self.stats["dropped"])

    @property
    def health(self) -> str | None:
        """One line for systemd's STATUS while events are being lost, else None."""
        if not self.stats["dropped"] and not self._failing:
            return None
        state = "cannot write now" if self._failing else "writing again"
        return f"{self.path.name}: {self.stats['dropped']} events dropped ({state})"

    def _close(self) -> None:
        self.writer.close()
        if self.stats["dropped"] or self.stats["records_dropped"]:
            log.warning("event log %s: %d events written, %d dropped (could not be written: %s)", self.path,
                        self.stats["events"], self.stats["dropped"],
                        "still failing at close" if self._failing else "written again since")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"


class JsonlSink(_LogSink):
    """events.jsonl: one JSON object per face per frame (see the module docstring)."""

    def format(self, result: FrameResult) -> str:
        events = "".join(dumps(event) + "\n" for event in event_records(result, self.labels))
        if result.frame.still:
            return dumps(photo_record(result)) + "\n" + events
        return events

    def write_record(self, record: dict[str, Any]) -> bool:
        """Append any other JSON line (the summary's), at a frame boundary; False if it was dropped."""
        if self.closed:
            raise ValueError(f"{self!r} is closed")
        if self.writer.write(dumps(record) + "\n"):
            self._wrote()
            return True
        self.stats["records_dropped"] += 1
        self._failed(0)
        return False


class CsvSink(_LogSink):
    """events.csv: time, frame, track_id, x, y, w, h, emotion, score, <one column per label>, reason, file."""

    def make_header(self) -> str:
        return ",".join(("time", "frame", "track_id", "x", "y", "w", "h", "emotion", "score") + self.labels
                        + ("reason", "file")) + "\n"

    def __init__(self, *args: Any, **kwargs: Any):
        self._buf = io.StringIO()
        self._csv = csv.writer(self._buf, lineterminator="\n")
        super().__init__(*args, **kwargs)

    def format(self, result: FrameResult) -> str:
        buf = self._buf
        buf.seek(0)
        buf.truncate()
        for r in with_late(result):
            when = iso_time(r.frame.timestamp)
            index = int(r.frame.index)
            file = r.frame.file
            for face in r.faces:
                x, y, w, h = face.box
                self._csv.writerow([when, index, int(face.track_id), int(x), int(y), int(w), int(h), face.label,
                                    f"{float(face.score):.4f}", *(f"{p:.4f}" for p in face.probs.tolist()),
                                    face.reason, file])
            if r.frame.still and not r.faces:  # a photo with no face still gets its row
                self._csv.writerow([when, index, *[""] * (7 + len(self.labels)), NO_FACE, file])
        return buf.getvalue()

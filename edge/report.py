"""`fer-edge report LOG... --out DIR`: how each person's emotions moved over a session.

Reads the event logs the runtime writes (edge/sinks/eventlog.py): JSON Lines (`"type": "event"`
lines; summary lines are skipped; each run's `"type": "run"` line says which model file and settings
made the events, shown at the top of the page) or CSV (header time, frame, track_id, x, y, w, h,
emotion, score, <labels>), and rotated sets: `events.jsonl` also reads `events.jsonl.1`, `.2`, ... beside it, oldest
first. A folder reads every log in it. The same event given twice (a JSONL and a CSV of one run, or a
file named twice) is counted once.

Writes to DIR:
  index.html           one self-contained page (the charts embedded as PNG data), nothing fetched
  overview.png         the share of each emotion per track, one bar per track (at most 60: those with
                       the most events)
  track_<id>.png       per track with two events or more (a face in a photo has one, and no chart):
                       smoothed probabilities over time (stacked area), the label band
                       (the label shown, "uncertain" grey), and the share of each label
  summary.csv          the summary table: per track its file, first/last seen, duration, events,
                       dominant emotion, share of each label, uncertain share, label changes per minute

Charts need matplotlib (`pip install "fer-edge[report]"`); reading and the summary table do not.
A run that restarts (frame numbers start again) within one log is a new session: its tracks are
named "s2 track 1" and so on, so two people with the same ID in two runs never merge. Photo mode and a
folder's videos count IDs from 1 in every file, so a track is also its file's: "a.jpg track 1" and
"b.jpg track 1" are two people.
"""
from __future__ import annotations

import base64
import collections
import csv
import dataclasses
import datetime as _dt
import html
import io
import json
import logging
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .errors import DataError, DeviceError
from .sinks.eventlog import NO_FACE

log = logging.getLogger(__name__)

UNCERTAIN = "uncertain"
#: points drawn per track at most: longer tracks are averaged into this many time bins
MAX_POINTS = 1500
#: a track gets its timeline chart from this many events: a face in a photo has one, and its table row says it all
MIN_EVENTS_FOR_CHART = 2
#: bars in the overview chart at most (the tracks with the most events)
MAX_OVERVIEW_BARS = 60
INSTALL_HINT = 'pip install "fer-edge[report]"  (matplotlib)'
#: one colour per emotion, the same in every chart (FER+ adds contempt)
COLOURS = {"angry": "#d62728", "disgust": "#8c564b", "fear": "#9467bd", "happy": "#f2c500", "sad": "#1f77b4",
           "surprise": "#ff7f0e", "neutral": "#7f7f7f", "contempt": "#17becf", UNCERTAIN: "#d9d9d9"}
_EXTRA = ("#2ca02c", "#e377c2", "#bcbd22", "#aec7e8", "#98df8a")
CSV_FIXED = ("time", "frame", "track_id", "x", "y", "w", "h", "emotion", "score")
#: CSV columns after the labels' that are not probabilities (why a face is "uncertain", the photo's file)
CSV_EXTRA = frozenset({"reason", "file", "source", "image"})


# =========================================================================== reading
@dataclasses.dataclass
class Track:
    """One tracked face: its events in time order."""

    key: str  # "3"; "s2 track 3" when the logs hold more than one session; "a.jpg track 1" for several files
    times: np.ndarray  # (N,) seconds since the first event of the whole report
    frames: np.ndarray  # (N,) frame index
    probs: np.ndarray  # (N, K) smoothed probabilities, in `labels` order
    emotions: list[str]  # (N,) the label shown (an emotion or "uncertain")
    scores: np.ndarray  # (N,)
    file: str = ""  # the image or video file its events came from ("" for a camera or stream)

    @property
    def duration_s(self) -> float:
        return float(self.times[-1] - self.times[0]) if len(self.times) else 0.0


@dataclasses.dataclass
class Session:
    labels: list[str]
    tracks: list[Track]
    start: _dt.datetime | None
    files: list[str]
    events: int
    skipped: int = 0  # lines that were not events (or not readable), counted, not fatal
    duplicates: int = 0
    runs: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # the logs' "type": "run" lines
    #: photo mode: the photos logged (JSONL "photo" lines; 0 for video, cameras and CSV, which logs only
    #: the photos without a face), and the photos in which no face was found (JSONL and CSV), in log order
    photos: int = 0
    faceless: list[str] = dataclasses.field(default_factory=list)

    def recorded_with(self) -> list[str]:
        """One line per distinct model and settings the runs were made with (their "run" lines)."""
        seen: dict[tuple, str] = {}
        for r in self.runs:
            key = tuple(str(r.get(k)) for k in ("model", "model_sha256", "flip_average", "min_confidence",
                                                 "smoothing", "detector"))
            if key not in seen:
                sha = str(r.get("model_sha256") or "")[:12]
                seen[key] = (f"{r.get('model', '?')} (sha256 {sha}), mirror averaging "
                             f"{'on' if r.get('flip_average') else 'off'}, --min-confidence {r.get('min_confidence')}, "
                             f"smoothing {r.get('smoothing')}, detector {r.get('detector')}, fer-edge {r.get('fer_edge')}")
        return list(seen.values())

    def shown_labels(self) -> list[str]:
        """The labels that may appear in the band: the model's, then "uncertain"."""
        return list(self.labels) + [UNCERTAIN]


def expand_logs(paths: Iterable[str | Path]) -> list[Path]:
    """Each LOG with its rotated siblings (oldest first: name.N ... name.1, name); folders: every log in them."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            bases = sorted({_base(p) for p in path.iterdir() if p.is_file() and _is_log(p)})
            out += expand_logs(bases)
            continue
        base = _base(path)
        rotated = sorted((p for p in base.parent.glob(base.name + ".*") if re.fullmatch(r"\d+", p.name[len(base.name) + 1:])),
                         key=lambda p: -int(p.name.rsplit(".", 1)[1]))
        group = rotated + ([base] if base.is_file() else [])
        if path != base and path.is_file() and path not in group:
            group.append(path)
        if not group:
            raise DataError(f"log not found: {path}")
        out += [p for p in group if p not in out]
    return out


def _base(path: Path) -> Path:
    """events.jsonl.3 -> events.jsonl; events.jsonl -> itself."""
    m = re.fullmatch(r"(.+\.(?:jsonl|json|csv|log|ndjson))\.\d+", path.name, flags=re.IGNORECASE)
    return path.with_name(m.group(1)) if m else path


def _is_log(path: Path) -> bool:
    return bool(re.fullmatch(r".+\.(jsonl|ndjson|csv)(\.\d+)?", path.name, flags=re.IGNORECASE))


def _is_csv(path: Path) -> bool:
    return ".csv" in path.name.lower()


def parse_time(text: str) -> _dt.datetime:
    t = _dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)


def _iter_events(path: Path, counters: dict[str, Any]) -> Iterable[dict[str, Any]]:
    """Event dicts {time, frame, track_id, emotion, score, probs, file} from one JSONL or CSV file."""
    try:
        fh = path.open(newline="", encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    with fh:
        if _is_csv(path):
            reader = csv.reader(fh)
            header: list[str] | None = None
            for n, row in enumerate(reader, 1):
                if not row:
                    continue
                if row[0] == "time":  # a header (every rotated file starts with one)
                    header = row
                    if tuple(row[:len(CSV_FIXED)]) != CSV_FIXED:
                        raise DataError(f"{path} line {n}: not a fer-edge CSV event log (header {','.join(row[:9])}...)")
                    continue
                if header is None:
                    raise DataError(f"{path}: not a fer-edge CSV event log (no header line)")
                rec = dict(zip(header, row))
                if rec.get("reason") == NO_FACE and not rec.get("track_id"):  # a photo with no face found
                    counters["faceless"].append(rec.get("file", ""))
                    continue
                try:
                    labels = [k for k in header[len(CSV_FIXED):] if k not in CSV_EXTRA]
                    yield {"time": rec["time"], "frame": int(rec["frame"]), "track_id": int(rec["track_id"]),
                           "emotion": rec["emotion"], "score": float(rec["score"]),
                           "probs": {k: float(rec[k]) for k in labels}, "file": rec.get("file", "")}
                except (KeyError, ValueError):
                    counters["skipped"] += 1
        else:
            for n, line in enumerate(fh, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    if n == 1 and not line.startswith("{"):
                        raise DataError(f"{path}: not a JSON Lines event log (line 1 is not JSON)") from None
                    counters["skipped"] += 1  # a line cut by a crash or a full disk
                    continue
                if isinstance(rec, dict) and rec.get("type") == "run":
                    counters["runs"].append(rec)
                    continue
                if isinstance(rec, dict) and rec.get("type") == "photo":
                    counters["photos"].append(str(rec.get("file") or ""))
                    if not rec.get("faces"):
                        counters["faceless"].append(str(rec.get("file") or ""))
                    continue
                if not isinstance(rec, dict) or rec.get("type", "event") != "event" or "probs" not in rec:
                    if not (isinstance(rec, dict) and rec.get("type") == "summary"):
                        counters["skipped"] += 1
                    continue
                try:
                    yield {"time": rec["time"], "frame": int(rec["frame"]), "track_id": int(rec["track_id"]),
                           "emotion": str(rec["emotion"]), "score": float(rec["score"]),
                           "probs": {str(k): float(v) for k, v in dict(rec["probs"]).items()},
                           "file": str(rec.get("file") or "")}
                except (KeyError, TypeError, ValueError):
                    counters["skipped"] += 1


def read_logs(paths: Iterable[str | Path], fps: float | None = None) -> Session:
    """Every event of the logs (rotated sets and folders expanded), grouped into tracks.

    Time is the events' own clock time, which for a video file is when each frame was processed
    (faster or slower than the video); `fps` puts events at frame / fps seconds instead (video time;
    a later session starts where its clock time says)."""
    files = expand_logs(paths)
    counters: dict[str, Any] = {"skipped": 0, "runs": [], "photos": [], "faceless": []}
    labels: list[str] = []
    seen: set[tuple] = set()
    rows: list[tuple] = []  # (session, track, time, frame, emotion, score, probs, file)
    duplicates = 0
    session, last_frame, last_when = 1, None, None
    for path in files:
        for ev in _iter_events(path, counters):
            key = (ev["time"], ev["frame"], ev["track_id"])
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
            for k in ev["probs"]:
                if k not in labels:
                    labels.append(k)
            try:
                when = parse_time(ev["time"])
            except ValueError:
                counters["skipped"] += 1
                continue
            # frame numbers started again, later: another run appended to this log. (Earlier frames at
            # an earlier time are a newly confirmed track's first events, written late: same run.)
            if last_frame is not None and ev["frame"] < last_frame - 1 and when > last_when:
                session += 1
            last_frame, last_when = ev["frame"], max(when, last_when or when)
            rows.append((session, ev["track_id"], when, ev["frame"], ev["emotion"], ev["score"], ev["probs"], ev["file"]))
    # a photo read twice (a JSONL and a CSV of one run) counts once
    photos, faceless = len(dict.fromkeys(counters["photos"])), list(dict.fromkeys(counters["faceless"]))
    if not rows:
        raise DataError("no events in " + ", ".join(str(p) for p in files)
                        + (f" ({counters['skipped']} unreadable lines)" if counters["skipped"] else "")
                        + (f": no face was found in any of its {max(photos, len(faceless))} photo(s)" if faceless else ""))
    start = min(r[2] for r in rows)
    if fps is not None and fps <= 0:
        raise DataError(f"--fps must be > 0, got {fps}")
    offsets: dict[int, float] = {}  # with fps: a session's time = its first event's clock time + frames / fps
    if fps:
        firsts: dict[int, tuple] = {}
        for r in rows:
            if r[0] not in firsts or (r[3], r[2]) < (firsts[r[0]][3], firsts[r[0]][2]):
                firsts[r[0]] = r
        offsets = {s: (r[2] - start).total_seconds() - r[3] / fps for s, r in firsts.items()}
    several = len({r[0] for r in rows}) > 1
    # photo mode and a folder's videos start their IDs from 1 in every file: face 1 of a.jpg is not face 1
    # of b.jpg, so a track is (session, file, ID), and named by its file when there are several
    file_names = sorted({r[7] for r in rows})
    many_files = len(file_names) > 1
    short = [Path(f).name or "(camera)" for f in file_names]
    uses = collections.Counter(short)
    shown = {f: (n if uses[n] == 1 else f) for f, n in zip(file_names, short)}  # same name, two folders: the path
    groups: dict[tuple[int, str, int], list[tuple]] = {}
    file_first: dict[tuple[int, str], _dt.datetime] = {}  # tracks in the order their files first appear
    for r in rows:
        groups.setdefault((r[0], r[7], r[1]), []).append(r)
        file_first[(r[0], r[7])] = min(r[2], file_first.get((r[0], r[7]), r[2]))
    tracks = []
    for (s, file, tid), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], file_first[kv[0][:2]], kv[0][1], kv[0][2])):
        rs.sort(key=lambda r: (r[2], r[3]))
        key = f"{shown[file]} track {tid}" if many_files else (f"track {tid}" if several else str(tid))
        tracks.append(Track(
            key=f"s{s} {key}" if several else key,
            file=file,
            times=np.array([offsets[s] + r[3] / fps if fps else (r[2] - start).total_seconds() for r in rs]),
            frames=np.array([r[3] for r in rs]),
            probs=np.array([[r[6].get(k, 0.0) for k in labels] for r in rs], np.float32),
            emotions=[r[4] for r in rs],
            scores=np.array([r[5] for r in rs], np.float32)))
    return Session(labels, tracks, start, [str(p) for p in files], len(rows), counters["skipped"], duplicates,
                   counters["runs"], photos, faceless)


# =========================================================================== the numbers
def label_changes(emotions: Sequence[str]) -> int:
    return int(sum(a != b for a, b in zip(emotions, emotions[1:])))


def track_summary(track: Track, session: Session) -> dict[str, Any]:
    n = len(track.emotions)
    counts = {k: 0 for k in session.shown_labels()}
    for e in track.emotions:
        counts[e] = counts.get(e, 0) + 1
    emotions_only = {k: v for k, v in counts.items() if k != UNCERTAIN and v}
    dominant = max(emotions_only, key=emotions_only.get) if emotions_only else UNCERTAIN
    minutes = track.duration_s / 60.0
    first = session.start + _dt.timedelta(seconds=float(track.times[0])) if session.start else None
    last = session.start + _dt.timedelta(seconds=float(track.times[-1])) if session.start else None
    return {"track": track.key, "file": track.file, "first_seen": first.isoformat(timespec="seconds") if first else "",
            "last_seen": last.isoformat(timespec="seconds") if last else "",
            "duration_s": round(track.duration_s, 1), "events": n, "dominant": dominant,
            "share": {k: round(100.0 * v / n, 1) for k, v in counts.items()},
            "uncertain_pct": round(100.0 * counts.get(UNCERTAIN, 0) / n, 1),
            "label_changes": label_changes(track.emotions),
            "changes_per_min": round(label_changes(track.emotions) / minutes, 1) if minutes > 0 else None,
            "mean_probs": {k: round(float(v), 3) for k, v in zip(session.labels, track.probs.mean(0))}}


def summary_rows(session: Session) -> list[dict[str, Any]]:
    return [track_summary(t, session) for t in session.tracks]


def write_summary_csv(rows: list[dict[str, Any]], labels: Sequence[str], path: Path) -> Path:
    fields = ["track", "file", "first_seen", "last_seen", "duration_s", "events", "dominant", "changes_per_min"]
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(fields + [f"{k}_pct" for k in labels])
        for r in rows:
            w.writerow([r[f] if r[f] is not None else "" for f in fields] + [r["share"].get(k, 0.0) for k in labels])
    return path


# =========================================================================== the charts
def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DeviceError(f"fer-edge report draws its charts with matplotlib, which is not installed: {INSTALL_HINT}") from None
    return plt


def colour(label: str, labels: Sequence[str] = ()) -> str:
    if label in COLOURS:
        return COLOURS[label]
    extra = [k for k in labels if k not in COLOURS]
    return _EXTRA[extra.index(label) % len(_EXTRA)] if label in extra else "#000000"


def _binned(track: Track, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """(times, probs) averaged into at most `max_points` equal time bins (all points when fewer)."""
    if len(track.times) <= max_points:
        return track.times, track.probs
    edges = np.linspace(track.times[0], track.times[-1], max_points + 1)
    which = np.clip(np.searchsorted(edges, track.times, side="right") - 1, 0, max_points - 1)
    counts = np.bincount(which, minlength=max_points)
    keep = counts > 0
    sums = np.zeros((max_points, track.probs.shape[1]))
    np.add.at(sums, which, track.probs)
    tsum = np.bincount(which, weights=track.times, minlength=max_points)
    return (tsum[keep] / counts[keep]), (sums[keep] / counts[keep][:, None])


def _segments(track: Track) -> list[tuple[float, float, str]]:
    """(start, end, label) runs of the label shown; a run ends where the next event starts (or
    half a frame gap after its last event when the face left the view)."""
    t, e = track.times, track.emotions
    if not len(t):
        return []
    gaps = np.diff(t)
    step = float(np.median(gaps)) if len(gaps) else 0.1
    step = step if step > 0 else 0.1
    out = []
    start = 0
    for i in range(1, len(t) + 1):
        if i == len(t) or e[i] != e[start] or t[i] - t[i - 1] > 5 * step:
            end = t[i] if i < len(t) and t[i] - t[i - 1] <= 5 * step else t[i - 1] + step
            out.append((float(t[start]), float(end), e[start]))
            start = i
    return out


def track_figure(track: Track, session: Session, summary: dict[str, Any], path: Path) -> Path:
    """One track: stacked area of the probabilities, the label band, the share of each label."""
    plt = _pyplot()
    labels = session.labels
    shown = session.shown_labels()
    fig = plt.figure(figsize=(11, 4.6))
    grid = fig.add_gridspec(2, 2, width_ratios=[4.2, 1.3], height_ratios=[4, 1], hspace=0.08, wspace=0.25)
    ax = fig.add_subplot(grid[0, 0])
    band = fig.add_subplot(grid[1, 0], sharex=ax)
    share = fig.add_subplot(grid[:, 1])
    t, p = _binned(track)
    ax.stackplot(t, p.T, labels=labels, colors=[colour(k, labels) for k in labels], alpha=0.9, linewidth=0)
    ax.set(ylim=(0, 1), ylabel="probability (smoothed)", xlim=(t[0], t[-1] if t[-1] > t[0] else t[0] + 1))
    ax.set_title(f"track {track.key}: {summary['events']} events over {summary['duration_s']:.1f} s, "
                 f"mostly {summary['dominant']}, {summary['label_changes']} label changes", fontsize=10, loc="left")
    ax.tick_params(labelbottom=False)
    for start, end, label in _segments(track):
        band.axvspan(start, end, color=colour(label, labels), linewidth=0)
    band.set(yticks=[], xlabel="seconds since the report's first event", ylabel="label")
    from matplotlib.patches import Patch

    band.legend(handles=[Patch(color=colour(k, labels), label=k) for k in shown], loc="upper left",
                bbox_to_anchor=(0, -0.9), ncol=len(shown), fontsize=8, frameon=False)
    order = [k for k in shown if summary["share"].get(k, 0) > 0]
    values = [summary["share"][k] for k in order]
    bars = share.barh(order[::-1], values[::-1], color=[colour(k, labels) for k in order[::-1]])
    for bar, v in zip(bars, values[::-1]):
        share.text(bar.get_width() + 1, bar.get_y() + bar.get_height() / 2, f"{v:.0f}%", va="center", fontsize=8)
    share.set(xlim=(0, 115), xlabel="% of events", title="label shown")
    share.title.set_fontsize(10)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def overview_figure(rows: list[dict[str, Any]], session: Session, path: Path) -> Path:
    """One horizontal stacked bar per track: the share of each label shown (the MAX_OVERVIEW_BARS tracks with
    the most events when there are more: a folder of 2,000 photos would make a chart too tall to draw)."""
    plt = _pyplot()
    shown = session.shown_labels()
    title = "Share of each label per track"
    if len(rows) > MAX_OVERVIEW_BARS:
        keep = set(sorted(range(len(rows)), key=lambda i: -rows[i]["events"])[:MAX_OVERVIEW_BARS])
        rows = [r for i, r in enumerate(rows) if i in keep]
        title += f" ({MAX_OVERVIEW_BARS} tracks with the most events; every track is in the table)"
    fig, ax = plt.subplots(figsize=(11, 0.9 + 0.42 * len(rows)))
    names = [f"track {r['track']}" for r in rows][::-1]
    left = np.zeros(len(rows))
    for k in shown:
        v = np.array([r["share"].get(k, 0.0) for r in rows][::-1])
        if v.any():
            ax.barh(names, v, left=left, color=colour(k, session.labels), label=k)
            left += v
    ax.set(xlim=(0, 100), xlabel="% of the track's events")
    ax.set_title(title, fontsize=10, loc="left")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


# =========================================================================== the page
def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}" data-file="{html.escape(path.name)}">'


def render_html(session: Session, rows: list[dict[str, Any]], images: dict[str, Path], overview: Path,
                title: str) -> str:
    shown = session.shown_labels()
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in ["track", "first seen", "last seen", "duration (s)", "events",
                                                     "dominant", "changes/min"] + [f"{k} %" for k in shown])
    body = []
    for r in rows:
        cells = [r["track"], r["first_seen"][11:19], r["last_seen"][11:19], r["duration_s"], r["events"], r["dominant"],
                 "" if r["changes_per_min"] is None else r["changes_per_min"]]
        cells += [r["share"].get(k, 0.0) for k in shown]
        body.append("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in cells) + "</tr>")
    sections = "\n".join(
        f'<section class="track" id="track-{esc(r["track"])}"><h2>Track {esc(r["track"])}</h2>'
        f'{_img(images[r["track"]], "timeline of track " + r["track"])}</section>' for r in rows if r["track"] in images)
    single = sum(1 for r in rows if r["track"] not in images)
    start = session.start.isoformat(timespec="seconds") if session.start else "?"
    notes = []
    if session.skipped:
        notes.append(f"{session.skipped} lines were not readable events and were skipped")
    if session.duplicates:
        notes.append(f"{session.duplicates} events appeared twice and were counted once")
    if single:
        notes.append(f"{single} track(s) with a single event (a face in a photo) have no timeline: "
                     "their row in the table is the whole record")
    faceless = session.faceless
    photos_line = ""
    if session.photos or faceless:
        names = esc(", ".join(faceless[:50])) + (f" and {len(faceless) - 50} more" if len(faceless) > 50 else "")
        photos_line = ('<p class="meta">' + (f"{session.photos} photo(s); " if session.photos else "")
                       + f"no face was found in {len(faceless)}" + (f": {names}" if faceless else "") + ".</p>")
    legend = "".join(f'<span class="key"><i style="background:{colour(k, session.labels)}"></i>{esc(k)}</span>'
                     for k in shown)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1180px; color: #222; padding: 0 1rem; }}
h1 {{ font-size: 1.5rem; margin-bottom: .2rem; }} h2 {{ font-size: 1.1rem; margin: 1.6rem 0 .4rem; }}
.meta {{ color: #555; font-size: .9rem; }} img {{ max-width: 100%; height: auto; }}
table {{ border-collapse: collapse; font-size: .85rem; margin: .6rem 0; }}
th, td {{ border: 1px solid #ddd; padding: .25rem .5rem; text-align: right; }}
th {{ background: #f3f3f3; }} td:first-child, td:nth-child(6) {{ text-align: left; }}
.wide {{ overflow-x: auto; }}
.key {{ margin-right: .9rem; font-size: .85rem; white-space: nowrap; }}
.key i {{ display: inline-block; width: .8rem; height: .8rem; margin-right: .3rem; vertical-align: -1px; }}
</style></head>
<body>
<h1>{esc(title)}</h1>
<p class="meta">{len(rows)} track(s), {session.events} events from {start}; logs: {esc(", ".join(session.files))}.
Probabilities are the smoothed ones the runtime logged; the label band is the label it showed
("uncertain" below its --min-confidence).{(" " + esc("; ".join(notes)) + ".") if notes else ""}</p>
{"".join(f'<p class="meta">Recorded with {esc(line)}.</p>' for line in session.recorded_with())}
{photos_line}
<p>{legend}</p>
<h2>Summary</h2>
<div class="wide"><table id="summary"><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(body)}
</tbody></table></div>
<p class="meta">first/last seen: clock time ({esc(start[:10])}, UTC offset {esc(start[19:] or "?")});
changes/min: how often the label shown changed per minute the face was in view.</p>
{_img(overview, "share of each label per track")}
{sections}
<p class="meta">Made by fer-edge report.</p>
</body></html>
"""


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def build_report(logs: Sequence[str | Path], out_dir: str | Path, title: str | None = None,
                 fps: float | None = None) -> dict[str, Any]:
    """Read the logs, write index.html, the PNGs and summary.csv into `out_dir`; returns what was written."""
    session = read_logs(logs, fps)
    _pyplot()  # fail before writing anything when matplotlib is missing
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = summary_rows(session)
    images = {}
    for track, row in zip(session.tracks, rows):
        if len(track.emotions) >= MIN_EVENTS_FOR_CHART:
            images[track.key] = track_figure(track, session, row, out / f"track_{_safe(track.key)}.png")
    overview = overview_figure(rows, session, out / "overview.png")
    summary_csv = write_summary_csv(rows, session.shown_labels(), out / "summary.csv")
    title = title or "Emotion timeline: " + ", ".join(Path(f).name for f in session.files[:3]) + \
        (" ..." if len(session.files) > 3 else "")
    page = out / "index.html"
    page.write_text(render_html(session, rows, images, overview, title), encoding="utf-8")
    return {"html": page, "overview": overview, "tracks": images, "summary_csv": summary_csv, "rows": rows,
            "session": session}


# =========================================================================== the command
def _command():
    import click

    @click.command("report", context_settings={"help_option_names": ["-h", "--help"]})
    @click.argument("logs", nargs=-1, required=True, type=click.Path(path_type=Path))
    @click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("report"),
                  show_default=True, help="Folder for index.html, the PNGs and summary.csv.")
    @click.option("--title", help="Page title (default: the log names).")
    @click.option("--fps", type=click.FloatRange(0, min_open=True),
                  help="Time events by frame number at this rate (video time) instead of their clock time: for "
                       "logs of a video file, which is processed faster or slower than it plays.")
    def report_cmd(logs: tuple[Path, ...], out_dir: Path, title: str | None, fps: float | None) -> None:
        """Emotion timeline of a session from its event logs (JSONL or CSV, rotated sets included).

        \b
        fer-edge report events.jsonl --out report/        also reads events.jsonl.1, .2, ...
        fer-edge report events.csv --out report/
        fer-edge report /var/log/fer-edge/ --out report/  every log in the folder

        Writes one self-contained HTML page (index.html: summary table and per-track charts: smoothed
        probabilities over time as a stacked area, the label band, the share of each emotion), the
        charts as PNGs, and summary.csv. Charts need matplotlib: pip install "fer-edge[report]".
        """
        result = build_report(logs, out_dir, title, fps)
        s = result["session"]
        click.echo(f"{len(result['rows'])} track(s), {s.events} events from {len(s.files)} file(s)"
                   + (f", {s.skipped} unreadable lines skipped" if s.skipped else "")
                   + (f"; {s.photos} photo(s)" if s.photos else "")
                   + (f"; no face found in {len(s.faceless)} photo(s)" if s.faceless else "")
                   + f" -> {result['html']}")

    return report_cmd


report_cmd = _command()

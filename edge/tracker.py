"""IoU tracker: gives each face a stable ID across frames.

Greedy matching on intersection-over-union: all (track, detection) pairs with IoU >= threshold,
best first, each track and detection used once. With a handful of faces per frame this gives the
same answer as the Hungarian algorithm in practice, costs microseconds, and needs no SciPy on a Pi.
Then a second, gated pass for what is left: a detection whose centre moved less than
`max_center_shift` box sizes from an unmatched track's, at a similar size (within 1.5x), continues
that track, nearest first. It keeps the ID of a face that moves fast relative to its size -- at a
low frame rate, or with --detect-every N, where a head turning towards someone easily moves 2/3 of
its width between two detections (IoU 0.2) -- without ever joining two faces that IoU told apart.

A detection no track claims starts a new track (IDs count up from 1 and are never reused). A track
that finds no detection is kept for `max_missed` detection passes -- so a face that the detector
misses for a frame or two keeps its ID -- but is not *visible*: only tracks matched in the latest
pass are reported, so no event is ever logged for a face the detector did not see.

With detection every N frames (`--detect-every N`) the loop does not call `update` in between and
reuses the visible tracks' last boxes: the honest, simple choice (no motion model that could drift
onto the background); at 15-30 fps a face moves little in a few frames, and the crop has a margin.

Confirmation (`TrackGate`): a track reaches the sinks only once it has been matched in
`confirm_frames` (K) detection passes, so a box the detector sees for one pass (a ghost: a second box
on a face, a pattern in the background) never becomes a person in the log, MQTT, the metrics or the
summary. Nothing real is lost: the events of a track's first passes are held back (per track, without
the images) and handed on when it is confirmed, as `FrameResult.late`, with their own frame number and
time; a track that ends before K passes is dropped and counted (`TrackGate.ghosts`). So an event can
reach a log up to K - 1 detection passes (times --detect-every frames) after its frame. Independent
photos (`Frame.still`) need no confirmation (K = 1).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .records import Box, Detection, FaceResult, Frame, FrameResult


@dataclass
class Track:
    id: int
    box: Box
    score: float = 1.0
    keypoints: np.ndarray | None = None  # the latest matched detection's (6, 2) keypoints, if any
    hits: int = 1  # detection passes that matched it
    missed: int = 0  # consecutive detection passes without a match
    age: int = 1  # detection passes since it started

    @property
    def visible(self) -> bool:
        return self.missed == 0


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = min(ax + aw, bx + bw) - max(ax, bx)
    ih = min(ay + ah, by + bh) - max(ay, by)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / float(aw * ah + bw * bh - inter)


def iou_matrix(boxes_a: list[Box], boxes_b: list[Box]) -> np.ndarray:
    """(len(a), len(b)) IoUs of (x, y, w, h) boxes."""
    if not boxes_a or not boxes_b:
        return np.zeros((len(boxes_a), len(boxes_b)), np.float64)
    a = np.asarray(boxes_a, np.float64)[:, None, :]
    b = np.asarray(boxes_b, np.float64)[None, :, :]
    iw = np.minimum(a[..., 0] + a[..., 2], b[..., 0] + b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    ih = np.minimum(a[..., 1] + a[..., 3], b[..., 1] + b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


class IouTracker:
    def __init__(self, iou_threshold: float = 0.3, max_missed: int = 10, max_center_shift: float = 0.75) -> None:
        self.iou_threshold = float(iou_threshold)
        self.max_missed = int(max_missed)
        self.max_center_shift = float(max_center_shift)
        self.tracks: list[Track] = []
        self.next_id = 1
        #: IDs of the tracks the last `update` dropped (the smoother forgets their state)
        self.expired: list[int] = []

    def update(self, detections: list[Detection]) -> list[Track]:
        """Match one detection pass; return the visible tracks (matched or new), by ID."""
        tracks = self.tracks
        ious = iou_matrix([t.box for t in tracks], [d.box for d in detections])
        pairs: list[tuple[int, int]] = []
        if ious.size:
            ti, di = np.nonzero(ious >= self.iou_threshold)
            taken_t: set[int] = set()
            taken_d: set[int] = set()
            for k in np.argsort(-ious[ti, di], kind="stable"):
                t, d = int(ti[k]), int(di[k])
                if t not in taken_t and d not in taken_d:
                    taken_t.add(t)
                    taken_d.add(d)
                    pairs.append((t, d))
        if self.max_center_shift > 0 and len(pairs) < min(len(tracks), len(detections)):
            pairs += self._near_pairs(tracks, detections, {t for t, _ in pairs}, {d for _, d in pairs})
        for t, d in pairs:
            track, det = tracks[t], detections[d]
            track.box, track.score, track.keypoints = det.box, det.score, det.keypoints
            track.hits += 1
            track.missed = 0
        matched_t = {t for t, _ in pairs}
        matched_d = {d for _, d in pairs}
        for t, track in enumerate(tracks):
            track.age += 1
            if t not in matched_t:
                track.missed += 1
        self.expired = [t.id for t in tracks if t.missed > self.max_missed]
        if self.expired:
            self.tracks = tracks = [t for t in tracks if t.missed <= self.max_missed]
        for d, det in enumerate(detections):
            if d not in matched_d:
                tracks.append(Track(self.next_id, det.box, det.score, det.keypoints))
                self.next_id += 1
        return self.visible()

    def _near_pairs(self, tracks, detections, used_t: set[int], used_d: set[int]) -> list[tuple[int, int]]:
        """Unmatched (track, detection) pairs close enough and alike in size, nearest first, each once."""
        candidates = []
        for t, track in enumerate(tracks):
            if t in used_t:
                continue
            tx, ty, tw, th = track.box
            for d, det in enumerate(detections):
                if d in used_d:
                    continue
                dx, dy, dw, dh = det.box
                size = (tw + th + dw + dh) / 4.0
                ratio = (dw * dh) / float(tw * th) if tw * th else 0.0
                if not 1 / 2.25 <= ratio <= 2.25:  # sides within 1.5x
                    continue
                dist = ((dx + dw / 2 - tx - tw / 2) ** 2 + (dy + dh / 2 - ty - th / 2) ** 2) ** 0.5
                if dist <= self.max_center_shift * size:
                    candidates.append((dist, t, d))
        pairs = []
        for _, t, d in sorted(candidates):
            if t not in used_t and d not in used_d:
                used_t = used_t | {t}
                used_d = used_d | {d}
                pairs.append((t, d))
        return pairs

    def visible(self) -> list[Track]:
        """Tracks matched in the latest detection pass, by ID."""
        return sorted((t for t in self.tracks if t.missed == 0), key=lambda t: t.id)

    def reset(self) -> None:
        """Forget every face and count IDs from 1 again (a new, unrelated image)."""
        self.expired = [t.id for t in self.tracks]
        self.tracks = []
        self.next_id = 1


#: the image a held-back event's Frame carries: none (the held events must not keep frames alive)
_NO_IMAGE = np.zeros((0, 0, 3), np.uint8)


class TrackGate:
    """Holds back a track's events until it has been seen in `confirm_frames` detection passes.

    `gate(result, tracks)` takes a frame's result (every visible face) and the tracker's tracks after
    that frame; it returns the result with only the confirmed faces, and the earlier events of tracks
    confirmed in this frame in `late`. Held events of a track that the tracker no longer has (expired,
    or forgotten for a new photo or file) are dropped, and the track counted in `ghosts`.
    """

    def __init__(self, confirm_frames: int = 1) -> None:
        if int(confirm_frames) < 1:
            raise ValueError(f"confirm_frames must be >= 1, got {confirm_frames}")
        self.confirm_frames = int(confirm_frames)
        self._held: dict[int, list[tuple[Frame, FaceResult]]] = {}
        self.ghosts = 0  # tracks dropped before they were confirmed
        self.held_events = 0  # events released late (written when their track was confirmed)

    @property
    def holding(self) -> int:
        """Tracks whose events are held back now."""
        return len(self._held)

    def gate(self, result: FrameResult, tracks: list[Track]) -> FrameResult:
        held = self._held
        if held:
            alive = {t.id for t in tracks}
            for gone in [tid for tid in held if tid not in alive]:
                del held[gone]
                self.ghosts += 1
        k = self.confirm_frames
        if not held and (k <= 1 or result.frame.still or all(t.hits >= k for t in tracks)):
            return result  # the usual case: nothing to hold back or release
        hits = {t.id: t.hits for t in tracks}
        shown: list[FaceResult] = []
        late: dict[int, FrameResult] = {}
        light = None
        for face in result.faces:
            confirmed = result.frame.still or hits.get(face.track_id, 0) >= self.confirm_frames
            if not confirmed:
                if light is None:
                    light = dataclasses.replace(result.frame, image=_NO_IMAGE, gray=None)
                held.setdefault(face.track_id, []).append((light, face))
                continue
            for frame, old in held.pop(face.track_id, ()):
                entry = late.get(frame.index)
                if entry is None:
                    entry = late[frame.index] = FrameResult(frame, [], result.labels, result.fps, {})
                entry.faces.append(old)
                self.held_events += 1
            shown.append(face)
        if len(shown) == len(result.faces) and not late:
            return result
        return dataclasses.replace(result, faces=shown, late=[late[i] for i in sorted(late)])

    def forget(self) -> None:
        """Drop every held event (the tracker forgot every face): their tracks count as ghosts."""
        self.ghosts += len(self._held)
        self._held.clear()

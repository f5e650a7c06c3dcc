"""The frame loop: source -> detect -> track -> classify each face -> smooth -> sinks.

`Pipeline.run` is the whole product in a screenful; `run(cfg)` builds every stage from a RunConfig
(source first, so a missing camera is reported before anything slow is loaded), installs the
SIGINT/SIGTERM handlers and tells systemd where it stands. Everything is built once, before the
first frame: the loop itself only calls stage methods, times them and hands a FrameResult on.

Detection around tracked faces: a full-frame search is the most expensive stage by far (Haar: 90 %
of a frame's time). While faces are tracked, the loop searches the whole frame only every
`full_scan_every` detection passes, and in between only a window around each tracked face (the box
grown by ROI_MARGIN of its size on every side, times --detect-every), which costs a few per cent of
a full search. A
pass that loses a face, or a frame with no face tracked, is always a full search, so a face leaving
a window is found again at once; only a *new* face appearing beside a tracked one waits for the next
full search (at most full_scan_every - 1 frames). full_scan_every = 1 turns this off.

What reaches the sinks: `Pipeline.run` passes each frame's result through `tracker.TrackGate`, so a
face is handed on once its track has been seen in confirm_frames detection passes (its first frames
then, in FrameResult.late); `process` itself returns every visible face. A still (a photo) or the
first frame of another file (the next video of a folder) starts afresh (`start_afresh`): nothing is
carried over from the frame before, and a photo is always searched whole.

Stage times (ms, per frame, in FrameResult.stage_ms):
  grab        waiting for the source's next frame (for a live source: idle time, not work)
  detect      the face detector (0 on frames between detections with --detect-every N)
  preprocess  cropping, grayscale, resize, quantisation of every face
  classify    the TFLite invoke of every face
  track       the IoU tracker and the smoother
  sink        all sinks' write() (the previous frame's, see records.FrameResult)
"""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from .align import Aligner, face_quality
from .classifier import EmotionClassifier
from .config import DetectorConfig, RunConfig
from .errors import ConfigError, DeviceError, ModelError
from .notify import Notifier
from .records import Box, Detection, FaceResult, Frame, FrameResult
from .smoother import UNCERTAIN, Smoother
from .sources import Source, open_source
from .tracker import IouTracker, TrackGate, iou
from .detectors.base import suppress_duplicates

log = logging.getLogger(__name__)

STAGES = ("grab", "detect", "preprocess", "classify", "track", "sink")
#: each face crop grows by this fraction of the box on every side (Haar boxes are tight)
CROP_MARGIN = 0.1
#: weight of the newest frame in the frames/s estimate
FPS_EMA = 0.1
#: the search window around a tracked face: its box grown by this fraction of its size on each side
ROI_MARGIN = 0.6
#: two detections from overlapping windows with at least this IoU are the same face
ROI_DUPLICATE_IOU = 0.5


def grow_box(box: Box, margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the box grown by `margin` of its size on each side, clipped to the frame."""
    x, y, w, h = box
    mx, my = int(round(w * margin)), int(round(h * margin))
    return max(0, x - mx), max(0, y - my), min(width, x + w + mx), min(height, y + h + my)


def crop_face(image: np.ndarray, box: Box, margin: float = CROP_MARGIN) -> np.ndarray:
    """The box grown by `margin` on each side, clipped to the frame (a view, no copy)."""
    x0, y0, x1, y1 = grow_box(box, margin, image.shape[1], image.shape[0])
    return image[y0:y1, x0:x1]


def detect_around(detector, image: np.ndarray, boxes: list[Box], margin: float = ROI_MARGIN) -> list[Detection]:
    """Run `detector` only in a window around each box; detections in full-frame coordinates."""
    height, width = image.shape[:2]
    found: list[Detection] = []
    for box in boxes:
        x0, y0, x1, y1 = grow_box(box, margin, width, height)
        for det in detector.detect(image[y0:y1, x0:x1]):
            moved = det.moved(x0, y0)
            if all(iou(moved.box, other.box) < ROI_DUPLICATE_IOU for other in found):
                found.append(moved)
    return found


@dataclass
class RunSummary:
    frames: int = 0
    faces: int = 0
    seconds: float = 0.0
    stopped_by: str = "end of source"
    source: dict[str, int] = field(default_factory=dict)
    #: per-stage lists of ms, one per frame (only when the pipeline records timings: bench, soak)
    timings: dict[str, list[float]] | None = None
    faces_per_frame: list[int] | None = None
    frame_end: list[float] | None = None  # time.perf_counter() after each frame's sinks
    #: tracks dropped before they were confirmed (seen in fewer than confirm_frames detection passes)
    ghosts: int = 0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class Pipeline:
    """The stages, wired. `run(source)` loops until the source ends, `stop()` or max_frames."""

    def __init__(
        self,
        detector,
        classifier: EmotionClassifier,
        tracker: IouTracker,
        smoother: Smoother,
        sinks: Iterable[Any] = (),
        detect_every: int = 1,
        notifier: Notifier | None = None,
        record_timings: bool = False,
        margin: float = CROP_MARGIN,
        full_scan_every: int = 1,
        aligner: Aligner | None = None,
        max_yaw: float = 0.0,
        min_readable: int = 0,
        confirm_frames: int = 1,
        photo_search: Any = None,
    ) -> None:
        if int(detect_every) < 1:
            raise ConfigError(f"detect_every must be >= 1, got {detect_every}")
        if int(full_scan_every) < 1:
            raise ConfigError(f"full_scan_every must be >= 1, got {full_scan_every}")
        self.detector = detector
        #: stills (Frame.still) are searched by this instead, when given (detectors/photo_search.py)
        self.photo_search = photo_search
        self.classifier = classifier
        self.tracker = tracker
        self.smoother = smoother
        self.sinks = list(sinks)
        self.detect_every = int(detect_every)
        self.full_scan_every = int(full_scan_every)
        self._since_full = 0  # detection passes since the last full-frame search
        self.full_scans = 0
        self.roi_scans = 0
        self.notifier = notifier or Notifier(env={})
        self.record_timings = record_timings
        self.margin = float(margin)
        #: detected face -> model input; None: the plain box crop grown by `margin` (the old way)
        self.aligner = aligner
        self.max_yaw = float(max_yaw)
        self.min_readable = int(min_readable)
        #: what reaches the sinks: confirmed tracks only (see tracker.TrackGate); Pipeline.run applies it
        self.gate = TrackGate(confirm_frames)
        self._file: str | None = None  # the file of the previous frame (a new file starts afresh)
        self.labels = tuple(classifier.labels)
        self.fps = 0.0
        self.frames = 0
        self.faces = 0
        self._stop_reason: str | None = None
        self._source: Source | None = None
        self._last_t: float | None = None

    # ------------------------------------------------------------------ control
    def stop(self, reason: str = "stop requested") -> None:
        """End the loop after the current frame (safe from a signal handler)."""
        if self._stop_reason is None:
            self._stop_reason = reason
        if self._source is not None:
            self._source.stop()

    @property
    def stop_requested(self) -> bool:
        return self._stop_reason is not None

    def status(self) -> str:
        return f"{self.fps:.1f} fps, {self.frames} frames, {self.faces} faces"

    # ------------------------------------------------------------------ one frame
    def process(self, frame: Frame, stage_ms: dict[str, float]) -> FrameResult:
        """Detect (every N frames), track, classify and smooth every face of one frame."""
        clock = time.perf_counter
        t0 = clock()
        if self.frames % self.detect_every == 0 or frame.still:
            detections = self.detect(frame)
            t1 = clock()
            tracks = self.tracker.update(detections)
            if self.tracker.expired:
                self.smoother.forget(self.tracker.expired)
        else:
            t1 = clock()
            tracks = self.tracker.visible()  # between detections: last boxes (see tracker.py)
        prep = infer = 0.0
        faces = []
        t2 = clock()
        for track in tracks:
            a = clock()
            tensor = self.prepare(frame.image, track.box, track.keypoints)
            b = clock()
            probs = self.classifier.invoke(tensor)
            c = clock()
            smoothed, label, score = self.smoother.update(track.id, probs)
            reason = face_quality(track.box, track.keypoints, self.max_yaw, self.min_readable)
            if reason:
                label = UNCERTAIN
            faces.append(FaceResult(track.id, track.box, smoothed, label, score, probs, reason, track.keypoints))
            prep += b - a
            infer += c - b
        t3 = clock()
        stage_ms["detect"] = (t1 - t0) * 1e3
        stage_ms["preprocess"] = prep * 1e3
        stage_ms["classify"] = infer * 1e3
        stage_ms["track"] = ((t2 - t1) + (t3 - t2 - prep - infer)) * 1e3
        if self._last_t is not None and t3 > self._last_t:
            rate = 1.0 / (t3 - self._last_t)
            self.fps = rate if self.fps == 0.0 else self.fps + FPS_EMA * (rate - self.fps)
        self._last_t = t3
        return FrameResult(frame, faces, self.labels, self.fps, stage_ms)

    def start_afresh(self) -> None:
        """Forget every face (a new, unrelated photo or file): tracks, smoothing, held events; the next
        detection pass searches the whole frame and IDs count from 1 again."""
        self.gate.forget()
        self.tracker.reset()
        self.smoother.forget(self.tracker.expired)
        self.tracker.expired = []
        self._since_full = 0

    def prepare(self, image: np.ndarray, box: Box, keypoints: np.ndarray | None) -> np.ndarray:
        """One face -> the classifier's input tensor (aligned, or the box crop when no aligner)."""
        if self.aligner is not None:
            return self.classifier.prepare_pixels(self.aligner(image, box, keypoints))
        return self.classifier.prepare(crop_face(image, box, self.margin))

    def detect(self, frame: Frame) -> list[Detection]:
        """A detection pass: around the tracked faces, or the whole frame when due (see module doc); a
        photo, with the photo search when there is one."""
        if frame.still and self.photo_search is not None:
            self.full_scans += 1
            return sorted(self.photo_search.detect(frame.image), key=lambda d: (d.box[0], d.box[1]))
        tracked = self.tracker.visible()
        lost = any(t.missed for t in self.tracker.tracks)
        if tracked and not lost and self._since_full + 1 < self.full_scan_every:
            self._since_full += 1
            self.roi_scans += 1
            # a face moves detect_every times further between passes: widen the window alike
            return suppress_duplicates(
                detect_around(self.detector, frame.image, [t.box for t in tracked], ROI_MARGIN * self.detect_every))
        self._since_full = 0
        self.full_scans += 1
        # new faces get their IDs left to right (in a photo: face 1 is the leftmost)
        return sorted(suppress_duplicates(self.detector.detect(frame.image, frame.gray)),
                      key=lambda d: (d.box[0], d.box[1]))

    # ------------------------------------------------------------------ the loop
    def run(self, source: Source, max_frames: int | None = None) -> RunSummary:
        self._source = source
        source.on_idle = self._idle
        if self._stop_reason is not None:
            source.stop()
        clock = time.perf_counter
        summary = RunSummary()
        if self.record_timings:
            summary.timings = {s: [] for s in STAGES}
            summary.faces_per_frame = []
            summary.frame_end = []
        sink_ms = 0.0
        # STATUS for systemd: the frame rate, plus any sink that is losing data (disk full)
        watched = [sink for sink in self.sinks if hasattr(sink, "health")]

        def status() -> str:
            notes = [note for sink in watched if (note := sink.health)]
            return "; ".join([self.status(), *notes]) if notes else self.status()

        start = clock()
        frames = iter(source)
        try:
            while self._stop_reason is None:
                t0 = clock()
                frame = next(frames, None)
                if frame is None:
                    break
                if frame.still or frame.file != self._file:
                    if self._file is not None:  # an independent photo, or the next file of a folder
                        self.start_afresh()
                    self._file = frame.file
                result = self.gate.gate(self.process(frame, {"grab": (clock() - t0) * 1e3, "sink": sink_ms}),
                                        self.tracker.tracks)
                t1 = clock()
                for sink in self.sinks:
                    sink.write(result)
                sink_ms = (clock() - t1) * 1e3
                self.frames += 1
                self.faces += len(result.faces) + sum(len(r.faces) for r in result.late)
                if summary.timings is not None:
                    for stage in STAGES[:-1]:
                        summary.timings[stage].append(result.stage_ms[stage])
                    summary.timings["sink"].append(sink_ms)
                    summary.faces_per_frame.append(len(result.faces))
                    summary.frame_end.append(clock())
                if not self.notifier.ready_sent:
                    self.notifier.ready(status())
                self.notifier.tick(status)  # a callable: formatted only when a STATUS is due
                if max_frames is not None and self.frames >= max_frames:
                    self.stop("max frames")
                for sink in self.sinks:
                    if getattr(sink, "should_stop", False):
                        self.stop(f"{type(sink).__name__} asked to stop")
        finally:
            source.on_idle = None
            self._source = None
            summary.seconds = clock() - start
            summary.frames = self.frames
            summary.faces = self.faces
            summary.source = source.stats()
            summary.stopped_by = self._stop_reason or "end of source"
            self.gate.forget()  # tracks still unconfirmed at the end never were
            self._file = None
            summary.ghosts = self.gate.ghosts
        return summary

    def _idle(self) -> None:
        """While a live source waits for a frame: STATUS only. The watchdog is fed only by frames that
        went through, so a source that stalls (or never delivers) lets systemd's watchdog fire; the
        source itself gives up first (frame_timeout_s + max_reconnect_s, then exit 4)."""
        self.notifier.tick(lambda: f"waiting for {self._source.name if self._source else 'source'}; " + self.status(),
                           watchdog=False)


def analyse_still(pipeline: Pipeline, image: np.ndarray, name: str = "", index: int = 0,
                  gray: np.ndarray | None = None) -> FrameResult:
    """One still image through the pipeline, unrelated to anything seen before.

    The tracker and the smoother start afresh (no emotion carried over from the previous photo;
    face IDs count from 1 in every image) and the whole image is searched. Photo mode and the
    upload app both call this, so a photo is detected, aligned and classified exactly as a frame is.
    """
    pipeline.start_afresh()
    frame = Frame(index, image, time.time(), name, gray=gray, file=name, still=True)
    return pipeline.process(frame, {"grab": 0.0, "sink": 0.0})


def photo_search_for(detector, d: DetectorConfig) -> Any:
    """The photo search around `detector` when `[detector] photo_search` is on and it applies (BlazeFace)."""
    from .detectors.photo_search import PhotoSearch

    return PhotoSearch.for_detector(detector, d.min_face) if d.photo_search else None


def still_pipeline(classifier: EmotionClassifier, detector, cfg: RunConfig | None = None) -> Pipeline:
    """A pipeline for still images: no smoothing, a full search of every image (see analyse_still)."""
    cfg = cfg if cfg is not None else RunConfig()
    d = cfg.detector
    return Pipeline(detector, classifier, IouTracker(cfg.tracker.iou_threshold, cfg.tracker.max_missed),
                    Smoother(classifier.labels, "none", min_confidence=cfg.tracker.min_confidence),
                    aligner=Aligner.for_detector(getattr(detector, "name", "haar"), classifier.input_size, d.align),
                    max_yaw=d.max_yaw, min_readable=d.min_readable,
                    photo_search=photo_search_for(detector, d))


# --------------------------------------------------------------------------- building from a config
def resolve_model(model: str | None) -> Path:
    """The classifier model to load: the given path, or the shipped default; ModelError if absent."""
    if model:
        path = Path(model).expanduser()
        if not path.is_file():
            raise ModelError(f"model not found: {path}")
        return path
    from fer_edge_models import DEFAULT_MODEL

    if not DEFAULT_MODEL.is_file():
        raise ModelError(
            f"no model given and the default model {DEFAULT_MODEL} does not exist; make one with "
            "`fer-train fit --model edgenet --data fer2013.npz --out runs` then "
            "`fer-convert runs/<run> --int8`, or pass --model PATH"
        )
    return DEFAULT_MODEL


def make_classifier(cfg: RunConfig) -> EmotionClassifier:
    c = cfg.classifier
    return EmotionClassifier(resolve_model(c.model), threads=c.threads, edgetpu=c.edgetpu, flip_average=c.flip_average)


@contextlib.contextmanager
def stop_on_signals(pipeline: Pipeline) -> Iterator[None]:
    """SIGINT / SIGTERM -> pipeline.stop(): the loop ends, sinks flush, the source is released.

    A second SIGINT while stopping raises KeyboardInterrupt (an impatient Ctrl-C still works).
    A signal that came during start-up, before this handler existed (remembered by
    `signals.catch_early`), stops the pipeline at once. Only the main thread can own signal
    handlers; elsewhere this does nothing.
    """
    from . import signals

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if pipeline.stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        log.info("%s received: stopping", name)
        pipeline.stop(name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    early = signals.pending()
    if early is not None:
        log.info("%s received while starting: stopping", early)
        pipeline.stop(early)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def build_pipeline(cfg: RunConfig, classifier: EmotionClassifier, sinks: Iterable[Any] = (),
                   notifier: Notifier | None = None, record_timings: bool = False, detector=None) -> Pipeline:
    """Every stage but the source, from the config (the detector may be passed in, already built)."""
    from .detectors import create_detector

    t = cfg.tracker
    d = cfg.detector
    detector = detector if detector is not None else create_detector(d)
    return Pipeline(
        detector,
        classifier,
        IouTracker(t.iou_threshold, t.max_missed),
        Smoother.from_config(classifier.labels, t),
        sinks,
        detect_every=cfg.detector.every,
        notifier=notifier,
        record_timings=record_timings,
        full_scan_every=cfg.detector.full_scan_every,
        aligner=Aligner.for_detector(detector.name, classifier.input_size, align=d.align),
        max_yaw=d.max_yaw,
        min_readable=d.min_readable,
        confirm_frames=t.confirm_frames,
        photo_search=photo_search_for(detector, d),
    )


def run(
    cfg: RunConfig,
    *,
    use_sinks: bool = True,
    extra_sinks: Iterable[Any] = (),
    notifier: Notifier | None = None,
    record_timings: bool = False,
    on_ready: Any = None,
) -> RunSummary:
    """Build everything from `cfg`, run until the source ends, a signal, or max_frames; clean up.

    Order: the display check (exit 6 for --display without a display), source (exit 4 if the
    camera is missing), classifier and detector (exit 3 for a bad model), sinks, then the loop. Whatever was built is
    released in reverse order, however the run ends: sinks flushed and closed, then the source.
    """
    from .detectors import create_detector

    notifier = notifier if notifier is not None else Notifier()
    if use_sinks and cfg.display.enabled:  # fail fast, before a camera or model is opened
        from .sinks.display import display_available

        ok, why = display_available()
        if not ok:
            raise DeviceError(why)
    with contextlib.ExitStack() as stack:
        source = open_source(cfg.source)
        stack.callback(source.close)
        classifier = make_classifier(cfg)
        detector = create_detector(cfg.detector)
        stack.callback(detector.close)
        sinks: list[Any] = []
        if use_sinks:
            from .sinks import build_sinks, close_sinks

            sinks = build_sinks(cfg, classifier.labels)
            stack.callback(close_sinks, sinks)
        extra = list(extra_sinks)
        stack.callback(_close_all, extra)
        sinks = sinks + extra
        for sink in sinks:
            attach = getattr(sink, "attach_source_stats", None)
            if attach is not None:
                attach(source.stats)
            attach = getattr(sink, "attach_source_fps", None)
            if attach is not None:  # the overlay video plays at the source's rate
                attach(source.fps)
        pipeline = build_pipeline(cfg, classifier, sinks, notifier, record_timings, detector)
        if pipeline.photo_search is not None:
            stack.callback(pipeline.photo_search.close)
        if use_sinks:
            from .sinks.eventlog import JsonlSink

            record = run_record(cfg, source.name, detector, classifier, pipeline.photo_search is not None)
            for sink in sinks:
                if isinstance(sink, JsonlSink):
                    sink.write_record(record)
        if on_ready is not None:
            on_ready(pipeline, source)
        else:
            log.info("running: %s -> %s -> %s", source.name, detector.describe(), classifier.describe())
        try:
            with stop_on_signals(pipeline):
                summary = pipeline.run(source, cfg.max_frames)
        finally:
            notifier.stopping(pipeline.status())
    log.info(
        "stopped (%s): %d frames in %.1fs (%.1f fps), %d faces; %d unconfirmed track(s) not logged "
        "(seen in fewer than %d detection passes); source: %s",
        summary.stopped_by, summary.frames, summary.seconds, summary.fps, summary.faces, summary.ghosts,
        cfg.tracker.confirm_frames, ", ".join(f"{k} {v}" for k, v in summary.source.items()),
    )
    return summary


def run_record(cfg: RunConfig, source_name: str, detector: Any, classifier: EmotionClassifier,
               photo_search: bool = False) -> dict[str, Any]:
    """The JSONL log's line at the start of a run (`"type": "run"`): what produced the events after it --
    the model file and its sha256, the detector, and the settings that change what is logged -- so a log
    read months later says how it was made (`fer-edge report` shows it)."""
    from . import __version__
    from .contract import file_sha256
    from .sinks.eventlog import iso_time

    t = cfg.tracker
    return {"type": "run", "time": iso_time(time.time()), "fer_edge": __version__, "source": source_name,
            "model": classifier.model_path.name, "model_sha256": file_sha256(classifier.model_path),
            "device": classifier.device, "labels": list(classifier.labels), "flip_average": classifier.flip_average,
            "detector": detector.describe(), "min_confidence": t.min_confidence, "smoothing": t.smoothing,
            "max_yaw": cfg.detector.max_yaw, "min_readable": cfg.detector.min_readable,
            "photo_search": photo_search}


def _close_all(sinks: list[Any]) -> None:
    for sink in reversed(sinks):
        try:
            sink.close()
        except Exception:  # noqa: BLE001
            log.exception("closing %r failed", sink)

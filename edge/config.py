"""Runtime configuration: one dataclass per stage, filled from TOML, overridden by CLI flags.

A TOML file has one table per stage, named like the fields below, e.g.

    [source]
    camera = 0
    [classifier]
    model = "/usr/share/fer-edge/models/fer_default_int8.tflite"
    threads = 2
    [log]
    jsonl = "/var/log/fer-edge/events.jsonl"

`deploy/config.example.toml` lists every key with its default.

Every value read from a file is checked against its field's type hint (edge/typecheck.py): the
hints below are the schema. A wrong type or an out-of-range value is a ConfigError that names the
file, the table and the key, e.g. `config.toml [metrics] port: expected an integer from 1 to 65535,
got the integer 99999` (exit 3). A field added here is validated without further code.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Annotated, Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .errors import ConfigError
from .typecheck import Mismatch, OneOf, Range, check, field_hints

Port = Annotated[int, Range(1, 65535)]
NonNegative = Annotated[int, Range(0)]
Seconds = Annotated[float, Range(0)]


@dataclasses.dataclass
class SourceConfig:
    camera: Annotated[int, Range(0, 255)] | None = None  # OpenCV camera index
    picamera: bool = False  # Raspberry Pi camera via picamera2
    path: str | None = None  # video file, image, folder of images, or rtsp://, http:// URL
    width: Annotated[int, Range(16, 8192)] = 640
    height: Annotated[int, Range(16, 8192)] = 480
    fps: Annotated[float, Range(1, 240)] = 30.0
    lores_width: NonNegative = 320  # picamera2 lores stream used for detection (0 = off)
    lores_height: NonNegative = 240
    loop: bool = False  # replay a file source forever (soak tests)
    reconnect: bool = True  # live sources: reopen with backoff when lost
    max_reconnect_s: Seconds = 30.0  # a lost live source is reopened for this long, then exit 4
    frame_timeout_s: Annotated[float, Range(0, lo_open=True)] = 10.0  # live: no frame this long = lost


@dataclasses.dataclass
class DetectorConfig:
    # "blazeface" (short range), "blazeface-full" (small/far faces), "haar", or "whole-image" (no detection: each
    # image is one face crop, for datasets of crops)
    kind: str = "blazeface"
    model: str | None = None  # a BlazeFace .tflite to use instead of the shipped one
    scale: Annotated[float, Range(0.05, 1)] = 0.5  # Haar: detect on a frame downscaled by this factor
    # smallest face side in full-frame px; 0 = the detector's own (Haar: 48; BlazeFace: what the short-range
    # model sees, ~1/6 of the frame's longer side); with kind = "blazeface", a value below that picks the
    # full-range model
    min_face: Annotated[int, Range(0, 4096)] = 0
    every: Annotated[int, Range(1, 1000)] = 1  # run detection every N frames; track in between
    # BlazeFace: keep detections scoring at least this. 0.5, MediaPipe's own default for these models: on PublicTest
    # faces in scenes it finds 76 % against 69 % at 0.6, end to end 49 % against 45 % (benchmarks/pipeline_accuracy.py)
    score_threshold: Annotated[float, Range(0, 1)] = 0.5
    equalize: str = "none"  # Haar: "none", "hist" (global equalizeHist) or "clahe" (see detectors/haar.py)
    full_scan_every: Annotated[int, Range(1, 1000)] = 5  # while faces are tracked, search the whole frame every N detections, around them otherwise
    threads: Annotated[int, Range(1, 64)] = 1  # BlazeFace interpreter threads
    align: bool = True  # level the eyes and frame the face like FER2013 (needs keypoints: BlazeFace)
    # |yaw| above this (0 frontal .. 1 nose at an eye) -> "uncertain" (0 = off). 0.7: on PublicTest faces in
    # scenes (benchmarks/pipeline_accuracy.py) accuracy is flat below it (~67 %) and under half beyond it
    max_yaw: Annotated[float, Range(0, 1)] = 0.7
    # face box side below this (px) -> "uncertain" (0 = off). 28: the smallest box at which the default model
    # loses at most 5 pp on PublicTest (benchmarks/readable_size.py: 28 px -4.7 pp, 24 px -8.4 pp, 16 px -21 pp)
    min_readable: Annotated[int, Range(0, 4096)] = 28
    # photos (an image, or a folder's images) with BlazeFace: also search overlapping windows with the full-range
    # model, a second look confirming each face they find, so small faces in large photos are found (group photos
    # of 1280x960-4032x3024: 6 % of faces found in one pass, 68 % with it; benchmarks/group_photos.py). Never video
    photo_search: bool = True


@dataclasses.dataclass
class ClassifierConfig:
    model: str | None = None  # None = the shipped default in models/
    threads: Annotated[int, Range(1, 64)] = 1
    edgetpu: bool = False
    flip_average: bool = False  # average each face with its mirror image: +0.8-1.1 pp, 2x classifier time


@dataclasses.dataclass
class TrackerConfig:
    iou_threshold: Annotated[float, Range(0, 1)] = 0.3
    max_missed: NonNegative = 10  # frames a track survives without a matching detection
    confirm_frames: Annotated[int, Range(1, 100)] = 3  # a track is logged once seen in this many detection passes (its first events then); photos: 1 (benchmarks/ghost_tracks.py)
    smoothing: str = "ema"  # "ema", "window" or "none"
    ema_alpha: Annotated[float, Range(0, 1, lo_open=True)] = 0.4
    window: Annotated[int, Range(1)] = 5
    min_confidence: Annotated[float, Range(0, 1)] = 0.62  # below this the label is "uncertain" (calibrated models: more often wrong than right)
    switch_margin: Annotated[float, Range(0, 1)] = 0.2  # hysteresis: a new label takes over when it leads the shown one by this much...
    switch_frames: NonNegative = 5  # ...or has led for this many frames in a row (margin 0 or frames <= 1: no hysteresis)


@dataclasses.dataclass
class LogConfig:
    jsonl: str | None = None
    csv: str | None = None
    max_bytes: NonNegative = 50_000_000  # rotate log files at this size (0 = never)
    backups: NonNegative = 5
    summary_every_s: Seconds = 60.0  # periodic per-track summary (0 = off)
    save_frames: str | None = None  # folder; off by default (privacy)
    save_frames_every_s: Seconds = 1.0  # at most one saved frame per this many seconds of video time
    save_video: str | None = None  # annotated video of every frame (.mp4 or .avi); off by default (privacy)
    fsync_every_s: Seconds = 5.0  # os.fsync the event logs at most this often (0 = only at rotation/close)


@dataclasses.dataclass
class DisplayConfig:
    enabled: bool = False
    window: str = "fer-edge"


@dataclasses.dataclass
class MqttConfig:
    host: str | None = None  # None = off
    port: Port | None = None  # None = 1883, or 8883 with tls
    topic: str = "fer-edge/events"
    client_id: str = "fer-edge"
    username: str | None = None
    password: str | None = None
    qos: Annotated[int, OneOf(0, 1, 2)] = 0
    per_track: bool = False  # publish to <topic>/<track_id> instead of <topic>
    keepalive: Annotated[int, Range(5, 3600)] = 30  # seconds
    tls: bool = False  # TLS to the broker (credentials never in clear text); see the README
    ca_file: str | None = None  # CA certificate(s) that signed the broker's; None = the system's CAs
    cert_file: str | None = None  # client certificate, for a broker that requires one
    key_file: str | None = None  # the client certificate's private key (None: it is in cert_file)


@dataclasses.dataclass
class MetricsConfig:
    port: Port | None = None  # Prometheus exporter port; None = off
    host: str = "127.0.0.1"


@dataclasses.dataclass
class RunConfig:
    source: SourceConfig = dataclasses.field(default_factory=SourceConfig)
    detector: DetectorConfig = dataclasses.field(default_factory=DetectorConfig)
    classifier: ClassifierConfig = dataclasses.field(default_factory=ClassifierConfig)
    tracker: TrackerConfig = dataclasses.field(default_factory=TrackerConfig)
    log: LogConfig = dataclasses.field(default_factory=LogConfig)
    display: DisplayConfig = dataclasses.field(default_factory=DisplayConfig)
    mqtt: MqttConfig = dataclasses.field(default_factory=MqttConfig)
    metrics: MetricsConfig = dataclasses.field(default_factory=MetricsConfig)
    max_frames: Annotated[int, Range(1)] | None = None  # stop after N frames (None = until the source ends or a signal)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _fill(obj: Any, table: dict[str, Any], where: str) -> None:
    """Set `obj`'s fields from a TOML table, each value checked against the field's type hint."""
    hints = field_hints(type(obj))
    for key, value in table.items():
        if key not in hints:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(hints)})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: [{key}] must be a table")
            _fill(current, value, f"{where} [{key}]")
            continue
        try:
            value = check(value, hints[key])
        except Mismatch as exc:
            raise ConfigError(f"{where} {key}: {exc}") from None
        setattr(obj, key, value)


def load_config(path: str | Path | None = None) -> RunConfig:
    """Defaults, then the TOML file (if any). CLI flags are applied afterwards with `override`."""
    cfg = RunConfig()
    if path is None:
        return cfg
    path = Path(path)
    try:
        table = tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); TOML files are UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    _fill(cfg, table, str(path))
    return cfg


def override(cfg: RunConfig, section: str, **values: Any) -> None:
    """Apply CLI flags that were given (None means 'not given')."""
    target = getattr(cfg, section)
    for key, value in values.items():
        if value is not None:
            setattr(target, key, value)

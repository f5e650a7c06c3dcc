"""`fer-edge`: run the pipeline on a camera, a Pi camera, a stream or a file; benchmark it.

`run` is the default command, so these are the same:

    fer-edge --camera 0 --display
    fer-edge run --camera 0 --display

Other commands are added with `cli.add_command(...)` at the bottom of this file.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from . import __version__
from .clitools import main_for, setup_logging
from .config import RunConfig, load_config, override

log = logging.getLogger("fer_edge")

EXIT_CODES = """\b
Exit codes:
  0  done (also: stopped by SIGINT/SIGTERM, even during start-up; logs flushed)
  1  internal error (a bug: traceback printed)
  2  usage error (bad flag or value)
  3  bad model, model card, config or input file
  4  the source could not be opened, or was lost (no frame) and not reopened
  6  a requested device is missing (--display without a display)
  130  a second Ctrl-C while stopping (logs still closed)"""


class DefaultGroup(click.Group):
    """A group that runs `run` when the first argument is not one of its commands.

    `fer-edge --help` shows the run options and lists the other commands.
    """

    default_command = "run"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        args = self.flags_after_command(args)
        first = args[0] if args else None
        if first not in self.commands and first not in ctx.help_option_names and first != "--version":
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)

    def flags_after_command(self, args: list[str]) -> list[str]:
        """`fer-edge -vv run --config x` -> `run -vv --config x`.

        Flags written before the command name (options without a value, like -v, -vv, -q) belong
        to the command: move them after it. Anything else before a command name is left alone."""
        names = [i for i, a in enumerate(args) if a in self.commands]
        if not names or names[0] == 0:
            return args
        i = names[0]
        command = self.commands[args[i]]
        long_flags, short_flags = set(), set()
        for param in command.params:
            if isinstance(param, click.Option) and (param.is_flag or param.count):
                for opt in (*param.opts, *param.secondary_opts):
                    (short_flags if len(opt) == 2 and not opt.startswith("--") else long_flags).add(opt)

        def is_flag(token: str) -> bool:
            if token.startswith("--"):
                return token in long_flags
            return token.startswith("-") and len(token) > 1 and all(f"-{c}" in short_flags for c in token[1:])

        if all(is_flag(a) for a in args[:i]):
            return [args[i], *args[:i], *args[i + 1:]]
        return args

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage(ctx.command_path, "[run] [OPTIONS]\n" + " " * 7 + f"{ctx.command_path} COMMAND [ARGS]...")
        self.format_help_text(ctx, formatter)
        default = self.commands.get(self.default_command)
        if default is not None:
            sub = click.Context(default, info_name=self.default_command, parent=ctx)
            with formatter.section(f"Options of `{ctx.command_path} [run]`"):
                formatter.write_dl([r for p in default.get_params(sub) if (r := p.get_help_record(sub))])
        self.format_commands(ctx, formatter)
        self.format_epilog(ctx, formatter)


@click.group(cls=DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES)
@click.version_option(__version__, "--version", prog_name="fer-edge")
def cli() -> None:
    """Facial-emotion recognition on the edge: camera -> faces -> emotions -> logs.

    \b
    fer-edge --camera 0 --display                   live overlay on a desk
    fer-edge --picamera --log events.jsonl          Raspberry Pi camera, headless
    fer-edge --source clip.mp4 --log events.csv     a file; .csv suffix -> CSV
    fer-edge --source photos/ --log events.jsonl    photos: each on its own, "file" in every event
    fer-edge run --config /etc/fer-edge/config.toml the systemd service
    fer-edge bench --source clip.mp4 --json b.json  per-stage speed
    """


# --------------------------------------------------------------------------- shared options
def _opt(*args: Any, **kwargs: Any):
    return click.option(*args, **kwargs)


MODEL_OPTIONS = [
    _opt("--model", type=click.Path(dir_okay=False), help="Emotion model .tflite (default: the shipped int8 model)."),
    _opt("--threads", type=click.IntRange(1, 64), help="Interpreter threads for the classifier.  [default: 1]"),
    _opt("--edgetpu/--no-edgetpu", default=None,
         help="Run <model>_edgetpu.tflite on a Coral Edge TPU (falls back to the CPU with a warning)."),
    _opt("--flip-average/--no-flip-average", default=None,
         help="Classify each face and its mirror image and average the two: about 1 pp more faces right "
              "(int8 PublicTest crops: default 70.6 -> 71.7 %, fast 67.3 -> 68.1 %) and better-calibrated "
              "scores, for twice the classifier's time per face.  [default: off]"),
    _opt("--detector", type=click.Choice(["blazeface", "blazeface-full", "haar", "whole-image"]),
         help="Face detector: blazeface (MediaPipe short range, shipped: faces from ~1/6 of the frame's "
              "longer side, i.e. ~100 px at 640x480), blazeface-full (full range: down to ~60 px, ~3x slower), "
              "haar (OpenCV, frontal faces only; also the fallback when a BlazeFace model cannot load), "
              "whole-image (no detection: each image is one face crop, classified as cropped; for datasets "
              "of face crops).  [default: blazeface]"),
    _opt("--detector-model", type=click.Path(dir_okay=False),
         help="A BlazeFace .tflite to use instead of the shipped one."),
    _opt("--align/--no-align", default=None,
         help="Level the eyes and frame each face as FER2013 does before classifying it (BlazeFace "
              "keypoints; Haar gets the same framing from its box).  [default: align]"),
    _opt("--max-yaw", type=click.FloatRange(0.0, 1.0),
         help='A head turned further than this (0 frontal, 1 nose in line with an eye) is logged as '
              '"uncertain" with reason "turned" (0: off); beyond 0.7, PublicTest faces were right less than '
              'half the time.  [default: 0.7]'),
    _opt("--min-readable", type=click.IntRange(0, 4096),
         help='A face smaller than this (px) is logged as "uncertain" with reason "small" (0: off); below 28 px '
              'the default model loses more than 5 pp on PublicTest.  [default: 28]'),
    _opt("--photo-search/--no-photo-search", default=None,
         help="Photos (an image or a folder's images) with BlazeFace: also search the photo in overlapping "
              "windows with the full-range model, each face they find confirmed by a second look, so the small "
              "faces of a group photo are found (one pass over a 12-MP photo sees faces of ~1/6 of its side "
              "only). Never used for video.  [default: on]"),
    _opt("--detect-every", type=click.IntRange(1, 1000), help="Detect every N frames, track in between.  [default: 1]"),
    _opt("--full-scan-every", type=click.IntRange(1, 1000),
         help="While faces are tracked, search the whole frame every N detections, only around them "
              "in between (1: always the whole frame).  [default: 5]"),
    _opt("--min-face", type=click.IntRange(0, 4096),
         help="Smallest face side, full-frame px; 0: the detector's own (Haar 48 px; BlazeFace ~1/6 of the frame's "
              "longer side). With --detector blazeface a smaller value switches to the full-range model.  [default: 0]"),
    _opt("--scale", type=click.FloatRange(0.05, 1.0), help="Haar: detect on the frame scaled by this.  [default: 0.5]"),
    _opt("--smoothing", type=click.Choice(["ema", "window", "none"]), help="Per-face smoothing.  [default: ema]"),
    _opt("--ema-alpha", type=click.FloatRange(0.0, 1.0, min_open=True), help="EMA weight of the newest frame.  [default: 0.4]"),
    _opt("--window", type=click.IntRange(1, 1000), help="Window smoothing: frames averaged.  [default: 5]"),
    _opt("--min-confidence", type=click.FloatRange(0.0, 1.0),
         help='Below this (smoothed, calibrated) probability the label is "uncertain". The default is where, '
              "with the shipped calibrated models on PublicTest, a label scored just below it is right less than "
              "half the time (benchmarks/calibration.py); 0 = never uncertain.  [default: 0.62]"),
    _opt("--switch-margin", type=click.FloatRange(0.0, 1.0),
         help="Steady labels: a face's label changes when the new one leads it by this much...  [default: 0.2]"),
    _opt("--switch-frames", type=click.IntRange(0, 10000),
         help="...or has led for this many frames in a row (0 or 1: change at once, no hysteresis).  [default: 5]"),
    _opt("--confirm-frames", type=click.IntRange(1, 100),
         help="A face is logged once the detector has found it in this many passes (a one-pass ghost box "
              "never is); its first events are written then, up to N-1 passes late. Photos: always 1.  [default: 3]"),
]

SOURCE_OPTIONS = [
    _opt("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config (flags override it)."),
    _opt("--camera", type=click.IntRange(0, 255), help="OpenCV camera index (USB / V4L2)."),
    _opt("--picamera", is_flag=True, default=None, help="Raspberry Pi camera via picamera2."),
    _opt("--source", "source_path", help="Video file, image, folder (its photos one by one, each on its own; its videos as videos), "
              "or rtsp:// / http:// URL."),
    _opt("--loop/--no-loop", default=None, help="Replay a file source forever."),
    _opt("--width", type=click.IntRange(16, 8192), help="Camera capture width.  [default: 640]"),
    _opt("--height", type=click.IntRange(16, 8192), help="Camera capture height.  [default: 480]"),
    _opt("--fps", type=click.FloatRange(1, 240), help="Camera frame rate.  [default: 30]"),
]

VERBOSITY_OPTIONS = [
    _opt("-v", "--verbose", count=True, help="More logging (-vv: debug)."),
    _opt("-q", "--quiet", is_flag=True, help="Warnings and errors only."),
]


def options(opts):
    def decorate(f):
        for opt in reversed(opts):
            f = opt(f)
        return f

    return decorate


def build_config(p: dict[str, Any]) -> RunConfig:
    """Defaults <- TOML (--config) <- flags. `p` holds the click parameters (None = not given)."""
    cfg = load_config(p.get("config_path"))
    if p.get("camera") is not None or p.get("picamera") or p.get("source_path"):
        cfg.source.camera, cfg.source.picamera, cfg.source.path = None, False, None  # the flag wins
    override(cfg, "source", camera=p.get("camera"), picamera=p.get("picamera") or None, path=p.get("source_path"),
             loop=p.get("loop"), width=p.get("width"), height=p.get("height"), fps=p.get("fps"))
    override(cfg, "classifier", model=p.get("model"), threads=p.get("threads"), edgetpu=p.get("edgetpu"),
             flip_average=p.get("flip_average"))
    override(cfg, "detector", kind=p.get("detector"), model=p.get("detector_model"), every=p.get("detect_every"),
             full_scan_every=p.get("full_scan_every"), min_face=p.get("min_face"), scale=p.get("scale"),
             align=p.get("align"), max_yaw=p.get("max_yaw"), min_readable=p.get("min_readable"),
             photo_search=p.get("photo_search"))
    override(cfg, "tracker", smoothing=p.get("smoothing"), ema_alpha=p.get("ema_alpha"), window=p.get("window"),
             min_confidence=p.get("min_confidence"), switch_margin=p.get("switch_margin"),
             switch_frames=p.get("switch_frames"), confirm_frames=p.get("confirm_frames"))
    if cfg.source.camera is None and not cfg.source.picamera and not cfg.source.path:
        raise click.UsageError("no source: give --camera N, --picamera or --source PATH|URL (or [source] in --config)")
    return cfg


def describe_config(cfg: RunConfig) -> str:
    """One compact block: one line per section, every key (secrets masked)."""
    lines = [f"fer-edge {__version__}, effective config:"]
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            items = []
            for k, v in dataclasses.asdict(value).items():
                if k == "password" and v:
                    v = "***"
                items.append(f"{k}={v}")
            lines.append(f"  [{f.name}] " + " ".join(items))
        else:
            lines.append(f"  {f.name}={value}")
    return "\n".join(lines)


def _quiet_opencv_logs(verbose: int) -> None:
    from .sources import OPENCV_LOG_ERROR, set_opencv_log_level

    if verbose < 2:
        set_opencv_log_level(OPENCV_LOG_ERROR)


def event_logs(logs: tuple[str, ...], csv_path: str | None) -> tuple[str | None, str | None]:
    """(jsonl, csv) from the --log and --csv flags; a second log of the same kind is a usage error.

    One JSONL and one CSV log at most: the summary goes into the JSONL log and rotation counts
    one file, so a second file of the same kind is refused rather than silently replacing the first.
    The same path given twice is one log."""
    jsonl: list[str] = []
    csv: list[str] = []
    for path in logs:
        (csv if Path(path).suffix.lower() == ".csv" else jsonl).append(path)
    if csv_path:
        csv.append(csv_path)
    for kind, paths, flags in (("JSON Lines", jsonl, "--log"), ("CSV", csv, "--log X.csv / --csv")):
        distinct = list(dict.fromkeys(os.path.abspath(p) for p in paths))
        if len(distinct) > 1:
            raise click.UsageError(f"two {kind} event logs given ({', '.join(paths)}): {flags} takes one "
                                   "JSONL and one CSV log at most")
    if jsonl and csv and os.path.abspath(jsonl[0]) == os.path.abspath(csv[0]):
        raise click.UsageError(f"the JSONL and the CSV event log are the same file ({jsonl[0]})")
    return (jsonl[0] if jsonl else None), (csv[0] if csv else None)


# --------------------------------------------------------------------------- run
@cli.command("run", epilog=EXIT_CODES, context_settings={"help_option_names": ["-h", "--help"]})
@options(SOURCE_OPTIONS + MODEL_OPTIONS)
@_opt("--log", "logs", multiple=True, type=click.Path(dir_okay=False),
      help="Event log: JSON Lines, or CSV when the name ends in .csv. Give it twice for one of each "
           "(a second log of the same kind is refused).")
@_opt("--csv", "csv_path", type=click.Path(dir_okay=False), help="CSV event log (same as --log X.csv).")
@_opt("--display/--no-display", default=None, help="Show the live overlay in a window (needs a desktop).")
@_opt("--mqtt-host", help="Publish events to this MQTT broker.")
@_opt("--mqtt-port", type=click.IntRange(1, 65535), help="MQTT broker port.  [default: 1883]")
@_opt("--mqtt-topic", help="MQTT topic.  [default: fer-edge/events]")
@_opt("--mqtt-tls/--no-mqtt-tls", default=None,
      help="Connect to the broker over TLS (port 8883 unless --mqtt-port); the README shows Mosquitto.")
@_opt("--mqtt-ca-file", type=click.Path(dir_okay=False),
      help="CA certificate that signed the broker's (implies --mqtt-tls; default: the system's CAs).")
@_opt("--mqtt-cert", type=click.Path(dir_okay=False), help="Client certificate for a broker that requires one.")
@_opt("--mqtt-key", type=click.Path(dir_okay=False), help="The client certificate's private key.")
@_opt("--metrics-port", type=click.IntRange(1, 65535), help="Serve Prometheus metrics on 127.0.0.1:PORT.")
@_opt("--save-frames", type=click.Path(file_okay=False),
      help="Save annotated frames with faces to this folder, at most one a second of video time (off: privacy).")
@_opt("--save-video", type=click.Path(dir_okay=False),
      help="Write every frame, annotated, to this video (.mp4 or .avi) at the source's frame rate (off: privacy).")
@_opt("--max-frames", type=click.IntRange(1), help="Stop after N frames.")
@options(VERBOSITY_OPTIONS)
def run_cmd(**p: Any) -> None:
    """Run the pipeline: source -> face detector -> tracker -> emotion classifier -> sinks.

    Stops at the end of a file source, after --max-frames, or on Ctrl-C / SIGTERM (logs are
    flushed and closed, then it exits 0).
    """
    setup_logging(p["verbose"], p["quiet"])
    _quiet_opencv_logs(p["verbose"])
    cfg = build_config(p)
    jsonl, csv = event_logs(p["logs"], p["csv_path"])
    override(cfg, "log", jsonl=jsonl, csv=csv, save_frames=p["save_frames"], save_video=p["save_video"])
    override(cfg, "display", enabled=p["display"])
    tls = p["mqtt_tls"] if p["mqtt_tls"] is not None else (True if p["mqtt_ca_file"] or p["mqtt_cert"] else None)
    override(cfg, "mqtt", host=p["mqtt_host"], port=p["mqtt_port"], topic=p["mqtt_topic"], tls=tls,
             ca_file=p["mqtt_ca_file"], cert_file=p["mqtt_cert"], key_file=p["mqtt_key"])
    override(cfg, "metrics", port=p["metrics_port"])
    if p["max_frames"] is not None:
        cfg.max_frames = p["max_frames"]
    from .loop import run

    def on_ready(pipeline, source) -> None:  # everything opened and loaded: say what runs
        if not p["quiet"]:
            click.echo(describe_config(cfg), err=True)
            click.echo(f"  running: {source.name} -> {pipeline.detector.describe()} -> "
                       f"{pipeline.classifier.describe()}", err=True)

    run(cfg, on_ready=on_ready)


# --------------------------------------------------------------------------- bench
@cli.command("bench", epilog=EXIT_CODES, context_settings={"help_option_names": ["-h", "--help"]})
@options(SOURCE_OPTIONS + MODEL_OPTIONS)
@_opt("--frames", type=click.IntRange(1), default=300, show_default=True,
      help="Frames to measure (a file is replayed if shorter).")
@_opt("--warmup", type=click.IntRange(0), default=10, show_default=True, help="Frames run first and not counted.")
@_opt("--log", "log_path", type=click.Path(dir_okay=False),
      help="Also write the JSONL event log (measures the sink stage).")
@_opt("--json", "json_path", type=click.Path(dir_okay=False), help="Write the results as JSON here.")
@options(VERBOSITY_OPTIONS)
def bench_cmd(**p: Any) -> None:
    """Measure the pipeline: per-stage p50/p95 ms, frames/s, peak RSS, faces/frame.

    A file source is replayed until --warmup + --frames frames have run, so short clips work.
    """
    setup_logging(p["verbose"], p["quiet"] or not p["verbose"])
    _quiet_opencv_logs(p["verbose"])
    cfg = build_config(p)
    if p["log_path"]:
        cfg.log.jsonl = p["log_path"]
    from .bench import format_table, run_bench, write_json

    report = run_bench(cfg, frames=p["frames"], warmup=p["warmup"])
    click.echo(format_table(report))
    if p["json_path"]:
        write_json(p["json_path"], report)
        click.echo(f"wrote {p['json_path']}", err=True)


# --------------------------------------------------------------------------- more commands
# Other rooms register their commands here, one line each: cli.add_command(<click command>).
from .app import app_cmd  # noqa: E402  (the upload page; Streamlit is imported only when it runs)

cli.add_command(app_cmd, "app")
from .report import report_cmd  # noqa: E402  (matplotlib is imported only when a report is drawn)

cli.add_command(report_cmd, "report")


def main() -> None:
    """The `fer-edge` entry point: for `run`, SIGINT/SIGTERM are caught from here on (see signals.py)."""
    args = cli.flags_after_command(sys.argv[1:])
    if not args or args[0] == "run" or args[0] not in cli.commands:
        from .signals import catch_early

        catch_early()
    main_for(cli)()

if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)

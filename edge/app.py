"""`fer-edge app`: a Streamlit page to try a model on uploaded images or a camera snapshot.

Each face is boxed with its emotion (the runtime's own overlay), gets a probability bar chart, and
lands in a results table that downloads as CSV; annotated images download as PNG. The model is
chosen among the shipped ones (`models/*.tflite`, Edge TPU variants left out) plus any `--model`,
and its model card is shown in the sidebar.

Nothing here detects, classifies or draws by itself: the page goes through the edge runtime
(`fer_edge.detectors.create_detector`, `fer_edge.classifier.EmotionClassifier`,
`fer_edge.overlay.draw_overlay`), so what you see is what the device computes.

This module is imported by `fer-edge --help` (for `app_cmd`), so its top-level imports stay light:
Streamlit, pandas, OpenCV and the interpreter are imported only when the page runs.

Run: `fer-edge app [--port 8501] [--model my.tflite]` (needs `pip install "fer-edge[app]"`), which
calls `python -m streamlit run <this file> -- <options>`.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import click

from fer_edge.errors import DataError, DeviceError, FerError, ModelError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from fer_edge.classifier import EmotionClassifier
    from fer_edge.contract import ModelCard
    from fer_edge.records import FaceResult

def _still_config():
    from fer_edge.config import RunConfig

    cfg = RunConfig()
    cfg.tracker.min_confidence = 0.0
    return cfg


APP_PATH = Path(__file__).resolve()
#: uploads larger than this (longest side, pixels) are downscaled before detection, and the page says so
MAX_SIDE = 1920
#: faces are searched on a copy no larger than this (longest side): Haar on 1920 px takes seconds
DETECT_SIDE = 1024
#: the page reads its options from these when it is not started with `-- --model ...` (AppTest, tests)
ENV_MODEL = "FER_EDGE_APP_MODEL"
ENV_MODELS_DIR = "FER_EDGE_APP_MODELS_DIR"
ENV_MAX_SIDE = "FER_EDGE_APP_MAX_SIDE"
#: the page shows every face's most likely emotion and its (calibrated) probability, so no
#: --min-confidence; turned and too-small faces are still marked "uncertain" with their reason
STILL_CONFIG = _still_config()
#: the cached classifier and detector reuse buffers: sessions (threads) take turns
_INFERENCE_LOCK = threading.Lock()
INSTALL_HINT = 'pip install "fer-edge[app]"'
NO_MODELS_MESSAGE = (
    "No emotion model found. Train and convert one "
    "(`fer-train fit ... --out runs` then `fer-convert runs/<run> --int8`) and start the page with "
    "`fer-edge app --model runs/<run>/<name>_int8.tflite`, or put a `.tflite` file and its model card "
    "(`.json`) into {models_dir}."
)


# =========================================================================== options
@dataclass
class AppOptions:
    model: str | None = None
    models_dir: str | None = None
    max_side: int = MAX_SIDE


def _option_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fer-edge app (page)", add_help=False)
    parser.add_argument("--model", default=None)
    parser.add_argument("--models-dir", default=None)
    parser.add_argument("--max-side", type=int, default=None)
    return parser


def page_options(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> AppOptions:
    """Options of the running page: the args after `--` when `streamlit run` started this file,
    else the FER_EDGE_APP_* environment (set by `fer-edge app`, or by a test)."""
    environ = os.environ if environ is None else environ
    opts = AppOptions(
        model=environ.get(ENV_MODEL) or None,
        models_dir=environ.get(ENV_MODELS_DIR) or None,
        max_side=int(environ.get(ENV_MAX_SIDE) or MAX_SIDE),
    )
    if argv is None:
        argv = sys.argv[1:] if sys.argv and _is_this_file(sys.argv[0]) else []
    if argv:
        args, _unknown = _option_parser().parse_known_args(list(argv))
        opts.model = args.model or opts.model
        opts.models_dir = args.models_dir or opts.models_dir
        opts.max_side = args.max_side or opts.max_side
    opts.max_side = max(64, int(opts.max_side))
    return opts


def _is_this_file(path: str) -> bool:
    try:
        return Path(path).resolve() == APP_PATH
    except OSError:
        return False


# =========================================================================== models
def shipped_models_dir() -> Path:
    from fer_edge_models import MODELS_DIR

    return Path(MODELS_DIR)


def discover_models(models_dir: str | os.PathLike | None = None, extra: str | os.PathLike | None = None) -> list[Path]:
    """The models the page offers: `extra` (a --model) first, then `models_dir/*.tflite`, sorted,
    without `_edgetpu` variants (those only run with an Edge TPU delegate)."""
    folder = Path(models_dir) if models_dir else shipped_models_dir()
    found: list[Path] = []
    if extra:
        found.append(Path(extra).expanduser().resolve())
    if folder.is_dir():
        # the runtime's default model (int8) first, then the others by name
        default_name = f"{_default_base()}_int8.tflite"
        for path in sorted(folder.glob("*.tflite"), key=lambda p: (p.name != default_name, p.name)):
            if path.stem.endswith("_edgetpu"):
                continue
            path = path.resolve()
            if path not in found:
                found.append(path)
    return found


def _default_base() -> str:
    from fer_edge.contract import base_name
    from fer_edge_models import DEFAULT_MODEL

    return base_name(DEFAULT_MODEL)


#: card metrics subtrees that repeat accuracies (gate reports) or hold no accuracy at all
_NOT_ACCURACY = ("gate", "latency_ms", "edgetpu")


def _flatten_accuracy(metrics: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, float]]:
    """Every accuracy number (`accuracy`/`acc` as a fraction, fer-convert's `top1` in %) in a model
    card's free-form metrics, with its path; gate reports are left out (they repeat these)."""
    out: list[tuple[str, float]] = []
    if isinstance(metrics, dict):
        for key, value in metrics.items():
            key_s = str(key)
            if not prefix and key_s in _NOT_ACCURACY:
                continue
            if key_s.lower() in ("accuracy", "acc", "top1") and isinstance(value, (int, float)) and not isinstance(value, bool):
                out.append((" / ".join(prefix) or "accuracy", float(value)))
            else:
                out.extend(_flatten_accuracy(value, prefix + (key_s,)))
    return out


def human_size(n_bytes: int | None) -> str:
    if n_bytes is None:
        return "?"
    size = float(n_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"  # pragma: no cover


def card_summary(model_path: str | os.PathLike, card: "ModelCard | None", labels: Sequence[str] | None = None,
                 input_size: Sequence[int] | None = None) -> list[tuple[str, str]]:
    """(field, value) rows for the sidebar: name, size, input, labels, accuracy, architecture, ..."""
    path = Path(model_path)
    try:
        size = path.stat().st_size
    except OSError:
        size = None
    rows: list[tuple[str, str]] = [("file", path.name), ("size", human_size(size))]
    if card is None:
        if input_size is not None:
            rows.append(("input", f"{input_size[0]}x{input_size[1]} gray"))
        if labels is not None:
            rows.append(("labels", ", ".join(labels)))
        rows.append(("model card", "none (labels default to FER2013 order)"))
        return rows
    rows.insert(0, ("name", card.name))
    rows.append(("input", f"{card.input_size[0]}x{card.input_size[1]} gray"))
    rows.append(("labels", ", ".join(card.labels)))
    for where, acc in _flatten_accuracy(card.metrics):
        rows.append((f"accuracy ({where})" if where != "accuracy" else "accuracy", f"{acc:.1%}" if acc <= 1 else f"{acc:.2f}%"))
    if card.architecture:
        rows.append(("architecture", card.architecture))
    if card.params:
        rows.append(("parameters", f"{card.params:,}"))
    if card.created:
        rows.append(("created", card.created))
    if card.notes:
        rows.append(("notes", card.notes))
    return rows


# =========================================================================== analysis (pure, testable)
@dataclass
class Analysis:
    """What the page shows for one uploaded image."""

    name: str
    labels: tuple[str, ...] = ()
    faces: list["FaceResult"] = field(default_factory=list)
    image_bgr: "np.ndarray | None" = None  # decoded, after any downscale
    annotated_bgr: "np.ndarray | None" = None
    original_size: tuple[int, int] | None = None  # (width, height) as uploaded
    scale: float = 1.0  # analysed size / uploaded size
    error: str | None = None  # the image could not be used (the page shows st.error)
    #: (level, text) notes for the page: ("info", downscaled ...), ("warning", no face ...)
    messages: list[tuple[str, str]] = field(default_factory=list)
    stage_ms: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    def rows(self) -> list[dict[str, Any]]:
        """One row per face: image, face #, box (in analysed pixels), emotion, score, all probabilities."""
        out = []
        for face in self.faces:
            x, y, w, h = (int(v) for v in face.box)
            row: dict[str, Any] = {
                "image": self.name,
                "face": face.track_id,
                "x": x, "y": y, "w": w, "h": h,
                "emotion": face.label,
                "score": round(float(face.score), 4),
            }
            for label, p in zip(self.labels, face.probs.tolist()):
                row[f"p_{label}"] = round(float(p), 4)
            out.append(row)
        return out

    def annotated_png(self) -> bytes:
        import cv2

        image = self.annotated_bgr if self.annotated_bgr is not None else self.image_bgr
        if image is None:
            return b""
        ok, buf = cv2.imencode(".png", image)
        return buf.tobytes() if ok else b""


def decode_image(data: bytes, name: str = "image", max_side: int = MAX_SIDE) -> tuple["np.ndarray", tuple[int, int], float]:
    """Uploaded bytes -> (BGR uint8 image, (width, height) as uploaded, scale applied).

    Raises DataError (with the file's name) for empty, non-image or corrupt bytes. Images whose
    longest side exceeds `max_side` are shrunk to it (INTER_AREA)."""
    import cv2
    import numpy as np

    if not data:
        raise DataError(f"{name}: the file is empty")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:  # e.g. a header claiming more pixels than OpenCV allows
        raise DataError(f"{name}: not a readable image ({str(exc).strip().splitlines()[-1]})") from None
    if image is None or image.size == 0:
        raise DataError(f"{name}: not an image, or a corrupt one (PNG, JPEG, BMP, WebP or TIFF expected)")
    h, w = image.shape[:2]
    scale = 1.0
    if max(h, w) > max_side:
        scale = max_side / float(max(h, w))
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image), (w, h), scale


def detection_gray(image_bgr: "np.ndarray", side: int = DETECT_SIDE) -> "np.ndarray | None":
    """A smaller gray copy for the detector when the image is larger than `side` (None: use the image).

    Detectors take it like picamera2's lores frame and map boxes back to full-image pixels."""
    import cv2

    h, w = image_bgr.shape[:2]
    if max(h, w) <= side:
        return None
    f = side / float(max(h, w))
    gray = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
    return cv2.resize(gray, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)


def analyse_image(data: bytes, name: str, classifier: "EmotionClassifier", detector: Any,
                  max_side: int = MAX_SIDE) -> Analysis:
    """Decode, (downscale), detect, align, classify and draw one uploaded image: the runtime's own
    still-image path (`loop.analyse_still`, as photo mode runs it). Never raises for bad input: a
    non-image or corrupt file gives `Analysis.error`; no face gives a message."""
    from fer_edge.loop import analyse_still, still_pipeline
    from fer_edge.overlay import draw_overlay

    labels = tuple(classifier.labels)
    analysis = Analysis(name=name, labels=labels)
    try:
        image, (w, h), scale = decode_image(data, name, max_side)
    except DataError as exc:
        analysis.error = str(exc)
        return analysis
    analysis.image_bgr, analysis.original_size, analysis.scale = image, (w, h), scale
    if scale < 1.0:
        nh, nw = image.shape[:2]
        analysis.messages.append(("info",
            f"{name}: large image ({w}x{h} px) downscaled to {nw}x{nh} px (longest side {max_side}) for analysis; "
            "boxes are in the downscaled image's pixels."))
    result = analyse_still(still_pipeline(classifier, detector, STILL_CONFIG), image, name, gray=detection_gray(image))
    analysis.faces = result.faces
    analysis.stage_ms = {k: result.stage_ms[k] for k in ("detect", "preprocess", "classify")}
    if not result.faces:
        analysis.messages.append(("warning", f"{name}: no face found. Try a frontal face, better lit or larger "
                                             "in the picture."))
    analysis.annotated_bgr = draw_overlay(image, result)
    return analysis


def results_csv(analyses: Iterable[Analysis]) -> str:
    """All faces of all images as CSV text (the table's columns; probabilities as p_<label>)."""
    import csv
    import io

    rows = [row for a in analyses for row in a.rows()]
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns or ["image", "face", "x", "y", "w", "h", "emotion", "score"],
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def make_detector(min_face: int = 24, scale: float = 1.0) -> Any:
    """The runtime's default face detector (BlazeFace, Haar as its logged fallback), for still images."""
    from fer_edge.config import DetectorConfig
    from fer_edge.detectors import create_detector

    return create_detector(DetectorConfig(scale=scale, min_face=min_face, every=1))


# =========================================================================== the page
def page() -> None:  # pragma: no cover - exercised through AppTest and the browser test
    """The Streamlit script body (run by `streamlit run`, re-run on every interaction)."""
    import pandas as pd
    import streamlit as st

    st.set_page_config(page_title="fer-edge: facial emotion", page_icon=":performing_arts:", layout="wide")
    opts = page_options()
    from .app_report import PAGE_NAME, report_page  # the event-log view lives in app_report.py

    if st.sidebar.radio("Page", ["Images", PAGE_NAME], key="page", horizontal=True) == PAGE_NAME:
        return report_page()
    st.title("fer-edge: facial emotion recognition")
    st.caption("Upload images or take a snapshot: each face is found, boxed and classified by the same "
               "int8 model and code the edge device runs. Nothing leaves this machine.")

    # ---------------------------------------------------------------- model
    models_dir = Path(opts.models_dir) if opts.models_dir else shipped_models_dir()
    if opts.model and not Path(opts.model).expanduser().is_file():
        st.error(f"Model not found: {opts.model}")
    models = [m for m in discover_models(models_dir, opts.model) if m.is_file()]
    if not models:
        st.error(NO_MODELS_MESSAGE.format(models_dir=models_dir))
        st.stop()
    st.sidebar.header("Model")
    choice = st.sidebar.selectbox("Model", models, format_func=lambda p: p.name, key="model",
                                  label_visibility="collapsed")
    flip_average = st.sidebar.checkbox(
        "Mirror averaging", value=False, key="flip_average",
        help="Classify each face and its mirror image and average the two (`fer-edge --flip-average`): "
             "about 1 pp more faces named right on FER2013 faces and better-calibrated scores, for twice the "
             "classifier's time (README, \"Mirror averaging\").")
    classifier = _cached_classifier(str(choice), _mtime(choice), flip_average)
    if isinstance(classifier, str):
        st.error(classifier)
        st.stop()
    rows = card_summary(choice, classifier.card, classifier.labels, classifier.input_size)
    st.sidebar.markdown("\n".join(["| model card | |", "|---|---|"] + [f"| {k} | {_md_cell(v)} |" for k, v in rows]))
    if classifier.card is not None:
        with st.sidebar.expander("Full model card (JSON)"):
            st.json(classifier.card.to_dict(), expanded=False)
    st.sidebar.caption(classifier.describe())
    detector = _cached_detector()
    if isinstance(detector, str):
        st.error(detector)
        st.stop()

    # ---------------------------------------------------------------- input
    uploads = st.file_uploader("Images (one or more)", accept_multiple_files=True, key="uploads",
                               help="PNG, JPEG, BMP, WebP or TIFF. Large images are downscaled to "
                                    f"{opts.max_side} px on the longest side.")
    inputs: list[tuple[str, bytes]] = [(f.name, f.getvalue()) for f in (uploads or [])]
    if st.toggle("Take a snapshot with the camera", key="use_camera"):
        snapshot = st.camera_input("Snapshot", key="camera")
        if snapshot is not None:
            inputs.append((f"snapshot-{time.strftime('%H%M%S')}.jpg" if not snapshot.name else snapshot.name,
                           snapshot.getvalue()))
    if not inputs:
        st.info("Upload one or more images, or take a snapshot, to see each face's emotion.")
        return

    # ---------------------------------------------------------------- results
    analyses = [_cached_analysis(data, name, str(choice), _mtime(choice), opts.max_side, classifier, detector,
                                 flip_average) for name, data in inputs]
    for i, analysis in enumerate(analyses):
        st.subheader(_md_escape(analysis.name))
        if not analysis.ok:
            st.error(analysis.error)
            continue
        for level, message in analysis.messages:
            (st.warning if level == "warning" else st.info)(message)
        left, right = st.columns([3, 2])
        with left:
            st.image(analysis.annotated_bgr, channels="BGR",
                     caption=f"{len(analysis.faces)} face(s) · detect {analysis.stage_ms.get('detect', 0):.0f} ms"
                             f" · classify {analysis.stage_ms.get('classify', 0):.0f} ms")
            stem = Path(analysis.name).stem or "image"
            st.download_button("Download annotated image (PNG)", analysis.annotated_png(),
                               file_name=f"{stem}_annotated.png", mime="image/png", key=f"png_{i}",
                               on_click="ignore")
        with right:
            for face in analysis.faces:
                st.markdown(f"**Face {face.track_id}**: {face.label} ({face.score:.0%})")
                chart = pd.DataFrame({"emotion": list(analysis.labels),
                                      "probability": [float(p) for p in face.probs]})
                st.bar_chart(chart, x="emotion", y="probability", horizontal=True, sort=False,
                             height=70 + 26 * len(analysis.labels))

    table = [row for a in analyses for row in a.rows()]
    st.subheader("Results")
    if table:
        st.dataframe(pd.DataFrame(table), hide_index=True, key="results")
    else:
        st.write("No faces in these images.")
    st.download_button("Download results (CSV)", results_csv(analyses), file_name="fer_edge_results.csv",
                       mime="text/csv", key="csv", on_click="ignore", disabled=not table)


def _md_escape(text: str) -> str:
    """A user's file name shown literally (no Markdown emphasis, links or headings)."""
    return "".join("\\" + ch if ch in "\\`*_{}[]()#+-.!|<>~$:" else ch for ch in str(text))


def _md_cell(value: str) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _cached_classifier(model_path: str, mtime: float,
                       flip_average: bool = False) -> "EmotionClassifier | str":  # pragma: no cover
    """One interpreter per model file (and version, and mirror averaging), shared by every session; a str
    is an error."""
    import streamlit as st

    @st.cache_resource(show_spinner="Loading the model ...", max_entries=8)
    def load(model_path: str, mtime: float, flip_average: bool):
        from fer_edge.classifier import EmotionClassifier

        try:
            return EmotionClassifier(model_path, flip_average=flip_average)
        except FerError as exc:
            return f"Cannot use this model: {exc}"

    return load(model_path, mtime, flip_average)


def _cached_detector() -> Any:  # pragma: no cover
    import streamlit as st

    @st.cache_resource(show_spinner=False)
    def load():
        try:
            return make_detector()
        except FerError as exc:
            return f"Cannot set up the face detector: {exc}"

    return load()


def _cached_analysis(data: bytes, name: str, model_path: str, mtime: float, max_side: int,
                     classifier: Any, detector: Any, flip_average: bool = False) -> Analysis:  # pragma: no cover
    """Re-runs (e.g. a toggle) do not redo the work; keyed by the bytes, the model, max side and mirror
    averaging."""
    import streamlit as st

    @st.cache_data(show_spinner="Analysing ...", max_entries=16, ttl=3600)  # images are up to ~11 MB each
    def run(data: bytes, name: str, model_path: str, mtime: float, max_side: int, flip_average: bool,
            _classifier, _detector):
        with _INFERENCE_LOCK:  # one interpreter and detector are shared by every session (thread)
            return analyse_image(data, name, _classifier, _detector, max_side=max_side)

    return run(data, name, model_path, mtime, max_side, flip_average, classifier, detector)


# =========================================================================== the command
def streamlit_available() -> bool:
    """Whether the `app` extra is installed (found, not imported: that takes a second)."""
    try:
        return all(importlib.util.find_spec(name) is not None for name in ("streamlit", "pandas"))
    except (ImportError, ValueError):
        return False


def streamlit_command(port: int, address: str, model: Path | None = None, models_dir: Path | None = None,
                      max_side: int = MAX_SIDE) -> list[str]:
    """`python -m streamlit run edge/app.py ... -- <page options>`: headless, no usage statistics."""
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(APP_PATH),
        "--server.port", str(port),
        "--server.address", address,
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
        "--global.developmentMode", "false",
        "--client.toolbarMode", "minimal",
        "--",
        "--max-side", str(max_side),
    ]
    if model is not None:
        cmd += ["--model", str(model)]
    if models_dir is not None:
        cmd += ["--models-dir", str(models_dir)]
    return cmd


def _launch(cmd: list[str], env: dict[str, str]) -> int:  # pragma: no cover - replaced in unit tests
    """Run Streamlit in the foreground; SIGTERM/SIGINT are passed on so it stops cleanly."""
    proc = subprocess.Popen(cmd, env=env)

    def forward(signum, _frame):
        if proc.poll() is None:
            proc.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:  # pragma: no cover
                continue
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


@click.command("app", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--port", type=click.IntRange(1, 65535), default=8501, show_default=True, help="Port to serve the page on.")
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 to reach it from other machines).")
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A .tflite model (with its model card) to offer first, besides the shipped ones.")
@click.option("--models-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of models to offer instead of the shipped models/ folder.")
@click.option("--max-side", type=click.IntRange(64, 10000), default=MAX_SIDE, show_default=True,
              help="Downscale uploads whose longest side is larger than this.")
def app_cmd(port: int, address: str, model: Path | None, models_dir: Path | None, max_side: int) -> None:
    """Open the upload page (Streamlit): emotions of the faces in images or a camera snapshot.

    \b
    fer-edge app                                   the shipped models, http://127.0.0.1:8501
    fer-edge app --model runs/x/x_int8.tflite      offer your own model too
    fer-edge app --address 0.0.0.0 --port 8080     reachable from other machines
    """
    if not streamlit_available():
        raise DeviceError(f"the upload page needs Streamlit and pandas: {INSTALL_HINT}")
    if model is not None:
        model = model.expanduser().resolve()
        if not model.is_file():
            raise ModelError(f"model not found: {model}")
    if models_dir is not None:
        models_dir = models_dir.expanduser().resolve()
    env = dict(os.environ)
    env.setdefault("STREAMLIT_BROWSER_GATHER_USAGE_STATS", "false")
    env.setdefault("STREAMLIT_SERVER_HEADLESS", "true")
    env.pop(ENV_MODEL, None)
    if model is not None:
        env[ENV_MODEL] = str(model)
    if models_dir is not None:
        env[ENV_MODELS_DIR] = str(models_dir)
    env[ENV_MAX_SIDE] = str(max_side)
    cmd = streamlit_command(port, address, model, models_dir, max_side)
    click.echo(f"fer-edge app: serving on http://{address}:{port} (Ctrl-C to stop)", err=True)
    code = _launch(cmd, env)
    if code not in (0, -signal.SIGTERM, -signal.SIGINT, 128 + signal.SIGTERM, 128 + signal.SIGINT):
        raise click.exceptions.Exit(code if code > 0 else 1)


if __name__ == "__main__":  # `streamlit run edge/app.py`: run the page from the installed module, so that
    from fer_edge.app import page as _page  # its classes pickle (st.cache_data) and its caches persist

    _page()

"""The page's logic without Streamlit: analyse_image, CSV, model discovery and cards, page options,
and the `fer-edge app` command (its Streamlit launch replaced by a recorder)."""
from __future__ import annotations

import csv
import io
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from fer_edge import app as app_mod
from fer_edge.contract import ModelCard
from fer_edge.errors import DeviceError, ModelError
from fer_edge.records import Detection

from ..conftest import sideways_phone_jpeg

LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


@pytest.fixture(scope="module")
def classifier(tiny_tflite_model):
    from fer_edge.classifier import EmotionClassifier

    return EmotionClassifier(tiny_tflite_model)


@pytest.fixture(scope="module")
def detector():
    return app_mod.make_detector()


class FixedDetector:
    """Returns the given boxes; records what it was asked to look at."""

    def __init__(self, boxes):
        self.boxes = boxes
        self.calls = []

    def detect(self, image_bgr, gray=None):
        self.calls.append((image_bgr.shape, None if gray is None else gray.shape))
        return [Detection(b) for b in self.boxes]


# --------------------------------------------------------------------------- analyse_image
def test_analyse_astronaut(classifier, detector, astronaut_bgr, astronaut_face_box):
    a = app_mod.analyse_image(png(astronaut_bgr), "astronaut.png", classifier, detector)
    assert a.ok and a.messages == []
    assert a.original_size == (512, 512) and a.scale == 1.0
    assert len(a.faces) >= 1
    rows = a.rows()
    row = rows[0]
    assert list(row)[:8] == ["image", "face", "x", "y", "w", "h", "emotion", "score"]
    assert [k for k in row if k.startswith("p_")] == [f"p_{l}" for l in LABELS]
    assert row["image"] == "astronaut.png" and row["face"] == 1
    fx, fy, fw, fh = astronaut_face_box
    assert fx <= row["x"] + row["w"] / 2 <= fx + fw and fy <= row["y"] + row["h"] / 2 <= fy + fh
    assert row["emotion"] == max(LABELS, key=lambda l: row[f"p_{l}"])
    assert sum(row[f"p_{l}"] for l in LABELS) == pytest.approx(1.0, abs=1e-3)
    # the annotated image is the runtime overlay's drawing on a copy
    assert a.annotated_bgr.shape == astronaut_bgr.shape and not np.array_equal(a.annotated_bgr, astronaut_bgr)
    assert np.array_equal(a.image_bgr, astronaut_bgr)
    decoded = cv2.imdecode(np.frombuffer(a.annotated_png(), np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(decoded, a.annotated_bgr)
    assert set(a.stage_ms) == {"detect", "preprocess", "classify"}


def test_faces_are_numbered_left_to_right_and_classified_from_the_runtime_crop(classifier, astronaut_bgr):
    det = FixedDetector([(300, 50, 100, 100), (20, 200, 80, 80)])
    a = app_mod.analyse_image(png(astronaut_bgr), "two.png", classifier, det)
    assert [(f.track_id, f.box) for f in a.faces] == [(1, (20, 200, 80, 80)), (2, (300, 50, 100, 100))]
    from fer_edge.align import Aligner

    # a detector without keypoints: the runtime's box crop, framed by the Haar template
    crop = Aligner.for_detector("haar", classifier.input_size)(astronaut_bgr, (20, 200, 80, 80), None)
    expected = classifier.invoke(classifier.prepare_pixels(crop))
    np.testing.assert_allclose(a.faces[0].probs, expected)
    assert det.calls == [((512, 512, 3), None)]  # small images are searched as they are


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"", "x.png: the file is empty"),
        (b"GIF? no, plain text\n", "x.png: not an image, or a corrupt one"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "x.png: not an image, or a corrupt one"),
        (bytes(range(256)) * 40, "x.png: not an image, or a corrupt one"),
    ],
    ids=["empty", "text", "png-header-only", "noise"],
)
def test_bad_bytes_are_an_error_not_an_exception(classifier, data, expected):
    det = FixedDetector([])
    a = app_mod.analyse_image(data, "x.png", classifier, det)
    assert not a.ok and a.error.startswith(expected)
    assert a.rows() == [] and a.annotated_png() == b"" and det.calls == []


def test_truncated_png_is_an_error(classifier, astronaut_bgr):
    a = app_mod.analyse_image(png(astronaut_bgr)[:500], "cut.png", classifier, FixedDetector([]))
    assert a.error.startswith("cut.png: not an image, or a corrupt one")


def test_no_face(classifier, detector):
    a = app_mod.analyse_image(png(np.full((200, 300, 3), 90, np.uint8)), "wall.png", classifier, detector)
    assert a.ok and a.faces == [] and a.rows() == []
    assert a.messages == [("warning", "wall.png: no face found. Try a frontal face, better lit or larger in the picture.")]
    assert a.annotated_bgr.shape == (200, 300, 3)  # the image is still shown


def test_huge_image_is_downscaled_and_detected_on_a_smaller_copy(classifier, astronaut_bgr):
    huge = cv2.resize(astronaut_bgr, (4000, 3000))
    det = FixedDetector([(10, 10, 200, 200)])
    a = app_mod.analyse_image(cv2.imencode(".jpg", huge)[1].tobytes(), "huge.jpg", classifier, det)
    assert a.original_size == (4000, 3000) and a.image_bgr.shape == (1440, 1920, 3)
    assert a.scale == pytest.approx(1920 / 4000)
    assert a.messages[0][0] == "info" and "4000x3000" in a.messages[0][1] and "1920x1440" in a.messages[0][1]
    assert det.calls == [((1440, 1920, 3), (768, 1024))]


def test_grayscale_and_alpha_uploads_work(classifier):
    det = FixedDetector([(5, 5, 40, 40)])
    gray = np.full((64, 64), 100, np.uint8)
    bgra = np.full((64, 64, 4), 100, np.uint8)
    for image in (gray, bgra):
        a = app_mod.analyse_image(png(image), "g.png", classifier, det)
        assert a.ok and a.image_bgr.shape == (64, 64, 3) and len(a.faces) == 1


def test_results_csv(classifier, astronaut_bgr):
    det = FixedDetector([(170, 40, 110, 130)])
    ok = app_mod.analyse_image(png(astronaut_bgr), "a,b.png", classifier, det)
    bad = app_mod.analyse_image(b"junk", "junk.txt", classifier, det)
    text = app_mod.results_csv([ok, bad])
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 1 and rows[0]["image"] == "a,b.png" and rows[0]["face"] == "1"
    assert rows[0]["emotion"] in LABELS
    assert app_mod.results_csv([bad]).startswith("image,face,x,y,w,h,emotion,score")


# --------------------------------------------------------------------------- models, cards, options
def test_discover_models_skips_edgetpu_and_puts_the_command_line_model_first(tmp_path, tiny_tflite_model):
    folder = tmp_path / "models"
    folder.mkdir()
    for name in ("b_int8.tflite", "a_int8.tflite", "a_int8_edgetpu.tflite", "notes.txt"):
        (folder / name).write_bytes(b"x")
    found = app_mod.discover_models(folder, tiny_tflite_model)
    assert [p.name for p in found] == ["tiny_int8.tflite", "a_int8.tflite", "b_int8.tflite"]
    assert app_mod.discover_models(folder, folder / "a_int8.tflite")[0].name == "a_int8.tflite"
    assert len(app_mod.discover_models(folder, folder / "a_int8.tflite")) == 2
    assert app_mod.discover_models(tmp_path / "nowhere") == []


def test_shipped_models_folder_is_the_models_package():
    from fer_edge_models import MODELS_DIR

    assert app_mod.shipped_models_dir() == MODELS_DIR
    assert all("_edgetpu" not in p.stem for p in app_mod.discover_models())


def test_card_summary_shows_accuracy_size_and_labels(tmp_path):
    model = tmp_path / "m_int8.tflite"
    model.write_bytes(b"\0" * 3000)
    card = ModelCard(name="m", architecture="edgenet", params=123456,
                     metrics={"float": {"PrivateTest": {"accuracy": 0.68, "loss": 1.0}},
                              "int8": {"PrivateTest": {"accuracy": 0.672}}, "gate": {"drop": 0.008}})
    rows = dict(app_mod.card_summary(model, card))
    assert rows["name"] == "m" and rows["file"] == "m_int8.tflite" and rows["size"] == "2.9 KB"
    assert rows["labels"] == ", ".join(LABELS) and rows["input"] == "48x48 gray"
    assert rows["accuracy (float / PrivateTest)"] == "68.0%"
    assert rows["accuracy (int8 / PrivateTest)"] == "67.2%"
    assert not any(k.startswith("accuracy (gate") for k in rows)
    assert rows["parameters"] == "123,456" and rows["architecture"] == "edgenet"
    bare = dict(app_mod.card_summary(model, None, LABELS, (48, 48)))
    assert bare["model card"].startswith("none") and bare["labels"] == ", ".join(LABELS)


def test_card_summary_reads_fer_convert_top1_percentages_and_skips_gate_reports(tmp_path):
    card = ModelCard(name="m", metrics={"float": {"PrivateTest": {"top1": 62.11, "n": 3589}},
                                        "int8": {"PublicTest": {"top1": 62.64, "drop_pp": 0.08}},
                                        "gate": {"int8": {"PublicTest": {"report": {"top1": 1.0}}}}})
    rows = dict(app_mod.card_summary(tmp_path / "m.tflite", card))
    assert rows["accuracy (float / PrivateTest)"] == "62.11%" and rows["accuracy (int8 / PublicTest)"] == "62.64%"
    assert not any("gate" in k for k in rows)


def test_the_shipped_int8_default_is_offered_first():
    from fer_edge_models import DEFAULT_MODEL

    if not DEFAULT_MODEL.is_file():
        pytest.skip("no shipped model")
    assert app_mod.discover_models()[0].name == DEFAULT_MODEL.name


def test_page_options_from_args_and_environment(tmp_path):
    env = {app_mod.ENV_MODEL: "/e/m.tflite", app_mod.ENV_MAX_SIDE: "800"}
    assert app_mod.page_options([], env) == app_mod.AppOptions(model="/e/m.tflite", models_dir=None, max_side=800)
    opts = app_mod.page_options(["--model", "/a/m.tflite", "--models-dir", "/a", "--max-side", "1000", "--x"], env)
    assert opts == app_mod.AppOptions(model="/a/m.tflite", models_dir="/a", max_side=1000)
    assert app_mod.page_options([], {}).max_side == app_mod.MAX_SIDE


# --------------------------------------------------------------------------- the command
@pytest.fixture
def launched(monkeypatch):
    calls = []

    def fake_launch(cmd, env):
        calls.append((cmd, env))
        return 0

    monkeypatch.setattr(app_mod, "_launch", fake_launch)
    return calls


def test_app_cmd_launches_streamlit_headless(launched, tiny_tflite_model):
    result = CliRunner().invoke(app_mod.app_cmd, ["--port", "8600", "--model", str(tiny_tflite_model)])
    assert result.exit_code == 0, result.output
    (cmd, env), = launched
    assert cmd[:5] == [sys.executable, "-m", "streamlit", "run", str(app_mod.APP_PATH)]
    flags = dict(zip(cmd[5:cmd.index("--")][::2], cmd[5:cmd.index("--")][1::2]))
    assert flags["--server.port"] == "8600" and flags["--server.address"] == "127.0.0.1"
    assert flags["--server.headless"] == "true" and flags["--browser.gatherUsageStats"] == "false"
    page_args = cmd[cmd.index("--") + 1:]
    assert page_args[page_args.index("--model") + 1] == str(tiny_tflite_model.resolve())
    assert env[app_mod.ENV_MODEL] == str(tiny_tflite_model.resolve())
    assert env["STREAMLIT_BROWSER_GATHER_USAGE_STATS"] == "false"
    # what the page will read back from those arguments
    opts = app_mod.page_options(page_args, {})
    assert opts.model == str(tiny_tflite_model.resolve()) and opts.max_side == app_mod.MAX_SIDE


def test_app_cmd_missing_model_is_a_model_error(launched, tmp_path):
    result = CliRunner().invoke(app_mod.app_cmd, ["--model", str(tmp_path / "nope.tflite")])
    assert isinstance(result.exception, ModelError) and "model not found" in str(result.exception)
    assert launched == []


def test_app_cmd_without_streamlit_says_how_to_install(launched, monkeypatch):
    monkeypatch.setattr(app_mod, "streamlit_available", lambda: False)
    result = CliRunner().invoke(app_mod.app_cmd, [])
    assert isinstance(result.exception, DeviceError)
    assert 'pip install "fer-edge[app]"' in str(result.exception)
    assert launched == []


def test_app_cmd_passes_streamlit_failure_on(monkeypatch):
    monkeypatch.setattr(app_mod, "_launch", lambda cmd, env: 3)
    assert CliRunner().invoke(app_mod.app_cmd, []).exit_code == 3
    monkeypatch.setattr(app_mod, "_launch", lambda cmd, env: -15)  # stopped by SIGTERM: a clean stop
    assert CliRunner().invoke(app_mod.app_cmd, []).exit_code == 0


def test_importing_the_command_does_not_import_streamlit():
    code = ("import sys, fer_edge.app; "
            "heavy = [m for m in ('streamlit', 'pandas', 'cv2', 'tensorflow') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_fer_edge_app_is_registered_in_the_cli(launched):
    from fer_edge.cli import cli

    result = CliRunner().invoke(cli, ["app", "--help"])
    assert result.exit_code == 0 and "--model" in result.output and "--port" in result.output
    assert "app" in CliRunner().invoke(cli, ["--help"]).output
    assert CliRunner().invoke(cli, ["app", "--port", "8123"]).exit_code == 0
    assert "--server.port" in launched[0][0] and "8123" in launched[0][0]


def test_fer_edge_app_without_streamlit_exits_6_with_the_install_hint(tmp_path):
    """A fresh process where Streamlit cannot be imported, through the real `fer-edge` entry point."""
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('streamlit',):\n"
        "            raise ImportError('blocked for the test')\n"
        "sys.meta_path.insert(0, Block())\n"
    )
    code = "import sys; sys.argv[0] = 'fer-edge'; from fer_edge.cli import main; main()"
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", code, "app"], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 6, proc.stdout + proc.stderr
    assert 'pip install "fer-edge[app]"' in proc.stderr and "Traceback" not in proc.stderr


def test_an_uploaded_phone_photo_taken_sideways_is_decoded_upright(astronaut_bgr):
    upright = np.ascontiguousarray(astronaut_bgr[:, 64:448])
    image, (w, h), scale = app_mod.decode_image(sideways_phone_jpeg(upright), "phone.jpg")
    assert (w, h) == (384, 512) and scale == 1.0
    assert np.abs(image.astype(np.int16) - upright.astype(np.int16)).mean() < 6.0

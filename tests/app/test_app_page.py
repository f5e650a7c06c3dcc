"""The upload page, run by Streamlit's own test harness (AppTest): the real page code, real uploads.

AppTest (streamlit >= 1.5x) stages files on `st.file_uploader` / `st.camera_input` itself, so no
test-only hook is needed; the page reads its model from FER_EDGE_APP_MODEL (what `fer-edge app`
also sets).
"""
from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

pytest.importorskip("streamlit", reason="the app extra (streamlit) is not installed")
pytest.importorskip("pandas", reason="the app extra (pandas) is not installed")

from streamlit.testing.v1 import AppTest  # noqa: E402

from fer_edge import app as app_mod  # noqa: E402

TIMEOUT = 120  # a cold interpreter + Haar on a 2400 px upload on a slow CI box


@pytest.fixture
def no_shipped_models(tmp_path):
    folder = tmp_path / "no_models"
    folder.mkdir()
    return folder


@pytest.fixture
def page_env(monkeypatch, tiny_tflite_model, no_shipped_models):
    """The page offers only the tiny test model (the shipped models/ folder is replaced by an empty one)."""
    monkeypatch.setenv(app_mod.ENV_MODEL, str(tiny_tflite_model))
    monkeypatch.setenv(app_mod.ENV_MODELS_DIR, str(no_shipped_models))
    monkeypatch.delenv(app_mod.ENV_MAX_SIDE, raising=False)
    return tiny_tflite_model


def png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


def jpeg(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def start() -> AppTest:
    at = AppTest.from_file(str(app_mod.APP_PATH), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(elements) -> list[str]:
    return [str(e.value) for e in elements]


def results_table(at: AppTest):
    assert len(at.dataframe) == 1, "expected one results table"
    return at.dataframe[0].value


def test_page_before_upload_shows_model_card_and_a_prompt(page_env):
    at = start()
    assert at.title[0].value.startswith("fer-edge")
    sidebar = "\n".join(texts(at.sidebar.markdown))
    assert page_env.name in sidebar
    assert "angry, disgust, fear, happy, sad, surprise, neutral" in sidebar
    assert at.sidebar.selectbox[0].options == [page_env.name]
    assert any("Upload one or more images" in t for t in texts(at.info))
    assert len(at.file_uploader) == 1 and at.file_uploader[0].accept_multiple_files
    assert not at.error


def test_upload_a_face_fills_the_results_table(page_env, astronaut_bgr, astronaut_face_box):
    at = start()
    at.file_uploader[0].upload("astronaut.png", png(astronaut_bgr), "image/png")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, texts(at.error)
    table = results_table(at)
    labels = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert list(table.columns) == ["image", "face", "x", "y", "w", "h", "emotion", "score"] + [f"p_{l}" for l in labels]
    assert len(table) >= 1
    row = table.iloc[0]
    assert row["image"] == "astronaut.png" and row["face"] == 1
    assert row["emotion"] in labels
    probs = row[[f"p_{l}" for l in labels]].to_numpy(float)
    assert probs.sum() == pytest.approx(1.0, abs=0.01)
    assert row["score"] == pytest.approx(probs.max(), abs=1e-3)
    # the box is on the astronaut's face
    fx, fy, fw, fh = astronaut_face_box
    cx, cy = row["x"] + row["w"] / 2, row["y"] + row["h"] / 2
    assert fx <= cx <= fx + fw and fy <= cy <= fy + fh
    # per-face text + chart, annotated image, both downloads
    assert any(t.startswith("**Face 1**:") and row["emotion"] in t for t in texts(at.markdown))
    assert len(at.image) == 1 and "face(s)" in at.image[0].captions[0]
    assert [b.label for b in at.download_button] == ["Download annotated image (PNG)", "Download results (CSV)"]


def test_bad_uploads_get_a_message_and_good_ones_still_work(page_env, astronaut_bgr):
    at = start()
    good = png(astronaut_bgr)
    at.file_uploader[0].set_value([
        ("notes.txt", b"this is not an image\n", "text/plain"),
        ("astronaut.png", good, "image/png"),
        ("broken.png", good[:300], "image/png"),
        ("empty.jpg", b"", "image/jpeg"),
    ])
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    errors = texts(at.error)
    assert len(errors) == 3, errors
    assert errors[0].startswith("notes.txt: not an image")
    assert errors[1].startswith("broken.png: not an image")
    assert errors[2] == "empty.jpg: the file is empty"
    table = results_table(at)
    assert set(table["image"]) == {"astronaut.png"}


def test_no_face_says_so_and_still_shows_the_image(page_env):
    at = start()
    grey = np.full((240, 320, 3), 128, np.uint8)
    at.file_uploader[0].upload("wall.png", png(grey), "image/png")
    at.run()
    assert not at.exception
    assert any("wall.png: no face found" in t for t in texts(at.warning))
    assert len(at.image) == 1 and at.image[0].captions[0].startswith("0 face(s)")
    assert len(at.dataframe) == 0
    assert "No faces in these images." in texts(at.markdown)
    assert not at.error


def test_huge_image_is_downscaled_and_the_page_says_so(page_env, astronaut_bgr):
    at = start()
    huge = cv2.resize(astronaut_bgr, (2400, 2400), interpolation=cv2.INTER_LINEAR)
    at.file_uploader[0].upload("huge.jpg", jpeg(huge), "image/jpeg")
    at.run()
    assert not at.exception
    notes = [t for t in texts(at.info) if "downscaled" in t]
    assert notes and "2400x2400" in notes[0] and "1920x1920" in notes[0], texts(at.info)
    table = results_table(at)
    assert (table["x"] + table["w"]).max() <= 1920 and (table["y"] + table["h"]).max() <= 1920


def test_max_side_option_is_honoured(page_env, monkeypatch, astronaut_bgr):
    monkeypatch.setenv(app_mod.ENV_MAX_SIDE, "256")
    at = start()
    at.file_uploader[0].upload("astronaut.png", png(astronaut_bgr), "image/png")
    at.run()
    assert any("512x512" in t and "256x256" in t for t in texts(at.info)), texts(at.info)


def test_mirror_averaging_is_a_sidebar_choice(page_env, astronaut_bgr):
    at = start()
    box = at.sidebar.checkbox(key="flip_average")
    assert box.value is False and "mirror-averaged" not in "\n".join(texts(at.sidebar.caption))
    at.file_uploader[0].upload("astronaut.png", png(astronaut_bgr), "image/png")
    at.run()
    plain = results_table(at).iloc[0]
    at.sidebar.checkbox(key="flip_average").check()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "mirror-averaged" in "\n".join(texts(at.sidebar.caption))
    averaged = results_table(at).iloc[0]
    labels = [c for c in results_table(at).columns if c.startswith("p_")]
    # the same face, its scores now the mean of the face's and its mirror image's
    assert (plain["x"], plain["y"]) == (averaged["x"], averaged["y"])
    assert averaged[labels].to_numpy(float).sum() == pytest.approx(1.0, abs=0.01)
    assert not (plain[labels].to_numpy(float) == averaged[labels].to_numpy(float)).all()


def test_camera_snapshot_is_analysed(page_env, astronaut_bgr):
    at = start()
    assert len(at.camera_input) == 0  # the camera is only asked for when the user turns it on
    at.toggle[0].set_value(True)
    at.run()
    at.camera_input[0].upload("snapshot.jpg", jpeg(astronaut_bgr))
    at.run()
    assert not at.exception
    table = results_table(at)
    assert list(table["image"]) [:1] == ["snapshot.jpg"]


def test_no_model_at_all_explains_how_to_get_one(monkeypatch, no_shipped_models):
    monkeypatch.delenv(app_mod.ENV_MODEL, raising=False)
    monkeypatch.setenv(app_mod.ENV_MODELS_DIR, str(no_shipped_models))
    at = start()
    errors = texts(at.error)
    assert len(errors) == 1 and "No emotion model found" in errors[0] and "fer-convert" in errors[0]
    assert len(at.file_uploader) == 0


def test_a_missing_or_corrupt_model_is_a_message(monkeypatch, tmp_path, no_shipped_models):
    bad = tmp_path / "bad_int8.tflite"
    bad.write_bytes(b"not a flatbuffer" * 10)
    monkeypatch.setenv(app_mod.ENV_MODEL, str(bad))
    monkeypatch.setenv(app_mod.ENV_MODELS_DIR, str(no_shipped_models))
    at = start()
    assert any("Cannot use this model" in t and "bad_int8.tflite" in t for t in texts(at.error)), texts(at.error)

    monkeypatch.setenv(app_mod.ENV_MODEL, str(tmp_path / "missing.tflite"))
    at = start()
    errors = texts(at.error)
    assert any("Model not found" in t for t in errors) and any("No emotion model found" in t for t in errors)


def test_models_folder_lists_models_without_edgetpu_variants(monkeypatch, tiny_tflite_model, tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    for name in ("b_int8.tflite", "a_int8.tflite", "a_int8_edgetpu.tflite"):
        shutil.copy(tiny_tflite_model, folder / name)
    monkeypatch.delenv(app_mod.ENV_MODEL, raising=False)
    monkeypatch.setenv(app_mod.ENV_MODELS_DIR, str(folder))
    at = start()
    assert at.sidebar.selectbox[0].options == ["a_int8.tflite", "b_int8.tflite"]
    at.sidebar.selectbox[0].select_index(1)
    at.run()
    assert not at.exception and not at.error
    assert any("b_int8.tflite" in t for t in texts(at.sidebar.markdown))

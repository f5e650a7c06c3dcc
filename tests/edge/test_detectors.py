"""Face detectors: Haar on a real face; BlazeFace's anchors, decoding, NMS and loading path."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_edge.config import DetectorConfig
from fer_edge.detectors import DETECTORS, create_detector
from fer_edge.detectors import blazeface as bf
from fer_edge.detectors.haar import HaarDetector, cascade_path
from fer_edge.errors import ConfigError, ContractError, ModelError
from fer_edge.tracker import iou

from .conftest import background, cache_dir


# --------------------------------------------------------------------------- Haar
def test_haar_finds_the_astronaut(astronaut_bgr, astronaut_face_box):
    det = create_detector(DetectorConfig(kind="haar"))
    found = det.detect(astronaut_bgr)
    assert len(found) == 1
    assert iou(found[0].box, astronaut_face_box) > 0.5


@pytest.mark.parametrize("equalize", ["none", "hist", "clahe"])
@pytest.mark.parametrize("scale", [0.5, 1.0])
def test_haar_settings_keep_full_frame_coordinates(astronaut_bgr, astronaut_face_box, scale, equalize):
    found = HaarDetector(scale=scale, equalize=equalize).detect(astronaut_bgr)
    assert len(found) == 1 and iou(found[0].box, astronaut_face_box) > 0.5


def test_haar_uses_a_given_small_gray_frame(astronaut_bgr, astronaut_face_box):
    """picamera2's lores luma: boxes come back in the main frame's pixels."""
    lores = cv2.resize(cv2.cvtColor(astronaut_bgr, cv2.COLOR_BGR2GRAY), (256, 256), interpolation=cv2.INTER_AREA)
    found = HaarDetector(scale=1.0).detect(astronaut_bgr, gray=lores)
    assert len(found) == 1 and iou(found[0].box, astronaut_face_box) > 0.5


def test_haar_min_face_filters_small_faces(astronaut_bgr):
    assert HaarDetector(min_face=300).detect(astronaut_bgr) == []


def test_haar_finds_nothing_in_a_plain_background():
    assert HaarDetector().detect(background()) == []


def test_haar_cascade_missing_is_a_clear_error(monkeypatch):
    import fer_edge.detectors.haar as haar

    monkeypatch.delattr(haar.cv2, "data")
    with pytest.raises(ModelError, match="no bundled Haar cascades"):
        cascade_path()


def test_registry():
    assert set(DETECTORS) == {"haar", "blazeface", "blazeface-full", "whole-image"}
    with pytest.raises(ConfigError, match="unknown detector 'yolo'"):
        create_detector(DetectorConfig(kind="yolo"))
    with pytest.raises(ConfigError, match="scale"):
        create_detector(DetectorConfig(kind="haar", scale=1.5))


# --------------------------------------------------------------------------- BlazeFace maths
def test_short_range_anchors():
    anchors = bf.ssd_anchors(bf.SHORT_RANGE)
    assert anchors.shape == (896, 2)
    # stride 8: 16x16 cells, 2 anchors each, row by row
    assert np.allclose(anchors[0], anchors[1]) and np.allclose(anchors[0], [0.5 / 16, 0.5 / 16])
    assert np.allclose(anchors[2], [1.5 / 16, 0.5 / 16])
    assert np.allclose(anchors[32], [0.5 / 16, 1.5 / 16])
    # stride 16 (three layers share the 8x8 map): 6 anchors per cell, from index 512
    assert np.allclose(anchors[512:518], [0.5 / 8, 0.5 / 8])
    assert np.allclose(anchors[518], [1.5 / 8, 0.5 / 8])
    assert np.allclose(anchors[-1], [7.5 / 8, 7.5 / 8])


def test_full_range_anchors():
    anchors = bf.ssd_anchors(bf.FULL_RANGE)
    assert anchors.shape == (2304, 2)
    assert np.allclose(anchors[1], [1.5 / 48, 0.5 / 48])


def test_decode_boxes_and_keypoints():
    anchors = np.array([[0.25, 0.5], [0.5, 0.5]], np.float32)
    raw = np.zeros((2, 16), np.float32)
    raw[0, :4] = [12.8, -6.4, 32.0, 64.0]  # centre +0.1, -0.05; size 0.25 x 0.5 (input 128)
    raw[0, 4:6] = [6.4, 12.8]  # first keypoint: anchor + (0.05, 0.1)
    boxes = bf.decode_boxes(raw, anchors, 128)
    assert np.allclose(boxes[0], [0.35 - 0.125, 0.45 - 0.25, 0.35 + 0.125, 0.45 + 0.25])
    assert np.allclose(boxes[1], [0.5, 0.5, 0.5, 0.5])
    kp = bf.decode_keypoints(raw, anchors, 128)
    assert kp.shape == (2, 6, 2) and np.allclose(kp[0, 0], [0.3, 0.6])


def test_scores_are_clipped_sigmoids():
    s = bf.scores_from_logits(np.array([0.0, 1000.0, -1000.0, np.log(3.0)]))
    assert np.allclose(s, [0.5, 1.0, 0.0, 0.75], atol=1e-6)


def test_weighted_nms_merges_a_cluster_and_keeps_a_separate_box():
    boxes = np.array([[0.0, 0.0, 1.0, 1.0], [0.1, 0.0, 1.1, 1.0], [3.0, 3.0, 4.0, 4.0]], np.float32)
    scores = np.array([0.6, 0.9, 0.7], np.float32)
    out = bf.weighted_nms(boxes, scores, 0.3)
    assert len(out) == 2
    merged, score = out[0]
    assert score == pytest.approx(0.9)
    assert np.allclose(merged, [(0.1 * 0.9) / 1.5, 0, (1.0 * 0.6 + 1.1 * 0.9) / 1.5, 1.0])
    assert np.allclose(out[1][0], boxes[2]) and out[1][1] == pytest.approx(0.7)
    plain = bf.plain_nms(boxes, scores, 0.3)
    assert [s for _, s in plain] == pytest.approx([0.9, 0.7]) and np.allclose(plain[0][0], boxes[1])


# --------------------------------------------------------------------------- BlazeFace loading and detect
def test_blazeface_runs_the_shipped_model_or_a_real_file(tmp_path):
    assert create_detector(DetectorConfig(kind="blazeface"), fallback=False).model_path.name == \
        "face_detection_short_range.tflite"
    with pytest.raises(ModelError, match="BlazeFace model not found: .*nope.tflite"):
        create_detector(DetectorConfig(kind="blazeface", model=str(tmp_path / "nope.tflite")), fallback=False)
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"this is not a flatbuffer" * 10)
    with pytest.raises(ModelError, match="cannot load .*junk.tflite as a TFLite model"):
        create_detector(DetectorConfig(kind="blazeface", model=str(junk)), fallback=False)
    # the runtime does not stop for it: Haar takes over (the warning is tested in test_face_stage.py)
    assert create_detector(DetectorConfig(kind="blazeface", model=str(junk))).name == "haar"


def test_blazeface_refuses_a_model_that_is_not_blazeface(tiny_tflite_model):
    with pytest.raises(ContractError, match="not a BlazeFace model"):
        create_detector(DetectorConfig(kind="blazeface", model=str(tiny_tflite_model)), fallback=False)


# A face at frame box (200, 100, 120, 120) in a 640x480 frame. Letterboxed into 128x128 the frame
# is scaled by 0.2 and padded 16 px top and bottom: the box becomes (40, 36, 24, 24) in input pixels,
# centre (52, 48) = (0.40625, 0.375) normalised. Stride-8 cell (6, 5) has its centre at
# (0.40625, 0.34375): anchor index (5 * 16 + 6) * 2 = 172, offsets (0, +4) px, size 24 x 24 px.
FACE_ANCHOR = 172
FACE_RAW = [0.0, 4.0, 24.0, 24.0]
FACE_BOX = (200, 100, 120, 120)


def _raw_tensors() -> tuple[np.ndarray, np.ndarray]:
    raw_boxes = np.zeros((1, 896, 16), np.float32)
    raw_scores = np.full((1, 896, 1), -8.0, np.float32)
    raw_boxes[0, FACE_ANCHOR, :4] = FACE_RAW
    raw_scores[0, FACE_ANCHOR, 0] = 3.0
    # the cell's second anchor sees the same face, 2 px further right, less sure: merged by weighted NMS
    raw_boxes[0, FACE_ANCHOR + 1, :4] = [2.0, 4.0, 24.0, 24.0]
    raw_scores[0, FACE_ANCHOR + 1, 0] = 1.0
    return raw_boxes, raw_scores


@pytest.fixture(scope="session")
def synthetic_blazeface(request, tmp_path_factory) -> Path:
    """A TFLite file with BlazeFace's tensors (1,128,128,3) -> (1,896,16), (1,896,1), fixed outputs."""
    cache = cache_dir(request, tmp_path_factory, "fer-edge-blazeface-v1")
    path = cache / "synthetic_blazeface.tflite"
    if not path.is_file():
        tf = pytest.importorskip("tensorflow", reason="tensorflow (train extra) builds the synthetic model")
        raw_boxes, raw_scores = _raw_tensors()

        @tf.function(input_signature=[tf.TensorSpec((1, 128, 128, 3), tf.float32)])
        def model(x):
            zero = tf.reduce_mean(x) * 0.0  # depends on the input, so nothing is folded away
            return {"regressors": tf.constant(raw_boxes) + zero, "classificators": tf.constant(raw_scores) + zero}

        converter = tf.lite.TFLiteConverter.from_concrete_functions([model.get_concrete_function()], model)
        path.write_bytes(converter.convert())
    return path


def test_blazeface_detect_end_to_end(synthetic_blazeface):
    det = create_detector(DetectorConfig(kind="blazeface", model=str(synthetic_blazeface), min_face=20))
    assert det.describe().startswith("blazeface (synthetic_blazeface.tflite, 128x128, 896 anchors")
    found = det.detect(np.zeros((480, 640, 3), np.uint8))
    assert len(found) == 1
    (x, y, w, h), score = found[0].box, found[0].score
    w1, w2 = 1 / (1 + np.exp(-3.0)), 1 / (1 + np.exp(-1.0))
    shift = 2.0 * w2 / (w1 + w2) / 0.2  # the weighted mean moved the box right, in frame pixels
    assert score == pytest.approx(w1, abs=1e-4)
    assert abs(x - (FACE_BOX[0] + shift)) <= 1 and abs(y - FACE_BOX[1]) <= 1
    assert abs(w - FACE_BOX[2]) <= 1 and abs(h - FACE_BOX[3]) <= 1
    det.weighted = False
    (x, y, w, h) = det.detect(np.zeros((480, 640, 3), np.uint8))[0].box
    assert (x, y, w, h) == FACE_BOX
    det.score_threshold = 0.99
    assert det.detect(np.zeros((480, 640, 3), np.uint8)) == []


def test_blazeface_letterbox_keeps_the_aspect(synthetic_blazeface):
    det = bf.BlazeFaceDetector(synthetic_blazeface)
    frame = np.full((480, 640, 3), 255, np.uint8)
    rgb, scale, pad_x, pad_y = det.letterbox(frame)
    assert scale == pytest.approx(0.2) and (pad_x, pad_y) == (0, 16)
    assert rgb[:16].max() == 0 and rgb[-16:].max() == 0 and rgb[16:112].min() == 255
    x = det.input_tensor(rgb)
    assert x.shape == (1, 128, 128, 3) and x.dtype == np.float32
    assert x.min() == pytest.approx(-1.0) and x.max() == pytest.approx(1.0)


# --------------------------------------------------------------------------- whole-image (face crops)
def test_whole_image_gives_every_crop_as_one_face_classified_as_cropped(tiny_tflite_model, tmp_path, read_jsonl):
    """`--detector whole-image`: no detection, each image is one face; the aligner maps the whole crop
    onto the model input, so a 48-px crop reaches the classifier exactly as the contract prepares it."""
    from fer_edge.classifier import EmotionClassifier
    from fer_edge.cli import build_config
    from fer_edge.config import RunConfig
    from fer_edge.loop import analyse_still, build_pipeline, run
    from fer_edge.notify import Notifier

    cfg = build_config({"source_path": str(tmp_path), "detector": "whole-image"})
    assert cfg.detector.kind == "whole-image"
    classifier = EmotionClassifier(tiny_tflite_model)
    pipeline = build_pipeline(cfg, classifier)
    assert pipeline.photo_search is None  # nothing to search: the image is the face
    crop = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    result = analyse_still(pipeline, crop, "crop.png")
    (face,) = result.faces
    assert face.box == (0, 0, 48, 48) and face.reason == ""
    prepared = pipeline.prepare(crop, face.box, None)
    assert np.array_equal(prepared, classifier.prepare(crop))

    folder = tmp_path / "crops"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), cv2.resize(crop, (96 + 8 * i, 96)))  # any size, even not square
    cfg = RunConfig()
    cfg.source.path, cfg.classifier.model = str(folder), str(tiny_tflite_model)
    cfg.detector.kind, cfg.tracker.min_confidence = "whole-image", 0.0
    cfg.log.jsonl = str(tmp_path / "e.jsonl")
    run(cfg, notifier=Notifier(env={}))
    events = [e for e in read_jsonl(cfg.log.jsonl) if e["type"] == "event"]
    assert [(e["file"][-5:], e["box"]) for e in events] == [
        ("0.png", [0, 0, 96, 96]), ("1.png", [0, 0, 104, 96]), ("2.png", [0, 0, 112, 96])]

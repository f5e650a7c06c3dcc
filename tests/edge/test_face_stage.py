"""The face stage: the shipped BlazeFace models, keypoints, duplicate suppression, alignment, quality."""
from __future__ import annotations

import dataclasses
import logging
import math

import cv2
import numpy as np
import pytest

from fer_edge.align import Aligner, eye_angle, face_quality, yaw_estimate
from fer_edge.config import DetectorConfig, RunConfig
from fer_edge.contract import FACE_TEMPLATES, file_sha256
from fer_edge.detectors import create_detector, suppress_duplicates
from fer_edge.detectors.blazeface import BlazeFaceDetector, shipped_model
from fer_edge.records import Detection
from fer_edge.tracker import IouTracker
from fer_edge_models import FACE_DETECTION_DIR, FACE_DETECTORS

SHA256 = {
    "blazeface": "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    "blazeface-full": "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
}
SIZES = {"blazeface": 229_714, "blazeface-full": 676_746}


def rotate_about(image: np.ndarray, centre, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    m = cv2.getRotationMatrix2D(tuple(float(c) for c in centre), degrees, 1.0)
    return cv2.warpAffine(image, m, (image.shape[1], image.shape[0]), borderMode=cv2.BORDER_REFLECT101), m


# --------------------------------------------------------------------------- shipped models
@pytest.mark.parametrize("kind", ["blazeface", "blazeface-full"])
def test_shipped_detector_model_is_the_published_file(kind):
    path = FACE_DETECTORS[kind]
    assert path.is_file(), f"{path} is not shipped"
    assert path.stat().st_size == SIZES[kind]
    assert file_sha256(path) == SHA256[kind]
    provenance = (FACE_DETECTION_DIR / "PROVENANCE.md").read_text()
    assert SHA256[kind] in provenance and "mediapipe==0.10.21" in provenance
    assert "Apache License" in (FACE_DETECTION_DIR / "LICENSE").read_text()


@pytest.mark.parametrize("kind", ["blazeface", "blazeface-full"])
def test_shipped_detector_finds_the_astronaut_with_keypoints(kind, astronaut_bgr, astronaut_face_box):
    det = create_detector(DetectorConfig(kind=kind), fallback=False)
    assert isinstance(det, BlazeFaceDetector) and det.model_path == shipped_model(kind)
    found = det.detect(astronaut_bgr)
    assert len(found) == 1
    face = found[0]
    x, y, w, h = face.box
    fx, fy, fw, fh = astronaut_face_box
    assert abs((x + w / 2) - (fx + fw / 2)) < fw / 3 and abs((y + h / 2) - (fy + fh / 2)) < fh / 3
    kp = face.keypoints
    assert kp.shape == (6, 2)
    right_eye, left_eye, nose, mouth = kp[:4]
    # the subject's right eye is on the image's left; eyes above the nose, the nose above the mouth
    assert right_eye[0] < nose[0] < left_eye[0]
    assert max(right_eye[1], left_eye[1]) < nose[1] < mouth[1]
    assert x <= nose[0] <= x + w and y <= nose[1] <= y + h


def test_default_detector_is_blazeface_short_range():
    cfg = RunConfig()
    assert cfg.detector.kind == "blazeface" and cfg.detector.align
    assert create_detector(cfg.detector).model_path.name == "face_detection_short_range.tflite"


def test_unloadable_detector_model_falls_back_to_haar_with_a_reason(tmp_path, caplog):
    bad = tmp_path / "broken.tflite"
    bad.write_bytes(b"not a model")
    with caplog.at_level(logging.WARNING):
        det = create_detector(DetectorConfig(kind="blazeface", model=str(bad)))
    assert det.name == "haar"
    assert any("falling back to haar" in r.getMessage() and "broken.tflite" in r.getMessage() for r in caplog.records)
    from fer_edge.errors import ModelError

    with pytest.raises(ModelError):
        create_detector(DetectorConfig(kind="blazeface", model=str(bad)), fallback=False)


def test_keypoints_rotate_with_the_face(astronaut_bgr, astronaut_face_box):
    det = create_detector(DetectorConfig(kind="blazeface"), fallback=False)
    fx, fy, fw, fh = astronaut_face_box
    centre = (fx + fw / 2, fy + fh / 2)
    upright = math.degrees(eye_angle(det.detect(astronaut_bgr)[0].keypoints))
    for tilt in (-30, 30):
        rotated, _ = rotate_about(astronaut_bgr, centre, tilt)
        found = det.detect(rotated)
        assert found, f"no face at tilt {tilt}"
        angle = math.degrees(eye_angle(found[0].keypoints))
        # cv2 rotates counter-clockwise for a positive angle: the eye line turns by -tilt (BlazeFace's
        # keypoints follow a 30-degree tilt to within ~11 degrees on this photo)
        assert angle - upright == pytest.approx(-tilt, abs=12)


# --------------------------------------------------------------------------- duplicates
def test_nested_and_overlapping_boxes_become_one():
    big = Detection((100, 100, 120, 120), 0.9)
    nested = Detection((130, 130, 50, 50), 0.8)  # inside the big one
    shifted = Detection((110, 105, 120, 118), 0.7)  # the same face, another scale
    other = Detection((400, 100, 100, 100), 0.6)  # another face
    assert suppress_duplicates([big, nested, shifted, other]) == [big, other]
    assert suppress_duplicates([]) == []


def test_duplicate_box_on_one_face_never_starts_a_second_track():
    from fer_edge.loop import Pipeline

    class Twice:
        name = "haar"

        def detect(self, image, gray=None):  # a face, and a second box nested in it (Haar does this)
            return [Detection((100, 100, 120, 120)), Detection((125, 130, 60, 60))]

    pipeline = Pipeline(Twice(), classifier=_FakeClassifier(), tracker=IouTracker(), smoother=_smoother())
    from fer_edge.records import Frame

    for i in range(5):
        result = pipeline.process(Frame(i, np.zeros((480, 640, 3), np.uint8), 0.0), {})
        assert [f.track_id for f in result.faces] == [1]


class _FakeClassifier:
    labels = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    input_size = (48, 48)

    def prepare(self, face):
        return face

    def prepare_pixels(self, pixels):
        return pixels

    def invoke(self, tensor):
        return np.full(7, 1 / 7, np.float32)


def _smoother():
    from fer_edge.smoother import Smoother

    return Smoother(_FakeClassifier.labels, "none")


# --------------------------------------------------------------------------- alignment
def _eye_face(size=48, angle=0.0, centre=(240.0, 200.0), eye_dist=40.0):
    """A synthetic face in a 480x640 frame: two dark eyes at `eye_dist`, tilted by `angle` degrees,
    plus its keypoints (right eye, left eye, nose, mouth, ears) and a box around it."""
    frame = np.full((480, 640, 3), 200, np.uint8)
    a = math.radians(angle)
    ux, uy = math.cos(a), math.sin(a)  # along the eye line
    vx, vy = -uy, ux  # down the face
    cx, cy = centre
    pts = {"re": (-0.5, 0), "le": (0.5, 0), "nose": (0, 0.55), "mouth": (0, 1.0), "rear": (-1.0, 0.2), "lear": (1.0, 0.2)}
    kp = np.array([[cx + eye_dist * (u * ux + v * vx), cy + eye_dist * (u * uy + v * vy)]
                   for u, v in pts.values()], np.float32)
    for x, y in kp[:2]:
        cv2.circle(frame, (int(round(x)), int(round(y))), 5, (0, 0, 0), -1)
    side = eye_dist / FACE_TEMPLATES["blazeface"].box_side * 0.37 * 2.4
    box = (int(cx - side / 2), int(cy - side * 0.35), int(side), int(side))
    return frame, kp, box


@pytest.mark.parametrize("tilt", [-30, -15, 0, 15, 30])
def test_alignment_levels_the_eyes_and_puts_them_where_the_template_says(tilt):
    frame, kp, box = _eye_face(angle=tilt)
    aligner = Aligner((48, 48), FACE_TEMPLATES["blazeface"], align=True)
    out = aligner(frame, box, kp)
    assert out.shape == (48, 48) and out.dtype == np.float32
    # the two darkest blobs are the eyes: level, and centred on the template's eye midpoint
    dark = out < 100
    ys, xs = np.nonzero(dark)
    left, right = xs < 24, xs >= 24
    ly, ry = ys[left].mean(), ys[right].mean()
    assert abs(ly - ry) < 1.0, f"eyes not level at tilt {tilt}: {ly:.1f} vs {ry:.1f}"
    tx, ty = FACE_TEMPLATES["blazeface"].eye_mid
    assert abs((xs[left].mean() + xs[right].mean()) / 2 - (tx * 48 - 0.5)) < 1.0
    assert abs((ly + ry) / 2 - (ty * 48 - 0.5)) < 1.0


def test_alignment_scale_comes_from_the_box_not_the_eye_distance():
    """A head turned half away keeps its box but its eyes come closer: the crop must not zoom in."""
    aligner = Aligner((48, 48), FACE_TEMPLATES["blazeface"], align=True)
    frame, kp, box = _eye_face()
    turned = kp.copy()
    turned[1] = kp[0] + (kp[1] - kp[0]) * 0.5  # eye distance halved
    a = aligner.matrix(box, kp)
    b = aligner.matrix(box, turned)
    assert math.hypot(a[0, 0], a[0, 1]) == pytest.approx(math.hypot(b[0, 0], b[0, 1]))


def test_haar_box_crop_uses_its_own_template_without_rotation():
    frame, kp, box = _eye_face(angle=20)
    aligner = Aligner.for_detector("haar", (48, 48))
    assert aligner.template == FACE_TEMPLATES["haar"]
    m = aligner.matrix(box, None)
    assert m[0, 1] == pytest.approx(0.0) and m[1, 0] == pytest.approx(0.0)
    x, y, w, h = box
    centre = m @ np.array([x + w / 2, y + h / 2, 1.0])
    assert centre == pytest.approx(np.array(FACE_TEMPLATES["haar"].box_center) * 48)


def test_aligned_face_matches_a_plain_crop_of_an_upright_face():
    """Upright and in the middle, alignment and the template's box crop see nearly the same pixels."""
    rng = np.random.default_rng(0)
    frame = cv2.GaussianBlur(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), (0, 0), 3)
    frame, kp, box = _eye_face()
    t = FACE_TEMPLATES["blazeface"]
    # keypoints placed so that the eye midpoint sits where the box template says it does
    x, y, w, h = box
    side = (w + h) / 2
    mid = np.array([x + w / 2 + (t.eye_mid[0] - t.box_center[0]) * side / t.box_side,
                    y + h / 2 + (t.eye_mid[1] - t.box_center[1]) * side / t.box_side])
    kp = kp - (kp[0] + kp[1]) / 2 + mid
    aligned = Aligner((48, 48), t, align=True)(frame, box, kp)
    boxed = Aligner((48, 48), t, align=False)(frame, box, kp)
    assert np.abs(aligned - boxed).mean() < 2.0


def test_a_large_face_is_shrunk_without_aliasing():
    """A 400-px face of fine stripes averages to grey (INTER_AREA first), not to a moire pattern."""
    frame = np.zeros((600, 800, 3), np.uint8)
    frame[:, ::2] = 255
    aligner = Aligner((48, 48), FACE_TEMPLATES["haar"], align=False)
    out = aligner(frame, (200, 100, 400, 400), None)
    assert abs(out.mean() - 127.5) < 8 and out.std() < 10


# --------------------------------------------------------------------------- quality
def test_yaw_estimate_and_quality():
    _, kp, box = _eye_face()
    assert yaw_estimate(kp) == pytest.approx(0.0, abs=1e-6)
    turned = kp.copy()
    turned[2, 0] = turned[1, 0]  # nose tip in line with the left eye: fully turned
    assert yaw_estimate(turned) == pytest.approx(1.0)
    half = kp.copy()
    half[2, 0] = (kp[2, 0] + kp[1, 0]) / 2
    assert yaw_estimate(half) == pytest.approx(0.5, abs=1e-3)
    assert face_quality(box, kp, max_yaw=0.6, min_readable=32) == ""
    assert face_quality(box, turned, max_yaw=0.6, min_readable=32) == "turned"
    assert face_quality(box, turned, max_yaw=0.0, min_readable=32) == ""  # off
    assert face_quality((0, 0, 20, 20), kp, max_yaw=0.6, min_readable=32) == "small"
    assert face_quality((0, 0, 20, 20), None, max_yaw=0.6, min_readable=0) == ""


def test_turned_face_is_logged_uncertain_with_its_reason():
    from fer_edge.loop import Pipeline
    from fer_edge.records import Frame

    _, kp, box = _eye_face()
    turned = kp.copy()
    turned[2, 0] = turned[1, 0]

    class Turned:
        name = "blazeface"

        def detect(self, image, gray=None):
            return [Detection(box, 0.9, turned)]

    aligner = Aligner((48, 48), FACE_TEMPLATES["blazeface"])
    pipeline = Pipeline(Turned(), _FakeClassifier(), IouTracker(), _smoother(), aligner=aligner, max_yaw=0.6)
    face = pipeline.process(Frame(0, np.zeros((480, 640, 3), np.uint8), 0.0), {}).faces[0]
    assert face.label == "uncertain" and face.reason == "turned"
    assert face.raw_probs is not None and face.keypoints is turned


def test_keypoints_travel_through_the_tracker():
    tracker = IouTracker()
    kp1 = np.zeros((6, 2), np.float32)
    kp2 = np.ones((6, 2), np.float32)
    [track] = tracker.update([Detection((10, 10, 50, 50), 0.9, kp1)])
    assert track.keypoints is kp1
    [track] = tracker.update([Detection((12, 10, 50, 50), 0.9, kp2)])
    assert track.keypoints is kp2 and track.id == 1


def test_still_analysis_starts_afresh_for_every_image(astronaut_bgr):
    """Two photos in a row: the second's face is track 1 again, its label its own."""
    from fer_edge.loop import analyse_still, still_pipeline

    class Probs(_FakeClassifier):
        def __init__(self):
            self.calls = 0

        def invoke(self, tensor):
            self.calls += 1
            p = np.full(7, 0.01, np.float32)
            p[3 if self.calls == 1 else 5] = 0.94
            return p

    det = create_detector(DetectorConfig(kind="blazeface"), fallback=False)
    pipeline = still_pipeline(Probs(), det)
    first = analyse_still(pipeline, astronaut_bgr, "a.png")
    second = analyse_still(pipeline, astronaut_bgr, "b.png", index=1)
    assert [f.track_id for f in first.faces] == [1] and [f.track_id for f in second.faces] == [1]
    assert first.faces[0].label == "happy" and second.faces[0].label == "surprise"
    assert dataclasses.replace(first.frame, image=None).source == "a.png"


def test_min_face_below_the_short_range_reach_switches_to_full_range(astronaut_bgr, caplog):
    """640 px frames: the short-range model sees faces from ~100 px; asking for 60 px takes the full range."""
    frame = cv2.resize(astronaut_bgr, (640, 640))
    default = create_detector(DetectorConfig(kind="blazeface"), fallback=False)
    default.detect(frame)
    assert default.model_path.name == "face_detection_short_range.tflite"
    big_enough = create_detector(DetectorConfig(kind="blazeface", min_face=120), fallback=False)
    big_enough.detect(frame)
    assert big_enough.model_path.name == "face_detection_short_range.tflite"
    with caplog.at_level(logging.INFO):
        small = create_detector(DetectorConfig(kind="blazeface", min_face=60), fallback=False)
        found = small.detect(frame)
    assert small.model_path.name == "face_detection_full_range_sparse.tflite" and len(found) == 1
    assert any("full-range model" in r.getMessage() for r in caplog.records)

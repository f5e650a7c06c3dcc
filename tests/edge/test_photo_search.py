"""Photo search: small faces in large photos (windows + second look), for stills only."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from fer_edge.config import RunConfig
from fer_edge.detectors import create_detector
from fer_edge.detectors.base import Detector
from fer_edge.detectors.photo_search import FULL_RANGE_REACH, WINDOW_OVERLAP, PhotoSearch, windows
from fer_edge.loop import build_pipeline
from fer_edge.records import Detection, Frame
from fer_edge.tracker import iou

#: the astronaut's face in scikit-image's 512x512 photo (BlazeFace's box; benchmarks/pipeline_accuracy.py)
ASTRONAUT_FACE = (178, 81, 94, 94)


def group_photo(astronaut_bgr: np.ndarray, size=(2400, 1800), face_px: int = 100,
                places=((300, 300), (1200, 900), (2000, 1400))) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """A large photo with the astronaut's head at `places` (face centres), her face `face_px` wide,
    over a textured grey background; returns the photo and the true face boxes."""
    width, height = size
    rng = np.random.default_rng(0)
    photo = cv2.GaussianBlur(rng.integers(60, 200, (height, width, 3), dtype=np.uint8), (0, 0), 6)
    scale = face_px / ASTRONAUT_FACE[2]
    head = cv2.resize(astronaut_bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    fx, fy = ASTRONAUT_FACE[0] * scale, ASTRONAUT_FACE[1] * scale
    truths = []
    for cx, cy in places:
        x0, y0 = int(cx - fx - face_px / 2), int(cy - fy - face_px / 2)  # the head's corner in the photo
        h, w = head.shape[:2]
        px0, py0, px1, py1 = max(0, x0), max(0, y0), min(width, x0 + w), min(height, y0 + h)
        photo[py0:py1, px0:px1] = head[py0 - y0:py1 - y0, px0 - x0:px1 - x0]
        truths.append((x0 + int(fx), y0 + int(fy), face_px, face_px))
    return photo, truths


def matched(found: list[Detection], truths) -> int:
    return sum(any(iou(d.box, t) > 0.3 for d in found) for t in truths)


# --------------------------------------------------------------------------- the windows
@pytest.mark.parametrize("size", [(640, 480), (1920, 1080), (4032, 3024), (3024, 4032)])
def test_every_face_size_from_the_smallest_up_fits_wholly_in_a_window_that_reaches_it(size):
    width, height = size
    smallest = 40
    wins = windows(width, height, smallest)
    assert wins and all(0 <= x and 0 <= y and x + w <= width and y + h <= height for x, y, w, h in wins)
    rng = np.random.default_rng(1)
    # faces too small for the whole-photo full-range pass, at random places
    for _ in range(300):
        side = rng.uniform(smallest, FULL_RANGE_REACH * max(width, height))
        x, y = rng.uniform(0, width - side), rng.uniform(0, height - side)
        assert any(wx <= x and wy <= y and x + side <= wx + ww and y + side <= wy + wh
                   and side >= FULL_RANGE_REACH * max(ww, wh) * 0.999 for wx, wy, ww, wh in wins), (side, x, y)


def test_windows_shrink_coarse_to_fine_and_stay_few():
    sides = [w for _, _, w, h in windows(4032, 3024, 40) if w == h]
    assert sides == sorted(sides, reverse=True)  # coarse to fine: a whole face wins over a cut one
    assert sides[0] >= 4032 / 2 and min(sides) == pytest.approx(40 / FULL_RANGE_REACH, abs=2)
    assert len(windows(4032, 3024, 40)) < 200
    # the whole-photo pass already reaches 40-px faces in a 400-px photo: no windows
    assert windows(400, 300, 40) == []
    # neighbours overlap
    level = [(x, y) for x, y, w, h in windows(4032, 3024, 40) if w == min(sides)]
    xs = sorted({x for x, _ in level})
    assert xs[1] - xs[0] <= min(sides) * (1 - WINDOW_OVERLAP) + 1


# --------------------------------------------------------------------------- real BlazeFace
@pytest.fixture(scope="module")
def blazeface():
    cfg = RunConfig().detector
    return create_detector(cfg, fallback=False)


def test_a_group_photo_s_small_faces_are_found_that_one_pass_misses(blazeface, astronaut_bgr):
    photo, truths = group_photo(astronaut_bgr)
    assert matched(blazeface.detect(photo), truths) == 0  # ~1/24 of the photo: below the model's reach
    search = PhotoSearch.for_detector(blazeface)
    found = search.detect(photo)
    assert matched(found, truths) == len(truths)
    assert len(found) == len(truths), [d.box for d in found]  # one box per face, nothing else
    assert search.windows_searched > 0
    search.close()


def test_large_faces_are_found_by_the_whole_photo_pass_alone(blazeface, astronaut_bgr):
    photo, truths = group_photo(astronaut_bgr, size=(1600, 1200), face_px=300, places=((700, 500),))
    found = PhotoSearch.for_detector(blazeface).detect(photo)
    assert matched(found, truths) == 1 and len(found) == 1


def test_haar_has_no_photo_search():
    cfg = RunConfig().detector
    cfg.kind = "haar"
    assert PhotoSearch.for_detector(create_detector(cfg)) is None


# --------------------------------------------------------------------------- the second look
class Scripted(Detector):
    """Finds a face wherever `where` (full-photo box) lies wholly inside the image it is given."""

    def __init__(self, where, offset_of) -> None:
        self.where, self.offset_of, self.calls = where, offset_of, 0

    def detect(self, image_bgr, gray=None):
        self.calls += 1
        ox, oy = self.offset_of(image_bgr)
        x, y, w, h = self.where
        ih, iw = image_bgr.shape[:2]
        if x - ox >= 0 and y - oy >= 0 and x - ox + w <= iw and y - oy + h <= ih and (iw, ih) != self.full:
            return [Detection((x - ox, y - oy, w, h), 0.9, None)]
        return []


def views_of(photo):
    """Where a view (a numpy slice of `photo`) starts in it."""
    base = photo.__array_interface__["data"][0]
    stride_y, stride_x = photo.strides[:2]

    def offset(view):
        delta = view.__array_interface__["data"][0] - base
        return (delta % stride_y) // stride_x, delta // stride_y
    return offset


@pytest.mark.parametrize("confirmed", [True, False])
def test_a_face_a_window_finds_is_kept_only_when_the_second_look_finds_it(confirmed):
    photo = np.zeros((1800, 2400, 3), np.uint8)
    face = (1000, 700, 60, 60)
    offset = views_of(photo)
    whole = Scripted(face, offset)
    whole.full = (2400, 1800)  # the whole-photo pass misses it, as BlazeFace would a small face
    far = Scripted(face, offset)
    far.full = (2400, 1800)
    near = Scripted(face if confirmed else (0, 0, 1, 1), offset)
    near.full = (2400, 1800)
    search = PhotoSearch(whole, far=far, near=near)
    found = search.detect(photo)
    assert near.calls >= 1
    if confirmed:
        assert [d.box for d in found] == [face] and search.rejected == 0
    else:
        assert found == [] and search.rejected >= 1


# --------------------------------------------------------------------------- in the pipeline
class Spy:
    def __init__(self) -> None:
        self.photos = 0

    def detect(self, image_bgr):
        self.photos += 1
        return []


def test_only_stills_go_to_the_photo_search(tiny_tflite_model):
    from fer_edge.classifier import EmotionClassifier

    classifier = EmotionClassifier(tiny_tflite_model)
    pipeline = build_pipeline(RunConfig(), classifier)
    assert isinstance(pipeline.photo_search, PhotoSearch)
    spy = Spy()
    pipeline.photo_search = spy
    image = np.zeros((480, 640, 3), np.uint8)
    pipeline.process(Frame(0, image, 0.0, "cam"), {})
    assert spy.photos == 0
    pipeline.process(Frame(1, image, 0.0, "a.jpg", file="a.jpg", still=True), {})
    assert spy.photos == 1

    cfg = RunConfig()
    cfg.detector.photo_search = False
    assert build_pipeline(cfg, classifier).photo_search is None


def test_photo_mode_logs_every_face_of_a_group_photo(tmp_path, astronaut_bgr, tiny_tflite_model, read_jsonl):
    from fer_edge.loop import run
    from fer_edge.notify import Notifier

    photo, truths = group_photo(astronaut_bgr)
    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "group.jpg"), photo)
    counts = {}
    for search in (True, False):
        cfg = RunConfig()
        cfg.source.path = str(folder)
        cfg.classifier.model = str(tiny_tflite_model)
        cfg.tracker.min_confidence = 0.0
        cfg.detector.photo_search = search
        cfg.log.jsonl = str(tmp_path / f"events_{search}.jsonl")
        run(cfg, notifier=Notifier(env={}))
        lines = read_jsonl(cfg.log.jsonl)
        assert lines[0]["type"] == "run" and lines[0]["photo_search"] is search
        counts[search] = sorted((e["track_id"], e["box"][0]) for e in lines if e["type"] == "event")
    assert len(counts[True]) == len(truths) and counts[False] == []
    assert [track for track, _ in counts[True]] == [1, 2, 3]  # left to right


@pytest.mark.parametrize("flag, expected", [(None, True), (False, False), (True, True)])
def test_the_flag_and_the_config_file(tmp_path, flag, expected):
    from click.testing import CliRunner

    from fer_edge.cli import build_config, cli

    assert build_config({"source_path": "p/", "photo_search": flag}).detector.photo_search is expected
    toml = tmp_path / "c.toml"
    toml.write_text("[detector]\nphoto_search = false\n")
    from_file = build_config({"source_path": "p/", "config_path": str(toml), "photo_search": flag})
    assert from_file.detector.photo_search is (False if flag is None else flag)  # the flag wins over the file
    assert "--no-photo-search" in CliRunner().invoke(cli, ["--help"]).output

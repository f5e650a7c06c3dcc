"""draw_overlay: box, label + score, probability bars, track ID, FPS and stage times, scaled to the frame."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from fer_edge.contract import EMOTIONS
from fer_edge.overlay import EMOTION_COLOURS, PANEL_BG, UNCERTAIN_COLOUR, draw_overlay, emotion_colour

from .test_sinks import T0, make_result


def colour_pixels(img: np.ndarray, colour, region=None) -> int:
    if region is not None:
        x, y, w, h = region
        img = img[max(0, y):y + h, max(0, x):x + w]
    return int(np.all(img == np.array(colour, np.uint8), axis=-1).sum())


def test_overlay_on_a_real_face(astronaut_bgr, astronaut_face_box, tmp_path):
    image = astronaut_bgr
    before = image.copy()
    result = make_result(12, T0, [(3, astronaut_face_box, "happy"), (4, (380, 300, 90, 100), "uncertain")],
                         image=image)
    out = draw_overlay(image, result)
    assert out is not image and out.shape == image.shape and out.dtype == np.uint8
    assert (image == before).all(), "drawn on a copy"
    cv2.imwrite(str(tmp_path / "overlay_check.png"), out)

    x, y, w, h = astronaut_face_box
    happy = EMOTION_COLOURS["happy"]
    # the box outline is drawn in the emotion's colour on all four sides ...
    for side in (out[y:y + h, x], out[y:y + h, x + w], out[y, x:x + w], out[y + h, x:x + w]):
        assert np.all(side == np.array(happy, np.uint8), axis=-1).mean() > 0.8
    # ... the face inside the box is left visible ...
    inner = (slice(y + 10, y + h - 10), slice(x + 10, x + w - 10))
    assert (out[inner] == image[inner]).mean() > 0.95
    # ... the label tag (filled with the emotion colour) sits just above or below the box, and the bars
    # panel (dark background) right next to it
    around = (x - 5, y - 40, w + 10, h + 80)
    assert colour_pixels(out, happy, around) > colour_pixels(image, happy, around) + 500
    assert colour_pixels(out, PANEL_BG, (x + w, y, 120, h)) > 1000
    # the uncertain face is grey
    assert colour_pixels(out, UNCERTAIN_COLOUR, (380, 300, 91, 101)) > 200
    # the status band: the face reaches into the top-left corner, so the band is at the bottom-left
    H = image.shape[0]
    assert colour_pixels(out, PANEL_BG, (0, 0, 200, 15)) < 100
    assert colour_pixels(out, PANEL_BG, (0, H - 15, 200, 15)) > 1000


def _band_rows(out: np.ndarray, column: int) -> np.ndarray:
    return np.nonzero(np.all(out[:, column] == np.array(PANEL_BG, np.uint8), axis=-1))[0]


@pytest.mark.parametrize("boxes, corner", [
    ([(300, 200, 120, 140)], "top-left"),  # no face near the top-left: the band stays there
    ([(20, 5, 120, 140)], "bottom-left"),  # a face at the top-left: the band moves to the bottom
    ([(20, 5, 120, 140), (20, 330, 120, 140)], "top-right"),  # both left corners taken
    ([(0, 0, 300, 480), (340, 0, 300, 480)], None),  # every corner taken: one short line, or none at all
])
def test_status_band_never_covers_a_face(boxes, corner):
    rng = np.random.default_rng(0)
    image = rng.integers(60, 200, (480, 640, 3), np.uint8)  # no pixel is PANEL_BG by chance
    faces = [(i + 1, box, "neutral") for i, box in enumerate(boxes)]
    result = make_result(0, T0, faces, image=image)
    result.labels = ()  # no bars panel: what is drawn beside a face here is only the band
    out = draw_overlay(image, result)
    band = np.all(out == np.array(PANEL_BG, np.uint8), axis=-1)
    for x, y, w, h in boxes:
        assert not band[max(0, y):y + h + 1, max(0, x):x + w + 1].any(), "the band covers a face"
    if corner is None:
        return
    rows, cols = np.nonzero(band)
    assert rows.size > 1000
    top = rows.min() == 0
    left = cols.min() == 0
    assert corner == f"{'top' if top else 'bottom'}-{'left' if left else 'right'}"
    assert (rows.max() == 479) != top and (cols.max() == 639) != left


def test_overlay_scales_with_frame_size():
    def band_height(img):
        column = np.all(img[:, 2] == np.array(PANEL_BG, np.uint8), axis=-1)
        return int(np.argmin(column))  # first row below the band

    heights = {}
    for size in ((480, 640), (1080, 1920)):
        image = np.full(size + (3,), 200, np.uint8)
        h, w = size
        box = (w // 3, h // 4, w // 5, h // 3)
        out = draw_overlay(image, make_result(1, T0, [(1, box, "sad")], image=image))
        heights[size] = band_height(out)
        assert colour_pixels(out, EMOTION_COLOURS["sad"]) > 0
    ratio = heights[(1080, 1920)] / heights[(480, 640)]
    assert 1.8 < ratio < 2.8, f"text grows with the frame ({heights})"


def test_overlay_inplace_and_awkward_boxes():
    image = np.zeros((240, 320, 3), np.uint8)
    faces = [(1, (-20, -10, 80, 80), "angry"), (2, (280, 200, 100, 100), "fear"), (3, (0, 0, 320, 240), "neutral")]
    result = make_result(0, T0, faces, image=image)
    out = draw_overlay(image, result, inplace=True)
    assert out is image and image.any()


def test_overlay_without_faces_or_labels():
    image = np.zeros((120, 160, 3), np.uint8)
    out = draw_overlay(image, make_result(0, T0, (), image=image))
    assert out.any() and not image.any()
    no_labels = make_result(0, T0, [(1, (10, 10, 50, 50), "happy")], image=image)
    no_labels.labels = ()
    assert draw_overlay(image, no_labels).any()


@pytest.mark.parametrize("label", EMOTIONS + ("contempt", "uncertain", "something-else"))
def test_every_label_has_a_colour(label):
    colour = emotion_colour(label)
    assert len(colour) == 3 and all(0 <= c <= 255 for c in colour)
    if label != "uncertain":
        assert colour != UNCERTAIN_COLOUR
    assert len({emotion_colour(e) for e in EMOTIONS}) == len(EMOTIONS)

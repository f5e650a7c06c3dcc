"""Draw results onto a frame: box, label and score, probability bars, track ID, FPS and stage times.

`draw_overlay(image_bgr, result)` returns a new image (the input is left as it was: other sinks and
the loop may still use the frame) unless `inplace=True`, which draws straight onto `image_bgr` and
returns it, saving a copy for a caller that owns the image.

Sizes scale with the frame (the shorter side over 480 px), so the text is as readable on a 640x480
preview as on a 1920x1080 recording. Each emotion has its own colour; "uncertain" is grey.

The status band (frames/s, faces, stage times) never covers a face: it goes to the first corner of
top-left, bottom-left, top-right, bottom-right whose band touches no face box; where every corner
would, it shrinks to one short line and tries again, and where even that would, it is left out.
A face's label tag and bars keep clear of the band.
"""
from __future__ import annotations

import cv2
import numpy as np

from .records import FaceResult, FrameResult

BGR = tuple[int, int, int]

#: one colour per emotion (BGR); any other label gets a stable colour from PALETTE
EMOTION_COLOURS: dict[str, BGR] = {
    "angry": (40, 40, 230),  # red
    "disgust": (40, 150, 40),  # green
    "fear": (180, 60, 170),  # purple
    "happy": (0, 210, 255),  # yellow
    "sad": (200, 110, 30),  # blue
    "surprise": (0, 140, 255),  # orange
    "neutral": (210, 200, 120),  # pale teal
    "contempt": (60, 100, 150),  # brown
}
UNCERTAIN_COLOUR: BGR = (150, 150, 150)
PALETTE: tuple[BGR, ...] = ((255, 120, 0), (120, 255, 120), (255, 0, 255), (0, 255, 255), (128, 0, 255))
PANEL_BG: BGR = (32, 32, 32)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def emotion_colour(label: str) -> BGR:
    if label == "uncertain":
        return UNCERTAIN_COLOUR
    colour = EMOTION_COLOURS.get(label)
    if colour is None:
        colour = PALETTE[sum(map(ord, label)) % len(PALETTE)]
    return colour


def _text_colour(bg: BGR) -> BGR:
    b, g, r = bg
    return (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 140 else (255, 255, 255)


class _Style:
    """Sizes for one frame size (computed once per call; a handful of multiplications)."""

    def __init__(self, height: int, width: int, labels: tuple[str, ...]):
        s = max(0.5, min(height, width) / 480.0)
        self.s = s
        self.font = 0.5 * s
        self.small = 0.4 * s
        self.thick = max(1, round(s))
        self.box = max(2, round(2 * s))
        self.pad = max(2, round(3 * s))
        self.row = max(6, round(11 * s))
        self.bar = max(20, round(60 * s))
        self.name_w = max((cv2.getTextSize(name[:3], FONT, self.small, self.thick)[0][0] for name in labels),
                          default=0) + self.pad


Rect = tuple[int, int, int, int]  # x0, y0, x1, y1


def _overlaps(a: Rect, b: Rect | None) -> bool:
    return b is not None and a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _label_tag(img: np.ndarray, face: FaceResult, st: _Style, colour: BGR, band: Rect | None) -> None:
    x, y, w, h = face.box
    text = f"#{face.track_id} {face.label} {face.score:.2f}"
    (tw, th), base = cv2.getTextSize(text, FONT, st.font, st.thick)
    tag_h = th + base + 2 * st.pad
    tag_w = tw + 2 * st.pad
    left = min(max(0, x), max(0, img.shape[1] - tag_w))
    if y - tag_h >= 0 and not _overlaps((left, y - tag_h, left + tag_w, y), band):
        top = y - tag_h  # above the box
    elif y + h + tag_h <= img.shape[0] and not _overlaps((left, y + h, left + tag_w, y + h + tag_h), band):
        top = y + h  # below it, when the status band or the frame's edge is in the way
    else:
        top = max(0, y)  # inside it, at the top edge
    cv2.rectangle(img, (left, top), (left + tw + 2 * st.pad, top + tag_h), colour, cv2.FILLED)
    cv2.putText(img, text, (left + st.pad, top + st.pad + th), FONT, st.font, _text_colour(colour), st.thick,
                cv2.LINE_AA)


def _prob_bars(img: np.ndarray, face: FaceResult, labels: tuple[str, ...], st: _Style, band: Rect | None) -> None:
    x, y, w, h = face.box
    H, W = img.shape[:2]
    n = min(len(labels), len(face.probs))
    panel_w = st.name_w + st.bar + 2 * st.pad
    panel_h = n * st.row + 2 * st.pad
    gap = st.pad
    if x + w + gap + panel_w <= W:
        left = x + w + gap  # right of the box
    elif x - gap - panel_w >= 0:
        left = x - gap - panel_w  # left of the box
    else:
        left = max(0, min(W - panel_w, x + w - panel_w))  # inside the box's right edge
    top = max(0, min(H - panel_h, y))
    if _overlaps((left, top, left + panel_w, top + panel_h), band):  # beside the band, not under it
        top = band[3] if band[1] == 0 and band[3] + panel_h <= H else max(0, band[1] - panel_h)
    cv2.rectangle(img, (left, top), (left + panel_w, top + panel_h), PANEL_BG, cv2.FILLED)
    probs = face.probs.tolist()
    for i in range(n):
        name, p = labels[i], min(max(float(probs[i]), 0.0), 1.0)
        row_top = top + st.pad + i * st.row
        text_y = row_top + st.row - max(1, st.row // 5)
        cv2.putText(img, name[:3], (left + st.pad, text_y), FONT, st.small, (235, 235, 235), st.thick, cv2.LINE_AA)
        bar_left = left + st.pad + st.name_w
        bar_top, bar_bottom = row_top + st.row // 5, row_top + st.row - st.row // 5
        cv2.rectangle(img, (bar_left, bar_top), (bar_left + st.bar, bar_bottom), (70, 70, 70), cv2.FILLED)
        length = int(round(p * st.bar))
        if length > 0:
            cv2.rectangle(img, (bar_left, bar_top), (bar_left + length, bar_bottom), emotion_colour(name), cv2.FILLED)


def _status_lines(result: FrameResult, st: _Style, width: int, short: bool) -> list[str]:
    items = [f"{result.fps:.1f} fps"] if result.fps > 0 else []  # a still image has no frame rate
    items.append(f"{len(result.faces)} face{'s' if len(result.faces) != 1 else ''}")
    if not short:
        items += [f"{stage} {ms:.1f} ms" for stage, ms in result.stage_ms.items()]
    lines: list[str] = []
    for item in items:  # wrap so that the band never runs off a narrow frame
        candidate = f"{lines[-1]}  {item}" if lines else item
        if lines and cv2.getTextSize(candidate, FONT, st.font, st.thick)[0][0] + 2 * st.pad <= width:
            lines[-1] = candidate
        else:
            lines.append(item)
    return lines


def _status(img: np.ndarray, result: FrameResult, st: _Style) -> Rect | None:
    """The band in the first corner where it covers no face (see the module doc); returns its rectangle."""
    H, W = img.shape[:2]
    (_, th), base = cv2.getTextSize("Ag", FONT, st.font, st.thick)
    line_h = th + base + st.pad
    boxes = [(x, y, x + w, y + h) for x, y, w, h in (face.box for face in result.faces)]
    for short in (False, True):
        lines = _status_lines(result, st, W, short)
        width = min(W, max(cv2.getTextSize(line, FONT, st.font, st.thick)[0][0] for line in lines) + 2 * st.pad)
        height = min(H, len(lines) * line_h + st.pad)
        for left, top in ((0, 0), (0, H - height), (W - width, 0), (W - width, H - height)):
            rect = (left, top, left + width, top + height)
            if any(_overlaps(rect, box) for box in boxes):
                continue
            cv2.rectangle(img, (left, top), (rect[2], rect[3]), PANEL_BG, cv2.FILLED)
            for i, line in enumerate(lines):
                cv2.putText(img, line, (left + st.pad, top + (i + 1) * line_h - base // 2), FONT, st.font,
                            (255, 255, 255), st.thick, cv2.LINE_AA)
            return rect
    return None  # faces in every corner: no band rather than a covered face


def draw_overlay(image_bgr: np.ndarray, result: FrameResult, inplace: bool = False) -> np.ndarray:
    """Draw every face of `result` and the FPS / stage-time band; returns the drawn image."""
    img = image_bgr if inplace else image_bgr.copy()
    labels = tuple(result.labels)
    st = _Style(img.shape[0], img.shape[1], labels)
    band = _status(img, result, st)
    for face in result.faces:
        colour = emotion_colour(face.label)
        x, y, w, h = face.box
        cv2.rectangle(img, (x, y), (x + w, y + h), colour, st.box)
        if labels:
            _prob_bars(img, face, labels, st, band)
        _label_tag(img, face, st, colour, band)
    return img

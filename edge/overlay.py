"""Draw results onto a frame: box, label and score, probability bars, track ID, FPS and stage times.

`draw_overlay(image_bgr, result)` returns a new image (the input is left as it was: other sinks and
the loop may still use the frame) unless `inplace=True`, which draws straight onto `image_bgr` and
returns it, saving a copy for a caller that owns the image.

Sizes scale with the frame (the shorter side over 480 px), so the text is as readable on a 640x480
preview as on a 1920x1080 recording. Each emotion has its own colour; "uncertain" is grey.
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


def _label_tag(img: np.ndarray, face: FaceResult, st: _Style, colour: BGR, top_limit: int) -> None:
    x, y, w, h = face.box
    text = f"#{face.track_id} {face.label} {face.score:.2f}"
    (tw, th), base = cv2.getTextSize(text, FONT, st.font, st.thick)
    tag_h = th + base + 2 * st.pad
    if y - tag_h >= top_limit:
        top = y - tag_h  # above the box
    elif y + h + tag_h <= img.shape[0]:
        top = y + h  # below it, when the status band or the frame's edge is in the way
    else:
        top = max(0, y)  # inside it, at the top edge
    left = min(max(0, x), max(0, img.shape[1] - tw - 2 * st.pad))
    cv2.rectangle(img, (left, top), (left + tw + 2 * st.pad, top + tag_h), colour, cv2.FILLED)
    cv2.putText(img, text, (left + st.pad, top + st.pad + th), FONT, st.font, _text_colour(colour), st.thick,
                cv2.LINE_AA)


def _prob_bars(img: np.ndarray, face: FaceResult, labels: tuple[str, ...], st: _Style, top_limit: int) -> None:
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
    top = max(0, min(H - panel_h, max(y, top_limit)))
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


def _status(img: np.ndarray, result: FrameResult, st: _Style) -> int:
    """The band at the top-left; returns its bottom edge."""
    items = [f"{result.fps:.1f} fps"] if result.fps > 0 else []  # a still image has no frame rate
    items.append(f"{len(result.faces)} face{'s' if len(result.faces) != 1 else ''}")
    items += [f"{stage} {ms:.1f} ms" for stage, ms in result.stage_ms.items()]
    W = img.shape[1]
    lines: list[str] = []
    for item in items:  # wrap so that the band never runs off a narrow frame
        candidate = f"{lines[-1]}  {item}" if lines else item
        if lines and cv2.getTextSize(candidate, FONT, st.font, st.thick)[0][0] + 2 * st.pad <= W:
            lines[-1] = candidate
        else:
            lines.append(item)
    (_, th), base = cv2.getTextSize("Ag", FONT, st.font, st.thick)
    line_h = th + base + st.pad
    width = max(cv2.getTextSize(line, FONT, st.font, st.thick)[0][0] for line in lines) + 2 * st.pad
    bottom = len(lines) * line_h + st.pad
    cv2.rectangle(img, (0, 0), (min(W, width), bottom), PANEL_BG, cv2.FILLED)
    for i, line in enumerate(lines):
        cv2.putText(img, line, (st.pad, (i + 1) * line_h - base // 2), FONT, st.font, (255, 255, 255), st.thick,
                    cv2.LINE_AA)
    return bottom


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

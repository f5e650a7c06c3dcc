"""Per-track smoothing of emotion probabilities, and the "uncertain" label.

A classifier's frame-by-frame output flickers (blinks, motion blur, a half-turned head). Each
track keeps its own state:

* ``ema``: s = alpha * p + (1 - alpha) * s_prev, started at the first frame's p. alpha = 1 is no
  smoothing; 0.4 (default) settles within ~5 frames.
* ``window``: the mean of the last `window` frames' probabilities (a ring buffer per track).
* ``none``: this frame's probabilities as they are.

On top of the smoothing, *hysteresis* keeps the label steady: a track shows its current label until
another one takes over, which it does when its smoothed probability leads the shown label's by at
least `switch_margin`, or when it has been the argmax for `switch_frames` frames in a row
(`switch_margin` = 0 or `switch_frames` <= 1 switch at once: no hysteresis). A track's first label
is its first argmax. The label's score is the smoothed probability of the label shown.

The label is ``"uncertain"`` when that score is below `min_confidence` (0 = never); with the shipped
calibrated models the default (see TrackerConfig) is the score below which a label is more often
wrong than right. With hysteresis on, a score hovering at the threshold does not flicker either: the
"uncertain" flag turns over when the score is past `min_confidence` by `switch_margin`, or has been on
the other side of it for `switch_frames` frames in a row. State is dropped when the tracker expires a
track.
"""
from __future__ import annotations

import numpy as np

from .errors import ConfigError

UNCERTAIN = "uncertain"
MODES = ("ema", "window", "none")


class _Window:
    """Ring buffer of the last n probability vectors with a running sum."""

    __slots__ = ("buf", "sum", "count", "pos")

    def __init__(self, n: int, k: int) -> None:
        self.buf = np.zeros((n, k), np.float64)
        self.sum = np.zeros(k, np.float64)
        self.count = 0
        self.pos = 0

    def push(self, p: np.ndarray) -> np.ndarray:
        n = len(self.buf)
        if self.count == n:
            self.sum -= self.buf[self.pos]
        else:
            self.count += 1
        self.buf[self.pos] = p
        self.sum += p
        self.pos = (self.pos + 1) % n
        return (self.sum / self.count).astype(np.float32)


class Smoother:
    def __init__(
        self,
        labels: tuple[str, ...] | list[str],
        mode: str = "ema",
        alpha: float = 0.4,
        window: int = 5,
        min_confidence: float = 0.0,
        switch_margin: float = 0.0,
        switch_frames: int = 0,
    ) -> None:
        mode = str(mode).lower()
        if mode not in MODES:
            raise ConfigError(f"unknown smoothing {mode!r} (known: {', '.join(MODES)})")
        if mode == "ema" and not 0 < alpha <= 1:
            raise ConfigError(f"ema_alpha must be in (0, 1], got {alpha}")
        if mode == "window" and int(window) < 1:
            raise ConfigError(f"window must be >= 1, got {window}")
        if not 0 <= min_confidence <= 1:
            raise ConfigError(f"min_confidence must be in [0, 1], got {min_confidence}")
        if not 0 <= switch_margin <= 1:
            raise ConfigError(f"switch_margin must be in [0, 1], got {switch_margin}")
        if int(switch_frames) < 0:
            raise ConfigError(f"switch_frames must be >= 0, got {switch_frames}")
        self.labels = tuple(labels)
        self.mode = mode
        self.alpha = float(alpha)
        self.window = int(window)
        self.min_confidence = float(min_confidence)
        self.switch_margin = float(switch_margin)
        self.switch_frames = int(switch_frames)
        self.hysteresis = self.switch_margin > 0 and self.switch_frames > 1
        self._state: dict[int, np.ndarray | _Window] = {}
        #: track -> [index of the label shown, index of the challenger, frames it has led in a row]
        self._held: dict[int, list[int]] = {}
        #: track -> [shown as uncertain, frames in a row the score has been on the other side]
        self._unsure: dict[int, list] = {}

    @classmethod
    def from_config(cls, labels, cfg) -> "Smoother":
        """From a TrackerConfig (smoothing, ema_alpha, window, min_confidence, switch_margin, switch_frames)."""
        return cls(labels, cfg.smoothing, cfg.ema_alpha, cfg.window, cfg.min_confidence,
                   getattr(cfg, "switch_margin", 0.0), getattr(cfg, "switch_frames", 0))

    def smooth(self, track_id: int, probs: np.ndarray) -> np.ndarray:
        """Fold this frame's probabilities into the track's state; return the smoothed vector."""
        if self.mode == "none":
            return probs
        state = self._state.get(track_id)
        if self.mode == "ema":
            if state is None:
                smoothed = np.array(probs, np.float32)
            else:
                smoothed = state * (1.0 - self.alpha) + probs * self.alpha
            self._state[track_id] = smoothed
            return smoothed
        if state is None:
            state = self._state[track_id] = _Window(self.window, len(probs))
        return state.push(probs)

    def label(self, probs: np.ndarray, index: int | None = None) -> tuple[str, float]:
        """(label, its probability); "uncertain" below min_confidence. `index`: the label to show
        (the held one); default the argmax."""
        i = int(np.argmax(probs)) if index is None else int(index)
        score = float(probs[i])
        if score < self.min_confidence:
            return UNCERTAIN, score
        return self.labels[i], score

    def hold(self, track_id: int, probs: np.ndarray) -> int:
        """The index of the label the track shows this frame (hysteresis, see the module doc)."""
        top = int(np.argmax(probs))
        if not self.hysteresis:
            return top
        held = self._held.get(track_id)
        if held is None:
            self._held[track_id] = [top, top, 0]
            return top
        shown = held[0]
        if top == shown:
            held[1], held[2] = shown, 0
            return shown
        held[2] = held[2] + 1 if held[1] == top else 1
        held[1] = top
        if probs[top] - probs[shown] >= self.switch_margin or held[2] >= self.switch_frames:
            held[0], held[2] = top, 0
            return top
        return shown

    def uncertain(self, track_id: int, score: float) -> bool:
        """Whether the track's label is shown as "uncertain" this frame (hysteresis, see the module doc)."""
        below = score < self.min_confidence
        if not self.hysteresis or self.min_confidence <= 0:
            return below
        state = self._unsure.get(track_id)
        if state is None:
            self._unsure[track_id] = [below, 0]
            return below
        if below == state[0]:
            state[1] = 0
            return below
        state[1] += 1
        if abs(score - self.min_confidence) >= self.switch_margin or state[1] >= self.switch_frames:
            state[0], state[1] = below, 0
        return state[0]

    def update(self, track_id: int, probs: np.ndarray) -> tuple[np.ndarray, str, float]:
        smoothed = self.smooth(track_id, probs)
        i = self.hold(track_id, smoothed)
        score = float(smoothed[i])
        return smoothed, UNCERTAIN if self.uncertain(track_id, score) else self.labels[i], score

    def forget(self, track_ids) -> None:
        for track_id in track_ids:
            self._state.pop(track_id, None)
            self._held.pop(track_id, None)
            self._unsure.pop(track_id, None)

    def __len__(self) -> int:
        return len(self._state.keys() | self._held.keys() | self._unsure.keys())

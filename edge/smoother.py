"""Per-track smoothing of emotion probabilities, and the "uncertain" label.

A classifier's frame-by-frame output flickers (blinks, motion blur, a half-turned head). Each
track keeps its own state:

* ``ema``: s = alpha * p + (1 - alpha) * s_prev, started at the first frame's p. alpha = 1 is no
  smoothing; 0.4 (default) settles within ~5 frames.
* ``window``: the mean of the last `window` frames' probabilities (a ring buffer per track).
* ``none``: this frame's probabilities as they are.

The label is the argmax of the smoothed probabilities, or ``"uncertain"`` when that probability is
below `min_confidence` (0 = never). State is dropped when the tracker expires a track.
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
        self.labels = tuple(labels)
        self.mode = mode
        self.alpha = float(alpha)
        self.window = int(window)
        self.min_confidence = float(min_confidence)
        self._state: dict[int, np.ndarray | _Window] = {}

    @classmethod
    def from_config(cls, labels, cfg) -> "Smoother":
        """From a TrackerConfig (smoothing, ema_alpha, window, min_confidence)."""
        return cls(labels, cfg.smoothing, cfg.ema_alpha, cfg.window, cfg.min_confidence)

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

    def label(self, probs: np.ndarray) -> tuple[str, float]:
        """(label, its probability); "uncertain" below min_confidence."""
        i = int(np.argmax(probs))
        score = float(probs[i])
        if score < self.min_confidence:
            return UNCERTAIN, score
        return self.labels[i], score

    def update(self, track_id: int, probs: np.ndarray) -> tuple[np.ndarray, str, float]:
        smoothed = self.smooth(track_id, probs)
        label, score = self.label(smoothed)
        return smoothed, label, score

    def forget(self, track_ids) -> None:
        for track_id in track_ids:
            self._state.pop(track_id, None)

    def __len__(self) -> int:
        return len(self._state)

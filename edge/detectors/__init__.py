"""Face detectors, chosen by name from the config (`[detector] kind = "haar"`, `--detector`).

Each detector lives in its own module and is imported only when it is chosen, so an unused one
costs nothing at start-up. To add one: subclass `base.Detector` in a new module, give it a
`from_config(cfg: DetectorConfig)` classmethod and add a line to DETECTORS.
"""
from __future__ import annotations

import importlib

from ..config import DetectorConfig
from ..errors import ConfigError
from .base import Detector

#: name -> "module:Class" inside this package
DETECTORS: dict[str, str] = {
    "haar": "haar:HaarDetector",
    "blazeface": "blazeface:BlazeFaceDetector",
}


def create_detector(cfg: DetectorConfig) -> Detector:
    """The detector `cfg.kind` names, built from the rest of `cfg`."""
    kind = str(cfg.kind).lower()
    if kind not in DETECTORS:
        raise ConfigError(f"unknown detector {cfg.kind!r} (known: {', '.join(DETECTORS)})")
    module_name, class_name = DETECTORS[kind].split(":")
    module = importlib.import_module(f"{__name__}.{module_name}")
    return getattr(module, class_name).from_config(cfg)


__all__ = ["DETECTORS", "Detector", "create_detector"]

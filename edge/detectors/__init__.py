"""Face detectors, chosen by name from the config (`[detector] kind = "blazeface"`, `--detector`).

Each detector lives in its own module and is imported only when it is chosen, so an unused one
costs nothing at start-up. To add one: subclass `base.Detector` in a new module, give it a
`from_config(cfg: DetectorConfig)` classmethod and add a line to DETECTORS.

BlazeFace (short range) is the default; when its model cannot be loaded (a damaged install, a
`--detector-model` that is not a BlazeFace file) the runtime falls back to Haar and says why in a
warning -- never silently.
"""
from __future__ import annotations

import dataclasses
import importlib
import logging

from ..config import DetectorConfig
from ..errors import ConfigError, ContractError, ModelError
from .base import Detector, suppress_duplicates

log = logging.getLogger(__name__)

#: name -> "module:Class" inside this package
DETECTORS: dict[str, str] = {
    "blazeface": "blazeface:BlazeFaceDetector",
    "blazeface-full": "blazeface:BlazeFaceDetector",
    "haar": "haar:HaarDetector",
    "whole-image": "whole_image:WholeImageDetector",
}
#: what a detector that cannot be loaded falls back to
FALLBACK = "haar"


def _build(cfg: DetectorConfig) -> Detector:
    module_name, class_name = DETECTORS[cfg.kind].split(":")
    module = importlib.import_module(f"{__name__}.{module_name}")
    return getattr(module, class_name).from_config(cfg)


def create_detector(cfg: DetectorConfig, fallback: bool = True) -> Detector:
    """The detector `cfg.kind` names, built from the rest of `cfg`.

    A model-based detector whose file cannot be loaded gives way to Haar with a logged reason
    (`fallback=False` raises instead: tests, and tools that must run the detector they name).
    """
    kind = str(cfg.kind).lower()
    if kind not in DETECTORS:
        raise ConfigError(f"unknown detector {cfg.kind!r} (known: {', '.join(DETECTORS)})")
    cfg = dataclasses.replace(cfg, kind=kind)
    try:
        return _build(cfg)
    except (ModelError, ContractError) as exc:
        if not fallback or kind == FALLBACK:
            raise
        log.warning("face detector %s cannot be used (%s): falling back to %s", kind, exc, FALLBACK)
        return _build(dataclasses.replace(cfg, kind=FALLBACK))


__all__ = ["DETECTORS", "Detector", "create_detector", "suppress_duplicates"]

"""Shipped models (data only): `.tflite` files and their model cards (JSON).

`face_detection/` holds MediaPipe's BlazeFace detectors (Apache-2.0; see its PROVENANCE.md).
"""
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL = MODELS_DIR / "fer_default_int8.tflite"
FACE_DETECTION_DIR = MODELS_DIR / "face_detection"
#: detector kind -> the shipped BlazeFace file it runs
FACE_DETECTORS = {
    "blazeface": FACE_DETECTION_DIR / "face_detection_short_range.tflite",
    "blazeface-full": FACE_DETECTION_DIR / "face_detection_full_range_sparse.tflite",
}

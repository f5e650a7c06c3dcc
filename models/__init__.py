"""Shipped models (data only): `.tflite` files and their model cards (JSON)."""
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL = MODELS_DIR / "fer_default_int8.tflite"

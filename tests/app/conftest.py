"""The app's tests use the runtime tests' tiny int8 model (built once per session, cached between runs).

The fixture lives in tests/edge/conftest.py with its builder; importing it here makes it visible to
tests/app/ without a second copy.
"""
from tests.edge.conftest import tiny_tflite_model  # noqa: F401

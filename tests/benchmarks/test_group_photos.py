"""benchmarks/group_photos.py: one pass against the photo search, on the same photos in one run."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
spec = importlib.util.spec_from_file_location("group_photos", REPO / "benchmarks" / "group_photos.py")
B = importlib.util.module_from_spec(spec)
sys.modules["group_photos"] = B
spec.loader.exec_module(B)


def test_a_box_finds_a_face_near_its_centre_at_about_its_size():
    truths = [(100, 100, 50, "real"), (400, 100, 50, "fer2013")]
    found, false = B.match([(76, 76, 50, 50), (300, 300, 50, 50), (390, 90, 200, 200)], truths)
    assert found == [True, False] and false == 2  # the second face's box is 4x too large


def test_backgrounds_hold_no_face():
    from skimage import data

    import cv2
    import numpy as np

    camera = cv2.cvtColor(data.camera(), cv2.COLOR_GRAY2BGR)
    bgs = B.backgrounds()
    assert bgs and not any(b.shape == camera.shape and np.array_equal(b, camera) for b in bgs)


@pytest.mark.shared_data
def test_the_photo_search_finds_more_of_the_same_photos_than_one_pass(shared_npz, tmp_path):
    out, png = tmp_path / "g.json", tmp_path / "g.png"
    report = B.main(["--data", str(shared_npz), "--sizes", "1920x1080,2400x1800", "--photos", "2", "--faces", "6",
                     "--json", str(out), "--plot", str(png)])
    assert json.loads(out.read_text()) == report and png.stat().st_size > 10_000
    rows = report["methods"]
    (faces,) = {r["faces"] for r in rows.values()}  # every way saw the same faces
    assert 20 <= faces <= 24  # 6 per photo, less any that found no free place
    assert rows["photo-search"]["found"] > rows["one-pass"]["found"]
    assert report["photo_search"]["windows"] > 0

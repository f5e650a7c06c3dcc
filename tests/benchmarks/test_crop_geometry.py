"""benchmarks/crop_geometry.py: the map from FER2013's framing to the runtime's crop, read back as scale,
roll and shift (identity for a perfect crop)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("crop_geometry", REPO / "benchmarks" / "crop_geometry.py")
G = importlib.util.module_from_spec(spec)
sys.modules["crop_geometry"] = G
spec.loader.exec_module(G)


def test_a_perfect_crop_is_the_identity_and_offsets_read_back():
    cv2 = pytest.importorskip("cv2")
    paste = G.fer_to_frame((300.0, 200.0), 144.0, 12.0)
    # the paste's own centre is where pipeline_accuracy.paste puts the face's centre
    assert np.allclose(paste @ [24, 24, 1], [300, 200, 1])
    perfect = np.linalg.inv(paste)[:2]
    assert np.allclose(G.crop_offsets(perfect, paste), (1.0, 0.0, 0.0, 0.0), atol=1e-9)
    # a crop zoomed in 1.25x about the centre, rolled 8 degrees, and moved 2 px right
    extra = np.vstack([cv2.getRotationMatrix2D((24.0, 24.0), 8.0, 1.25), [0, 0, 1]])
    extra[0, 2] += 2.0
    scale, roll, dx, dy = G.crop_offsets((extra @ np.linalg.inv(paste))[:2], paste)
    assert scale == pytest.approx(1.25) and abs(roll) == pytest.approx(8.0) and (dx, dy) == pytest.approx((2.0, 0.0))


@pytest.mark.shared_data
def test_on_real_frames(shared_npz, tmp_path):
    pytest.importorskip("skimage")
    fast = REPO / "models" / "fer_fast_int8.tflite"
    report = G.main(["--data", str(shared_npz), "--faces", "20", "--tilts", "0", "--frames-dir", str(tmp_path),
                     "--models", str(fast)])
    assert report["found"] >= 8
    lo, *_, hi = report["scale"]
    assert 0.5 < lo <= report["scale"][2] <= hi < 2.0  # the crops frame faces about as FER2013 does
    top1 = report["top1_warped"]["fer_fast_int8.tflite"]
    card = json.loads((REPO / "models" / "fer_fast.json").read_text())["metrics"]["int8"]["PublicTest"]["top1"]
    assert abs(top1["as FER2013 frames it"] - card) < 0.01  # unwarped: the card's own figure
    warped = [v for k, v in top1.items() if k != "as FER2013 frames it"]
    assert len(warped) == 4 and min(warped) < card  # some of the spread costs the model accuracy

"""benchmarks/flip_average.py: plain against mirror-averaged classification, same faces, same run."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("flip_average", REPO / "benchmarks" / "flip_average.py")
B = importlib.util.module_from_spec(spec)
sys.modules["flip_average"] = B
spec.loader.exec_module(B)


@pytest.mark.shared_data
def test_plain_is_the_cards_figure_and_averaging_is_measured_beside_it(shared_npz, tmp_path):
    from fer_edge.contract import ModelCard

    out = tmp_path / "flip.json"
    report = B.main(["--models", "fer_fast", "--data", str(shared_npz), "--faces", "4",
                     "--frames-dir", str(tmp_path / "frames"), "--json", str(out)])
    assert json.loads(out.read_text()) == report
    row = report["models"]["fer_fast"]
    card = ModelCard.load(REPO / "models" / "fer_fast.json")
    # the plain classifier is the runtime's: the card's int8 PublicTest top-1 to the hundredth
    assert row["plain"]["crops"]["top1_pct"] == pytest.approx(card.metrics["int8"]["PublicTest"]["top1"], abs=0.01)
    assert row["mirror_averaged"]["crops"]["top1_pct"] != row["plain"]["crops"]["top1_pct"]
    for mode in ("plain", "mirror_averaged"):
        assert row[mode]["pipeline"]["frames"] == 12  # 4 faces x 3 tilts, the same frames for both
        assert 0 <= row[mode]["crops"]["at_or_above_min_confidence_pct"] <= 100
    from fer_edge.config import TrackerConfig

    assert report["faces"] == 3589 and report["min_confidence"] == TrackerConfig().min_confidence

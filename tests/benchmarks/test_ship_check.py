"""benchmarks/ship_check.py: the shipping rule (better on PublicTest crops, not worse in the whole pipeline),
measured through the runtime's classifier on the same faces and frames."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("ship_check", REPO / "benchmarks" / "ship_check.py")
S = importlib.util.module_from_spec(spec)
sys.modules["ship_check"] = S
spec.loader.exec_module(S)


def figures(crop: float, pipe: float, majority: float | None = None) -> dict:
    crops = {"top1": crop, **({"ferplus_majority": {"top1": majority, "faces": 3199}} if majority is not None else {})}
    return {"crops": crops, "pipeline": {"end_to_end_pct": pipe}}


def test_the_rule():
    assert S.verdict(figures(69.0, 40.0), figures(68.2, 40.0), 0.0)["ship"]
    crops = S.verdict(figures(68.2, 45.0), figures(68.2, 40.0), 0.0)
    assert not crops["ship"] and "not above the shipped 68.20 %" in crops["reasons"][0]
    pipe = S.verdict(figures(70.0, 39.5), figures(68.2, 40.0), 0.0)
    assert not pipe["ship"] and "whole pipeline" in pipe["reasons"][0] and pipe["pipeline_pp"] == -0.5
    assert S.verdict(figures(70.0, 39.5), figures(68.2, 40.0), 1.0)["ship"]
    # FER+ models are judged on Microsoft's majority protocol, not the plurality top-1
    fer_plus = S.verdict(figures(85.0, 40.0, majority=86.0), figures(84.0, 40.0, majority=86.65), 0.0)
    assert not fer_plus["ship"] and fer_plus["crop_metric"] == "ferplus_majority"


@pytest.mark.slow
@pytest.mark.shared_data
def test_the_fast_tier_does_not_replace_the_default(shared_npz, tmp_path, capsys):
    pytest.importorskip("skimage")
    out = tmp_path / "ship.json"
    rc = S.main([str(REPO / "models" / "fer_fast_int8.tflite"), "--shipped", str(REPO / "models" / "fer_default_int8.tflite"),
                 "--data", str(shared_npz), "--faces", "8", "--tilts", "0", "--frames-dir", str(tmp_path / "frames"),
                 "--json", str(out), "--check"])
    assert rc == 1 and "KEEP the shipped model" in capsys.readouterr().out
    report = json.loads(out.read_text())
    for name, card in (("candidate", "fer_fast"), ("shipped", "fer_default")):
        measured = report[name]["crops"]
        recorded = json.loads((REPO / "models" / f"{card}.json").read_text())["metrics"]["int8"]["PublicTest"]["top1"]
        assert measured["faces"] == 3589 and abs(measured["top1"] - recorded) < 0.01  # the card's own figure
        assert report[name]["pipeline"]["frames"] == 8
    assert report["verdict"]["crops_pp"] < 0
    ferplus = S.main([str(REPO / "models" / "fer_ferplus_int8.tflite"), "--data", str(shared_npz),
                      "--faces", "8", "--tilts", "0", "--frames-dir", str(tmp_path / "frames")])
    assert ferplus == 2 and "different label sets" in capsys.readouterr().err


def test_the_paired_comparison():
    """Frames where both are right or both wrong do not move the difference; its standard error comes from the
    frames where exactly one model is right."""
    c = [True, True, False, False, True, False, True, True]
    s = [True, False, True, False, True, False, False, True]
    p = S.paired(c, s)
    assert (p["frames"], p["only_candidate_right"], p["only_shipped_right"]) == (8, 2, 1)
    assert p["difference_pp"] == 12.5
    # var = (3/8 - (1/8)^2) / 8  ->  se = sqrt(0.359375 / 8) = 0.2119
    assert p["standard_error_pp"] == 21.19
    same = S.paired(c, c)
    assert same["difference_pp"] == 0 and same["standard_error_pp"] == 0
    with pytest.raises(ValueError, match="same frames"):
        S.paired(c, s[:-1])

"""benchmarks/pipeline_crops.py: the crops recorded from one pipeline run give each .tflite model the same
end-to-end figure as running the whole pipeline with it (what ship_check measures)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.shared_data
def test_recorded_crops_give_the_pipeline_figure(shared_npz, tmp_path):
    pytest.importorskip("skimage")
    C, S = load("pipeline_crops"), load("ship_check")
    frames = tmp_path / "frames"
    out = tmp_path / "crops.json"
    models = [REPO / "models" / "fer_fast_int8.tflite", REPO / "models" / "fer_default_int8.tflite"]
    report = C.main([*map(str, models), "--data", str(shared_npz), "--faces", "30", "--tilts", "0,15",
                     "--frames-dir", str(frames), "--json", str(out)])
    assert json.loads(out.read_text())["n_frames"] == 60 and report["found"] > 20
    folder = frames / "fer_PublicTest_30_0_+0_+15"
    assert (folder / "pipeline_crops.npz").is_file()
    truths = S._pipeline_accuracy().make_fer_frames(folder, shared_npz, "PublicTest", 30, [0.0, 15.0], 0)
    for model, row in zip(models, report["models"]):
        whole, _ = S.pipeline_figures(model, folder, truths)
        assert row["end_to_end_pct"] == whole["end_to_end_pct"], model.name
        assert row["on_found_pct"] == whole["on_found_pct"], model.name
        card = json.loads(model.with_name(model.name.replace("_int8.tflite", ".json")).read_text())
        assert abs(row["crops_pct"] - card["metrics"]["int8"]["PublicTest"]["top1"]) < 0.01

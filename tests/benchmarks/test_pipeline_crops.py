"""benchmarks/pipeline_crops.py: the crops recorded from one pipeline run give each .tflite model the same
end-to-end figure as running the whole pipeline with it, frame by frame (ship_check classifies those crops)."""
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
    from fer_edge.classifier import EmotionClassifier

    C, S = load("pipeline_crops"), load("ship_check")
    frames = tmp_path / "frames"
    out = tmp_path / "crops.json"
    models = [REPO / "models" / "fer_fast_int8.tflite", REPO / "models" / "fer_default_int8.tflite"]
    report = C.main([*map(str, models), "--data", str(shared_npz), "--faces", "30", "--tilts", "0,15",
                     "--frames-dir", str(frames), "--json", str(out)])
    assert json.loads(out.read_text())["n_frames"] == 60 and report["found"] > 20
    folder = frames / "fer_PublicTest_30_0_+0_+15"
    assert (folder / "pipeline_crops.npz").is_file()
    P = S._pipeline_accuracy()
    truths = P.make_fer_frames(folder, shared_npz, "PublicTest", 30, [0.0, 15.0], 0)
    for model, row in zip(models, report["models"]):
        # the whole pipeline run frame by frame with this classifier (what ship_check did before it used the crops)
        records = P.run_config("blazeface", EmotionClassifier(model, threads=1), folder, truths)
        whole = P.summarise(records)
        assert row["end_to_end_pct"] == round(100 * whole["accuracy"], 2), model.name
        assert row["on_found_pct"] == round(100 * whole["accuracy_on_found"], 2), model.name
        # and ship_check, which classifies the recorded crops, gives the same figures and frame by frame the same
        figures, right = S.pipeline_figures(model, folder, truths)
        assert figures["end_to_end_pct"] == row["end_to_end_pct"] and figures["on_found_pct"] == row["on_found_pct"]
        assert right == [bool(r["found"] and r["pred"] == r["label"]) for r in records]
        card = json.loads(model.with_name(model.name.replace("_int8.tflite", ".json")).read_text())
        assert abs(row["crops_pct"] - card["metrics"]["int8"]["PublicTest"]["top1"]) < 0.01

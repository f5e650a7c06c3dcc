"""Every shipped model: it honours the contract, its card tells the truth, it sees a smile.

Parametrised over the model cards in models/ (the default, the fast tier, the FER+ model), so a model
added there is checked the same way without a new test.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from fer_edge.classifier import EmotionClassifier
from fer_edge.contract import EMOTIONS, FERPLUS_EMOTIONS, ModelCard, card_path_for
from fer_edge_models import DEFAULT_MODEL, MODELS_DIR

#: the FER2013 file every shipped model was trained on (fer2013.npz in ../shared/data)
FER2013_SHA256 = "0f324ead77296c0676a7470cb61f80e5da93168bc362e8e30a01dd4adfd20ef8"


def _shipped_int8() -> list:
    """The int8 file of every model card in models/ (gate and convert reports have no labels)."""
    docs = [json.loads(p.read_text()) for p in sorted(MODELS_DIR.glob("*.json"))]
    return [MODELS_DIR / d["files"]["int8"] for d in docs if "labels" in d and "int8" in d.get("files", {})]


SHIPPED = _shipped_int8()
pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason=f"no shipped model at {DEFAULT_MODEL}")


@pytest.fixture(scope="module", params=SHIPPED, ids=[p.stem for p in SHIPPED])
def shipped(request) -> EmotionClassifier:
    return EmotionClassifier(request.param, threads=1)


def test_the_default_is_among_them():
    assert DEFAULT_MODEL in SHIPPED


def test_contract_card_and_size_budget(shipped):
    card = ModelCard.load(card_path_for(shipped.model_path))
    assert shipped.input_size == (48, 48)
    assert shipped.labels == tuple(card.labels) and shipped.labels in (EMOTIONS, FERPLUS_EMOTIONS)
    assert np.issubdtype(shipped.input_dtype, np.integer) and np.issubdtype(shipped.output_dtype, np.integer)
    assert card.files["int8"] == shipped.model_path.name
    if shipped.model_path == DEFAULT_MODEL:  # the default ships its float reference (the others: int8 only if need be)
        assert (MODELS_DIR / card.files["float32"]).is_file()
    if len(card.labels) == len(FERPLUS_EMOTIONS):  # FER+: hash of FER2013 pixels + FER+ votes, both recorded
        assert FER2013_SHA256 in card.data["components"].values() and card.data["format"] == "npz+ferplus"
        assert card.data["dropped"]["ferplus_not_face_or_unknown"] > 0
    else:
        assert card.data["sha256"] == FER2013_SHA256
    assert card.metrics["gate"]["int8"]["PublicTest"]["passed"] is True
    assert shipped.model_path.stat().st_size <= 5 * 1024 * 1024
    shipped_bytes = sum(p.stat().st_size for p in MODELS_DIR.iterdir() if p.is_file())
    assert shipped_bytes <= 12 * 1024 * 1024


def test_the_smiling_astronaut_is_happy(shipped, astronaut_bgr):
    from fer_edge.config import DetectorConfig
    from fer_edge.detectors import create_detector
    from fer_edge.loop import crop_face

    faces = create_detector(DetectorConfig(scale=1.0, min_face=24)).detect(astronaut_bgr)
    assert len(faces) == 1
    probs = shipped.predict(crop_face(astronaut_bgr, faces[0].box))
    assert shipped.labels[int(np.argmax(probs))] == "happy"


@pytest.mark.shared_data
def test_card_accuracy_is_what_the_edge_classifier_measures(shipped, shared_npz, request):
    """Recompute the card's int8 PrivateTest top-1 through the runtime's own code path
    (FER+ models: majority vote on the FER+ PrivateTest rows)."""
    from fer_train.data import load_ferplus, load_npz

    if len(shipped.labels) == len(FERPLUS_EMOTIONS):
        private = load_ferplus(shared_npz, request.getfixturevalue("shared_votes")).split("private")
    else:
        private = load_npz(shared_npz).split("private")
    probs = shipped.predict_pixels(private.x)
    top1 = 100 * float(np.mean(probs.argmax(1) == private.y))
    card = ModelCard.load(card_path_for(shipped.model_path))
    assert top1 == pytest.approx(card.metrics["int8"]["PrivateTest"]["top1"], abs=0.01)

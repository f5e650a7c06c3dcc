"""`fer-convert FILE.tflite --measure`: a converted file re-measured through the runtime's classifier, its card
updated; for the shipped FER+ model also on Microsoft's majority protocol (the FER+ literature's figure)."""
from __future__ import annotations

import json
import shutil

import pytest

from fer_edge_models import MODELS_DIR
from tests.convert.conftest import run_convert


@pytest.mark.shared_data
def test_measuring_the_shipped_ferplus_model_reproduces_its_card(tmp_path, shared_npz, shared_votes):
    for name in ("fer_ferplus.json", "fer_ferplus_int8.tflite"):
        shutil.copy(MODELS_DIR / name, tmp_path / name)
    card_path = tmp_path / "fer_ferplus.json"
    card = json.loads(card_path.read_text())
    for split in ("PublicTest", "PrivateTest"):  # what the measurement must write again
        for key in ("top1_ferplus_majority", "n_ferplus_majority"):
            card["metrics"]["int8"][split].pop(key, None)
    card_path.write_text(json.dumps(card))
    before = (tmp_path / "fer_ferplus_int8.tflite").read_bytes()
    assert run_convert([tmp_path / "fer_ferplus_int8.tflite", "--measure", "--data", shared_npz,
                        "--ferplus-votes", shared_votes]) == 0
    assert (tmp_path / "fer_ferplus_int8.tflite").read_bytes() == before  # measured, not changed
    measured = json.loads(card_path.read_text())["metrics"]["int8"]
    shipped = json.loads((MODELS_DIR / "fer_ferplus.json").read_text())["metrics"]["int8"]
    for split, n_plurality, n_majority in (("PublicTest", 3553, 3199), ("PrivateTest", 3546, 3153)):
        m = measured[split]
        assert m["n"] == n_plurality and m["n_ferplus_majority"] == n_majority
        # the shipped card carries exactly what this command measures
        for key in ("top1", "top1_ferplus_majority", "n_ferplus_majority"):
            assert m[key] == shipped[split][key], (split, key)
        # the protocol keeps the faces annotators agreed on: the model scores higher there
        assert m["top1_ferplus_majority"] > m["top1"]


def test_measure_needs_a_converted_file(tmp_path):
    assert run_convert([tmp_path / "model.keras", "--measure"]) == 2  # a run or .keras is measured by its gate

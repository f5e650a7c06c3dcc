"""Mirror averaging (`--flip-average`): each face and its mirror image, probabilities averaged."""
from __future__ import annotations

import numpy as np
import pytest

from fer_edge.classifier import EmotionClassifier
from fer_edge.cli import build_config
from fer_edge.loop import make_classifier
from fer_edge_models import DEFAULT_MODEL

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason=f"no shipped model at {DEFAULT_MODEL}")


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    """Asymmetric 48x48 'faces': a gradient with a bright blob on one side, in several places."""
    rng = np.random.default_rng(3)
    out = []
    for k in range(6):
        img = np.tile(np.linspace(30, 220, 48), (48, 1)) + rng.normal(0, 12, (48, 48))
        img[10 + k:24 + k, 4 + 3 * k:14 + 3 * k] = 250
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(out)


def test_the_average_of_the_face_and_its_mirror(faces):
    plain = EmotionClassifier(DEFAULT_MODEL, threads=1)
    mirrored = EmotionClassifier(DEFAULT_MODEL, threads=1, flip_average=True)
    p, q = plain.predict_pixels(faces), plain.predict_pixels(faces[:, :, ::-1])
    assert not np.allclose(p, q, atol=1e-3)  # the faces are not symmetric: the mirror changes the scores
    np.testing.assert_allclose(mirrored.predict_pixels(faces), 0.5 * (p + q), atol=1e-6)
    # the same on a crop of any size through predict() (prepare -> invoke), and a face and its mirror agree
    big = np.kron(faces[0], np.ones((3, 3), np.uint8))
    np.testing.assert_allclose(mirrored.predict(big), mirrored.predict(big[:, ::-1].copy()), atol=1e-6)
    assert np.isclose(mirrored.predict(big).sum(), 1.0, atol=1e-5)


def test_a_symmetric_face_scores_the_same_either_way():
    face = np.tile(np.concatenate([np.linspace(20, 230, 24), np.linspace(230, 20, 24)]), (48, 1)).astype(np.uint8)
    plain = EmotionClassifier(DEFAULT_MODEL, threads=1)
    mirrored = EmotionClassifier(DEFAULT_MODEL, threads=1, flip_average=True)
    np.testing.assert_allclose(mirrored.predict_pixels(face[None]), plain.predict_pixels(face[None]), atol=1e-6)


@pytest.mark.parametrize("flag, expected", [(None, False), (True, True), (False, False)])
def test_the_flag_reaches_the_runtime_classifier(flag, expected, tmp_path):
    toml = tmp_path / "config.toml"
    toml.write_text("[classifier]\nflip_average = true\n")
    cfg = build_config({"camera": 0, "flip_average": flag})
    assert cfg.classifier.flip_average is expected  # off by default; the flag sets it
    clf = make_classifier(cfg)
    assert clf.flip_average is expected and ("mirror-averaged" in clf.describe()) is expected
    from_file = build_config({"camera": 0, "config_path": str(toml), "flip_average": flag})
    assert from_file.classifier.flip_average is (True if flag is None else flag)  # the flag wins over the file

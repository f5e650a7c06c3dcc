"""Shared fixtures of the training tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fer_edge.contract import FERPLUS_VOTE_TO_LABEL
from tests.conftest import make_tiny_faces, write_npz


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """fer2013.npz-shaped file, 7 classes x 15 faces, all three splits."""
    return write_npz(tmp_path_factory.mktemp("data") / "tiny_fer2013.npz", *make_tiny_faces(n_per_class=15))


def write_votes(fer2013_npz: Path, path: Path, contempt: int = 0) -> Path:
    """ferplus_votes.npz for a tiny fer2013.npz: 10 - contempt votes for each face's own label, the rest
    for contempt (soft 8-class targets when contempt > 0)."""
    with np.load(fer2013_npz) as d:
        y, usage = d["emotion"], d["usage"]
    votes = np.zeros((len(y), 10), np.uint8)
    to_col = {label: col for col, label in enumerate(FERPLUS_VOTE_TO_LABEL) if label is not None}
    for i, label in enumerate(y):
        votes[i, to_col[int(label)]] = 10 - contempt
        votes[i, to_col[7]] += contempt
    np.savez_compressed(path, votes=votes, usage=usage)
    return path

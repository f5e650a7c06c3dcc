"""`fer-train report`: numbers (duplicates planted on purpose), files, CLI, import hygiene."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from fer_edge.clitools import run_cli
from fer_edge.contract import FERPLUS_VOTE_COLUMNS
from fer_edge.errors import DataError
from fer_train.cli import cli
from fer_train.data import load_ferplus, load_npz
from fer_train.report import duplicate_stats, image_hashes, summarize

from .test_data import write_fer2013_csv


def planted_npz(path):
    """Random (so all distinct) faces with known duplicates:

    Training rows 0,1,2 one image (same label); rows 3,4 one image, labels 1 and 2 (conflict);
    PublicTest row 40 = Training row 10 (same label);
    PrivateTest rows 50, 51 = Training row 11 (row 51 has another label: conflicts within
    PrivateTest and across Training/PrivateTest). Row 20 (Training) is blank (std 0).
    """
    rng = np.random.default_rng(0)
    n = 60
    x = rng.integers(0, 256, (n, 48, 48), dtype=np.uint8)
    y = np.arange(n) % 7
    usage = np.zeros(n, np.uint8)
    usage[40:50] = 1
    usage[50:] = 2
    x[1] = x[2] = x[0]
    y[1] = y[2] = y[0]
    x[4] = x[3]
    y[3], y[4] = 1, 2
    x[40] = x[10]
    y[40] = y[10]
    x[50] = x[51] = x[11]
    y[50], y[51] = y[11], (y[11] + 1) % 7
    x[20] = 77
    np.savez_compressed(path, pixels=x, emotion=y.astype(np.uint8), usage=usage)
    return path


EXPECTED_WITHIN = {
    "Training": {"rows": 40, "distinct_images": 37, "groups": 2, "rows_in_groups": 5, "redundant_rows": 3,
                 "label_conflicts": 1},
    "PublicTest": {"rows": 10, "distinct_images": 10, "groups": 0, "rows_in_groups": 0, "redundant_rows": 0,
                   "label_conflicts": 0},
    "PrivateTest": {"rows": 10, "distinct_images": 9, "groups": 1, "rows_in_groups": 2, "redundant_rows": 1,
                    "label_conflicts": 1},
}
EXPECTED_ACROSS = {
    "Training/PublicTest": {"images": 1, "rows_Training": 1, "rows_PublicTest": 1, "label_conflicts": 0},
    "Training/PrivateTest": {"images": 1, "rows_Training": 1, "rows_PrivateTest": 2, "label_conflicts": 1},
    "PublicTest/PrivateTest": {"images": 0, "rows_PublicTest": 0, "rows_PrivateTest": 0, "label_conflicts": 0},
}


def test_duplicate_numbers_on_planted_data(tmp_path):
    ds = load_npz(planted_npz(tmp_path / "planted.npz"))
    s = summarize(ds)
    d = s["duplicates"]
    assert d["within"] == EXPECTED_WITHIN
    assert d["across"] == EXPECTED_ACROSS
    assert d["overall"]["distinct_images"] == 60 - 2 - 1 - 1 - 2
    assert d["test_rows_seen_in_training"] == {"PublicTest": 1, "PrivateTest": 2}
    assert s["pixels"]["Training"]["near_constant"] == 1 and s["pixels"]["PrivateTest"]["near_constant"] == 0
    assert s["counts"]["Training"]["total"] == 40 and s["counts"]["all"]["total"] == 60
    # the hash is exact: one changed pixel makes a different image
    x = ds.x[:2].copy()
    x[1, 0, 0] ^= 1
    assert len(set(image_hashes(x))) == 2
    assert duplicate_stats(np.array([5, 5]), np.array([0, 0]), np.array([1, 1]))["within"]["Training"]["groups"] == 1


def test_report_cli_writes_everything(tmp_path):
    data = planted_npz(tmp_path / "planted.npz")
    out = tmp_path / "rep"
    res = CliRunner().invoke(cli, ["report", str(data), "--out", str(out), "--samples", "3"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    for name in ("summary.md", "report.json", "class_distribution.png", "samples.png"):
        assert (out / name).is_file(), name
        assert str(out / name) in res.output
    for png in ("class_distribution.png", "samples.png"):
        img = cv2.imread(str(out / png))
        assert img is not None and img.shape[0] > 200 and img.shape[1] > 200
    md = (out / "summary.md").read_text()
    assert "| split | angry | disgust | fear | happy | sad | surprise | neutral | total |" in md
    assert "| Training | 8 | 6 | 6 | 5 | 5 | 5 | 5 | 40 |" in md  # see planted_npz
    assert "| Training / PrivateTest | 1 | 1 | 2 | 1 |" in md
    assert ds_sha(data) in md
    rep = json.loads((out / "report.json").read_text())
    assert rep["duplicates"]["within"] == EXPECTED_WITHIN and rep["duplicates"]["across"] == EXPECTED_ACROSS
    assert rep["rows"] == 60 and rep["samples"] == {"per_class": 3, "seed": 0}
    assert "Training" in res.output and "distinct images 54" in res.output


def ds_sha(path):
    return load_npz(path).sha256


def test_report_cli_bad_csv(tmp_path, capsys):
    from .test_data import tiny

    x, y, usage = tiny()
    path = write_fer2013_csv(tmp_path / "fer2013.csv", x, y, usage,
                             mutate=lambda i, f: ["9", f[1], f[2]] if i == 4 else f)
    out = tmp_path / "rep"
    with pytest.raises(SystemExit) as ex:
        run_cli(cli, ["report", str(path), "--out", str(out)])
    assert ex.value.code == 3
    assert f"error: {path} line 6: emotion 9 out of range" in capsys.readouterr().err
    res = CliRunner().invoke(cli, ["report", str(path), "--out", str(out), "--skip-bad", "--samples", "2"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    md = (out / "summary.md").read_text()
    assert "skipped bad rows: 1" in md and f"{path}:6: emotion 9 out of range" in md
    assert json.loads((out / "report.json").read_text())["skipped"]["count"] == 1


def test_report_ferplus(tmp_path, tiny_npz):
    base = load_npz(tiny_npz)
    votes = np.zeros((len(base), len(FERPLUS_VOTE_COLUMNS)), np.uint8)
    votes[:, 7] = 6  # contempt for all ...
    votes[:, 1] = 4
    votes[0] = 0
    votes[0, 9] = 10  # ... except one not-a-face row
    vpath = tmp_path / "votes.npz"
    np.savez(vpath, votes=votes, usage=base.usage)
    summary = summarize(load_ferplus(tiny_npz, vpath))
    assert summary["labels"][-1] == "contempt" and summary["counts"]["all"]["contempt"] == len(base) - 1
    assert summary["dropped"]["ferplus_not_face_or_unknown"] == 1


def test_report_needs_no_tensorflow_or_matplotlib_at_import():
    code = ("import sys, fer_train.cli, fer_train.report; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'matplotlib')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_report_missing_data_is_a_data_error(tmp_path):
    res = CliRunner().invoke(cli, ["report", str(tmp_path / "nope.npz"), "--out", str(tmp_path / "o")])
    assert isinstance(res.exception, DataError)


@pytest.mark.shared_data
def test_real_data_smoke(shared_npz, shared_votes):
    ds = load_npz(shared_npz)
    assert [int((ds.usage == s).sum()) for s in range(3)] == [28709, 3589, 3589]
    dups = duplicate_stats(image_hashes(ds.x), ds.usage, ds.y)
    assert dups["overall"]["distinct_images"] == 34034  # as the data README says
    assert dups["across"]["Training/PrivateTest"]["images"] > 0
    assert dups["across"]["Training/PublicTest"]["images"] > 0
    fp = load_ferplus(shared_npz, shared_votes)
    assert 0 < sum(fp.dropped.values()) < 1000 and len(fp) == len(ds) - sum(fp.dropped.values())
    assert 0 <= fp.y.min() and fp.y.max() < 8 and (fp.y == 7).any()

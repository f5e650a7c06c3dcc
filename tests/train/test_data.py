"""Loaders: CSV (both Kaggle layouts), image folders, npz, FER+ votes, and bad input."""
from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest

from fer_edge.contract import FERPLUS_EMOTIONS, FERPLUS_VOTE_COLUMNS, file_sha256
from fer_edge.errors import DataError
from fer_train.data import (
    SPLITS, Dataset, ferplus_from_votes, ferplus_majority_protocol, load_csv, load_dataset, load_ferplus,
    load_image_folder, load_npz,
)
from tests.conftest import make_tiny_faces

USAGE_NAMES = list(SPLITS)


def tiny(n_per_class=3, size=48, seed=0):
    x, y = make_tiny_faces(n_per_class=n_per_class, size=size, seed=seed)
    usage = np.arange(len(y)) % 3
    return x, y, usage


def write_fer2013_csv(path, x, y, usage, mutate=None):
    """fer2013.csv layout; `mutate(i, [emotion, pixels, usage]) -> fields` plants defects."""
    with open(path, "w", newline="") as fh:
        fh.write("emotion,pixels,Usage\n")
        for i in range(len(y)):
            fields = [str(y[i]), " ".join(map(str, x[i].ravel())), USAGE_NAMES[usage[i]]]
            if mutate is not None:
                fields = mutate(i, fields)
            fh.write(",".join(fields) + "\n")
    return path


def write_icml_csv(path, x, y, usage):
    """icml_face_data.csv layout: `emotion, Usage, pixels`, values with leading spaces, quoted pixels."""
    with open(path, "w", newline="") as fh:
        fh.write("emotion, Usage, pixels\r\n")
        w = csv.writer(fh, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
        for i in range(len(y)):
            w.writerow([str(y[i]), " " + USAGE_NAMES[usage[i]], " " + " ".join(map(str, x[i].ravel()))])
    return path


# --------------------------------------------------------------------------- CSV
def test_fer2013_csv_loads_exactly(tmp_path):
    x, y, usage = tiny()
    path = write_fer2013_csv(tmp_path / "fer2013.csv", x, y, usage)
    ds = load_csv(path)
    assert isinstance(ds, Dataset) and ds.format == "csv" and ds.source == str(path)
    np.testing.assert_array_equal(ds.x, x)
    np.testing.assert_array_equal(ds.y, y)
    np.testing.assert_array_equal(ds.usage, usage)
    assert ds.x.dtype == np.uint8 and ds.y.dtype == np.int64 and ds.input_size == (48, 48)
    assert list(ds.rows[:3]) == [2, 3, 4]  # line numbers, header = line 1
    assert ds.sha256 == file_sha256(path) and ds.skipped == []
    assert load_dataset(path).sha256 == ds.sha256


def test_icml_csv_with_spaced_header_and_quotes(tmp_path):
    x, y, usage = tiny()
    ds = load_csv(write_icml_csv(tmp_path / "icml_face_data.csv", x, y, usage))
    np.testing.assert_array_equal(ds.x, x)
    np.testing.assert_array_equal(ds.y, y)
    np.testing.assert_array_equal(ds.usage, usage)


def test_csv_infers_square_side_and_ignores_blank_lines(tmp_path):
    x, y, usage = tiny(size=8)
    path = write_fer2013_csv(tmp_path / "small.csv", x, y, usage)
    path.write_text(path.read_text() + "\n\n")
    ds = load_csv(path)
    assert ds.x.shape == (len(y), 8, 8)
    np.testing.assert_array_equal(ds.x, x)


BAD_ROWS = {
    "short": (lambda f: [f[0], f[1].rsplit(" ", 1)[0], f[2]], "expected 2304 pixels, got 2303"),
    "non-numeric": (lambda f: [f[0], f[1].replace(" ", " x7 ", 1), f[2]], "not a non-negative integer"),
    "pixel range": (lambda f: [f[0], "300 " + f[1].split(" ", 1)[1], f[2]], "out of range 0..255"),
    "label range": (lambda f: ["7", f[1], f[2]], "emotion 7 out of range"),
    "label text": (lambda f: ["happy", f[1], f[2]], "not an integer"),
    "usage": (lambda f: [f[0], f[1], "Validation"], "unknown Usage 'Validation'"),
    "fields": (lambda f: f + ["extra"], "expected 3 fields, got 4"),
}


@pytest.mark.parametrize("kind", sorted(BAD_ROWS))
def test_bad_csv_row_names_file_and_line(tmp_path, kind):
    x, y, usage = tiny()
    change, reason = BAD_ROWS[kind]
    bad_i = 15  # data row 15 -> line 17 (the header is line 1)
    path = write_fer2013_csv(tmp_path / "fer2013.csv", x, y, usage,
                             mutate=lambda i, f: change(f) if i == bad_i else f)
    with pytest.raises(DataError) as err:
        load_csv(path)
    msg = str(err.value)
    assert f"{path} line 17: " in msg and reason in msg, msg
    ds = load_csv(path, skip_bad=True)
    assert len(ds) == len(y) - 1 and 17 not in ds.rows
    assert len(ds.skipped) == 1 and ds.skipped[0].startswith(f"{path}:17: ") and reason in ds.skipped[0]
    assert ds.data_info()["skipped"] == 1


def test_skip_bad_counts_every_defect_and_all_bad_is_an_error(tmp_path):
    x, y, usage = tiny()
    kinds = sorted(BAD_ROWS)
    path = write_fer2013_csv(tmp_path / "many.csv", x, y, usage,
                             mutate=lambda i, f: BAD_ROWS[kinds[i]][0](f) if i < len(kinds) else f)
    with pytest.raises(DataError, match=r"line 2: .*and 6 more bad row"):
        load_csv(path)
    ds = load_csv(path, skip_bad=True)
    assert len(ds) == len(y) - len(kinds) and len(ds.skipped) == len(kinds)
    assert [s[len(str(path)) + 1:].split(":")[0] for s in ds.skipped] == [str(i + 2) for i in range(len(kinds))]
    np.testing.assert_array_equal(ds.x, x[len(kinds):])

    all_bad = write_fer2013_csv(tmp_path / "all_bad.csv", x, y, usage, mutate=lambda i, f: ["9", f[1], f[2]])
    with pytest.raises(DataError, match="no valid rows"):
        load_csv(all_bad, skip_bad=True)


def test_missing_column_and_empty_file(tmp_path):
    p = tmp_path / "nopix.csv"
    p.write_text("emotion,Usage\n0,Training\n")
    with pytest.raises(DataError, match=r"nopix.csv line 1: missing column\(s\) pixels"):
        load_csv(p, skip_bad=True)
    e = tmp_path / "empty.csv"
    e.write_text("")
    with pytest.raises(DataError, match="empty"):
        load_csv(e)
    h = tmp_path / "header_only.csv"
    h.write_text("emotion,pixels,Usage\n")
    with pytest.raises(DataError, match="no valid rows"):
        load_csv(h)


def test_load_dataset_dispatch_errors(tmp_path, tiny_npz):
    with pytest.raises(DataError, match="not found"):
        load_dataset(tmp_path / "nope.npz")
    other = tmp_path / "data.parquet"
    other.write_bytes(b"x")
    with pytest.raises(DataError, match="unknown data format '.parquet'"):
        load_dataset(other)
    assert load_dataset(tiny_npz).format == "npz"
    csv_path = write_fer2013_csv(tmp_path / "f.csv", *tiny())
    with pytest.raises(DataError, match="FER\\+ votes"):
        load_dataset(csv_path, ferplus_votes=tmp_path / "v.npz")


# --------------------------------------------------------------------------- image folders
def _write(path, img):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)


def make_folder(root, with_prefix=True):
    rng = np.random.default_rng(1)
    imgs = {}
    layout = [("train", "Angry", "a0.png"), ("train", "angry", "a1.jpg"), ("train", "HAPPY", "h0.png"),
              ("train", "Neutral", "n0.png"),
              ("test", "angry", "PublicTest_1.png" if with_prefix else "t1.png"),
              ("test", "Happy", "PrivateTest_2.png" if with_prefix else "t2.png"),
              ("test", "happy", "PublicTest_3.jpg" if with_prefix else "t3.jpg")]
    for split, cls, name in layout:
        img = rng.integers(0, 256, (48, 48), dtype=np.uint8)
        _write(root / split / cls / name, img)
        imgs[f"{split}/{cls}/{name}"] = img
    # a bigger colour image: read as gray and shrunk to 48x48
    _write(root / "train" / "Sad" / "big.png", rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))
    (root / "train" / "Sad" / "notes.txt").write_text("not an image, ignored")
    return imgs


def test_image_folder_layout(tmp_path):
    root = tmp_path / "kaggle"
    imgs = make_folder(root)
    ds = load_image_folder(root)
    assert ds.format == "folder" and len(ds) == 8 and ds.x.shape == (8, 48, 48) and ds.x.dtype == np.uint8
    got = {str(p).split("kaggle/", 1)[1]: (lbl, use, img) for p, lbl, use, img in zip(ds.paths, ds.y, ds.usage, ds.x)}
    assert got["train/Angry/a0.png"][:2] == (0, 0) and got["train/HAPPY/h0.png"][:2] == (3, 0)
    assert got["train/Sad/big.png"][:2] == (4, 0)
    assert got["test/angry/PublicTest_1.png"][:2] == (0, 1)
    assert got["test/Happy/PrivateTest_2.png"][:2] == (3, 2)
    assert got["test/happy/PublicTest_3.jpg"][:2] == (3, 1)
    np.testing.assert_array_equal(got["train/Angry/a0.png"][2], imgs["train/Angry/a0.png"])  # PNG: exact
    # subset keeps paths parallel
    pub = ds.split("public")
    assert len(pub) == 2 and all("PublicTest_" in p for p in pub.paths)
    # the folder hash: stable, and changes with any file's bytes
    assert load_image_folder(root).sha256 == ds.sha256
    _write(root / "train" / "Angry" / "a0.png", np.zeros((48, 48), np.uint8))
    assert load_image_folder(root).sha256 != ds.sha256
    assert load_dataset(root).format == "folder"


def test_image_folder_without_prefixes_splits_test_in_halves(tmp_path):
    root = tmp_path / "plain"
    rng = np.random.default_rng(2)
    _write(root / "train" / "fear" / "f.png", rng.integers(0, 256, (48, 48), dtype=np.uint8))
    for i in range(40):
        _write(root / "test" / "fear" / f"img{i}.png", rng.integers(0, 256, (48, 48), dtype=np.uint8))
    ds = load_image_folder(root)
    n_pub, n_priv = int((ds.usage == 1).sum()), int((ds.usage == 2).sum())
    assert n_pub + n_priv == 40 and n_pub > 5 and n_priv > 5
    np.testing.assert_array_equal(load_image_folder(root).usage, ds.usage)  # deterministic
    # with a val/ folder providing PublicTest, unprefixed test images all go to PrivateTest
    _write(root / "val" / "fear" / "v.png", rng.integers(0, 256, (48, 48), dtype=np.uint8))
    ds2 = load_image_folder(root)
    assert int((ds2.usage == 1).sum()) == 1 and int((ds2.usage == 2).sum()) == 40


def test_image_folder_bad_input(tmp_path):
    root = tmp_path / "kaggle"
    make_folder(root)
    bad = root / "train" / "angry" / "broken.png"
    bad.write_bytes(b"definitely not a png")
    with pytest.raises(DataError, match="broken.png: not a readable image"):
        load_image_folder(root)
    ds = load_image_folder(root, skip_bad=True)
    assert len(ds) == 8 and len(ds.skipped) == 1 and str(bad) in ds.skipped[0]
    (root / "train" / "bored").mkdir()
    with pytest.raises(DataError, match="unknown class folder 'bored'"):
        load_image_folder(root, skip_bad=True)
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        load_image_folder(empty)


# --------------------------------------------------------------------------- npz and FER+
def test_load_npz_tiny(tiny_npz):
    ds = load_npz(tiny_npz)
    assert len(ds) == 105 and ds.x.shape[1:] == (48, 48) and ds.format == "npz"
    assert [int((ds.usage == s).sum()) for s in range(3)] == [63, 21, 21]
    assert ds.sha256 == file_sha256(tiny_npz)
    assert ds.paths is None and ds.dropped == {}


def _votes_for(n, seed=0):
    rng = np.random.default_rng(seed)
    votes = np.zeros((n, len(FERPLUS_VOTE_COLUMNS)), np.uint8)
    for i in range(n):
        votes[i, rng.integers(0, 8)] += 7
        votes[i, rng.integers(0, 8)] += 3
    votes[0] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 10]   # NF majority: dropped
    votes[1] = [0, 4, 0, 0, 0, 0, 0, 0, 6, 0]    # unknown majority: dropped
    votes[2] = [5, 0, 0, 0, 0, 0, 0, 0, 0, 5]    # NF ties neutral: kept, neutral
    votes[3] = 0                                  # no votes: dropped
    votes[4] = [1, 8, 0, 0, 0, 0, 0, 0, 1, 0]    # happiness -> FER index 3
    votes[5] = [0, 0, 0, 0, 0, 0, 0, 9, 1, 0]    # contempt -> 7
    votes[6] = [0, 0, 3, 0, 3, 0, 0, 0, 0, 0]    # surprise/anger tie -> anger (first in FER order)
    return votes


def test_ferplus_votes(tmp_path, tiny_npz):
    base = load_npz(tiny_npz)
    votes = _votes_for(len(base))
    vpath = tmp_path / "ferplus_votes.npz"
    np.savez_compressed(vpath, votes=votes, usage=base.usage.astype(np.uint8),
                        columns=np.array(FERPLUS_VOTE_COLUMNS))
    ds = load_ferplus(tiny_npz, vpath)
    assert ds.labels == FERPLUS_EMOTIONS and len(ds) == len(base) - 3
    assert ds.dropped == {"ferplus_not_face_or_unknown": 2, "ferplus_no_votes": 1}
    assert ds.data_info()["dropped"] == ds.dropped
    assert list(ds.rows[:4]) == [2, 4, 5, 6]  # original npz rows kept
    assert list(ds.y[:4]) == [6, 3, 7, 0]
    assert ds.soft.shape == (len(ds), 8) and ds.soft.dtype == np.float32
    np.testing.assert_allclose(ds.soft.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(ds.soft[1], [0, 0, 0, 8 / 9, 0, 0, 1 / 9, 0], atol=1e-6)
    np.testing.assert_array_equal(ds.x, base.x[ds.rows])
    np.testing.assert_array_equal(ds.usage, base.usage[ds.rows])
    assert ds.format == "npz+ferplus" and set(ds.components.values()) == {base.sha256, file_sha256(vpath)}
    assert load_dataset(tiny_npz, ferplus_votes=vpath).sha256 == ds.sha256
    # Microsoft's majority protocol: row 2 (neutral 5 of 10, NF 5) is not > 50 %, row 6 (3/3/.. of 6) a tie;
    # rows 4 and 5 and the random rows (7 + 3 votes, or 10) have a > 50 % emotion
    assert ds.ferplus_majority.dtype == bool and list(ds.ferplus_majority[:4]) == [False, True, True, False]
    assert ds.ferplus_majority[4:].all()
    # the subset of a FER+ data set keeps soft labels and the protocol's rows aligned
    tr = ds.split("train")
    assert len(tr.soft) == len(tr) == len(tr.ferplus_majority)
    np.testing.assert_array_equal(tr.ferplus_majority, ds.ferplus_majority[ds.usage == 0])
    assert load_npz(tiny_npz).ferplus_majority is None  # FER2013 labels: no such protocol


def test_ferplus_misaligned(tmp_path, tiny_npz):
    base = load_npz(tiny_npz)
    votes = _votes_for(len(base))
    short = tmp_path / "short.npz"
    np.savez(short, votes=votes[:-1], usage=base.usage[:-1])
    with pytest.raises(DataError, match="not row-aligned"):
        load_ferplus(tiny_npz, short)
    shifted = tmp_path / "shifted.npz"
    usage = base.usage.copy()
    usage[70] = (usage[70] + 1) % 3
    np.savez(shifted, votes=votes, usage=usage)
    with pytest.raises(DataError, match="not row-aligned.*first row 70"):
        load_ferplus(tiny_npz, shifted)
    with pytest.raises(DataError, match="not found"):
        load_ferplus(tiny_npz, tmp_path / "missing.npz")
    novotes = tmp_path / "novotes.npz"
    np.savez(novotes, usage=base.usage)
    with pytest.raises(DataError, match="missing array"):
        load_ferplus(tiny_npz, novotes)


def test_ferplus_from_votes_rules():
    votes = np.array([[0, 0, 0, 0, 0, 0, 0, 0, 4, 4], [0, 0, 0, 0, 0, 0, 0, 4, 4, 0]])
    soft, y, keep, no_votes = ferplus_from_votes(votes)
    assert list(keep) == [False, True] and list(y) == [0, 7] and not no_votes.any()

# The real-data smoke test (npz counts, FER+ drops, cross-split duplicates) is in test_report.py.


# --------------------------------------------------------------------------- FER+ majority protocol
#                  neu hap sur sad ang dis fea con unk NF
MAJORITY_CASES = [
    ([4, 1, 1, 1, 1, 1, 1, 0, 0, 0], 6),     # 4 of 10 raw, but single votes are outliers: 4 of 4 -> neutral
    ([5, 3, 1, 1, 0, 0, 0, 0, 0, 0], 6),     # 5 of the 8 left (> 50 %) -> neutral
    ([5, 3, 2, 0, 0, 0, 0, 0, 0, 0], None),  # 5 of 10: exactly 50 % is not a majority
    ([0, 4, 0, 0, 0, 0, 0, 0, 0, 4], None),  # 4 of 8: exactly 50 % (NF counts in the total)
    ([5, 0, 0, 0, 0, 0, 0, 0, 2, 3], None),  # 5 of 10: unknown and NF votes count in the total
    ([5, 0, 0, 0, 0, 0, 0, 0, 1, 4], 6),     # a single unknown vote is an outlier too: 5 of 9
    ([0, 0, 0, 0, 0, 0, 0, 0, 6, 4], None),  # unknown on top: not a face to score
    ([2, 0, 0, 0, 0, 0, 0, 0, 0, 8], None),  # NF (not a face) on top
    ([0, 0, 0, 0, 0, 0, 0, 7, 3, 0], 7),     # contempt, FERPLUS_EMOTIONS' 8th label
    ([1, 8, 0, 0, 0, 0, 0, 0, 1, 0], 3),     # happiness -> FER index 3
    ([0, 0, 0, 0, 2, 0, 0, 0, 0, 0], 0),     # anger, 2 of 2
    ([0, 0, 0, 0, 0, 6, 3, 0, 0, 0], 1),     # disgust 6 of 9
    ([0, 0, 2, 0, 0, 0, 5, 0, 0, 0], 2),     # fear 5 of 7
    ([3, 3, 2, 1, 1, 0, 0, 0, 0, 0], None),  # tie on top, 3 of 8
    ([1, 1, 1, 1, 1, 1, 1, 1, 1, 1], None),  # only outliers: no votes left
    ([0, 0, 0, 0, 0, 0, 0, 0, 0, 0], None),  # no votes
    ([0, 0, 6, 0, 0, 0, 0, 0, 0, 3], 5),     # surprise 6 of 9 (9 votes, as one real row has)
]


def test_ferplus_majority_protocol_rules():
    votes = np.array([v for v, _ in MAJORITY_CASES], np.uint8)
    keep, y = ferplus_majority_protocol(votes)
    expected = [lab for _, lab in MAJORITY_CASES]
    assert [int(v) if k else None for k, v in zip(keep, y)] == expected
    assert (y[~keep] == -1).all()
    # a subset of the plurality rows `ferplus_from_votes` keeps, with the same labels
    _, plural_y, plural_keep, _ = ferplus_from_votes(votes)
    assert (plural_keep[keep]).all() and (plural_y[keep] == y[keep]).all()
    assert plural_keep.sum() > keep.sum()
    with pytest.raises(DataError, match="must be"):
        ferplus_majority_protocol(votes[:, :8])


def test_ferplus_majority_protocol_counts_on_the_real_data(shared_npz, shared_votes):
    """Microsoft's protocol on the real FER+ votes: 3,153 PrivateTest faces, as the FER+ literature scores."""
    with np.load(shared_votes) as d:
        votes, usage = d["votes"], d["usage"]
    keep, y = ferplus_majority_protocol(votes)
    assert [int((keep & (usage == i)).sum()) for i in range(3)] == [25060, 3199, 3153]
    ds = load_ferplus(shared_npz, shared_votes)  # the loader marks the same rows, on its plurality rows
    assert [int(ds.split(s).ferplus_majority.sum()) for s in SPLITS] == [25060, 3199, 3153]
    np.testing.assert_array_equal(ds.rows[ds.ferplus_majority], np.flatnonzero(keep))
    np.testing.assert_array_equal(ds.y[ds.ferplus_majority], y[keep])

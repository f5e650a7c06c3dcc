"""`fer-train runtime-views` and `fit --runtime-views`: the runtime's crops of Training faces, made by the
real face stage from rendered frames, and mixed into training batches on their own random stream."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from click.testing import CliRunner  # noqa: E402

from fer_edge.errors import ConfigError, DataError  # noqa: E402
from fer_train.augment import AugmentConfig, RuntimeViews, TrainBatches  # noqa: E402
from fer_train.cli import cli  # noqa: E402
from fer_train.data import load_training_data  # noqa: E402
from fer_train.runtime_views import load_runtime_views  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def faces(n: int) -> np.ndarray:
    """Face i is filled with the value i: which face (or view) landed where is readable from the pixels."""
    return np.repeat(np.arange(n, dtype=np.uint8)[:, None, None], 48 * 48, axis=1).reshape(n, 48, 48)


def test_swap_shows_only_a_face_own_views():
    x = faces(10)
    owner = np.array([3, 3, 7, 1])  # faces 3 (two views), 7 and 1 have views
    crops = np.stack([np.full((48, 48), 100 + k, np.uint8) for k in range(4)])
    views = RuntimeViews(crops, owner, p=1.0)
    idx = np.arange(10)
    out = views.swap(x[idx], idx, np.random.default_rng(0))
    assert out[3, 0, 0] in (100, 101) and out[7, 0, 0] == 102 and out[1, 0, 0] == 103
    unchanged = [i for i in range(10) if i not in (1, 3, 7)]
    assert (out[unchanged] == x[unchanged]).all()
    assert (x == faces(10)).all()  # the caller's batch is not written to
    # over many draws, face 3 is shown as each of its two views
    seen = {int(views.swap(x[[3]], np.array([3]), np.random.default_rng(s))[0, 0, 0]) for s in range(20)}
    assert seen == {100, 101}
    assert (RuntimeViews(crops, owner, p=0.0).swap(x, idx, np.random.default_rng(0)) == x).all()


def test_swap_rate_follows_p():
    x = faces(200)
    views = RuntimeViews(faces(200)[::-1].copy(), np.arange(200), p=0.3)
    rate = np.mean([(views.swap(x, np.arange(200), np.random.default_rng(s)) != x).any(axis=(1, 2)).mean()
                    for s in range(20)])
    assert 0.25 < rate < 0.35


def test_batches_without_views_keep_their_stream():
    """Views draw from their own stream: at p = 0 the batches are exactly those of a run without views."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 48, 48), dtype=np.uint8)
    t = np.eye(7, dtype=np.float32)[rng.integers(0, 7, 40)]
    cfg = AugmentConfig(erasing=0.5, blur=0.5, noise=3.0)
    plain = TrainBatches(x, t, 8, cfg, seed=2)
    off = TrainBatches(x, t, 8, cfg, seed=2, views=RuntimeViews(x[:5].copy(), np.arange(5), p=0.0))
    on = TrainBatches(x, t, 8, cfg, seed=2, views=RuntimeViews(255 - x, np.arange(40), p=1.0))
    for i in range(len(plain)):
        assert np.array_equal(plain[i][0], off[i][0])
        assert np.array_equal(plain[i][1], on[i][1])  # targets stay the face's own
    assert not np.array_equal(plain[0][0], on[0][0])
    with pytest.raises(ValueError, match="runtime views are"):
        TrainBatches(x, t, 8, cfg, views=RuntimeViews(np.zeros((2, 40, 40), np.uint8), np.arange(2)))


def test_an_empty_views_file_trains_without_views(tiny, tmp_path):
    ds = load_training_data(tiny)
    path = write_views(tmp_path / "none.npz", np.zeros(0, np.int64), np.zeros((0, 48, 48), np.uint8), ds.sha256)
    views, _ = load_runtime_views(path, ds.split("Training"), ds.sha256, 0.5)
    x = faces(4)
    assert len(views.crops) == 0 and (views.swap(x, np.arange(4), np.random.default_rng(0)) == x).all()


def write_views(path: Path, rows, crops, sha: str | None) -> Path:
    meta = {"data_sha256": sha, "detector": "blazeface"}
    np.savez_compressed(path, rows=np.asarray(rows), crops=crops, meta=np.asarray(json.dumps(meta)))
    return path


def test_load_maps_rows_to_training_positions(tiny, tmp_path):
    ds = load_training_data(tiny)
    train = ds.split("Training")
    rows = [int(train.rows[5]), int(train.rows[2]), 10_000]  # the last is no Training row here: left out
    path = write_views(tmp_path / "v.npz", rows, faces(3), ds.sha256)
    views, meta = load_runtime_views(path, train, ds.sha256, 0.4)
    assert views.p == 0.4 and meta["detector"] == "blazeface"
    assert sorted(views.owner.tolist()) == [2, 5]
    assert views.crops[list(views.owner).index(5)][0, 0] == 0  # face 5's view is the first crop
    with pytest.raises(ConfigError, match="other data"):
        load_runtime_views(path, train, "f" * 64, 0.5)
    small = write_views(tmp_path / "s.npz", rows, np.zeros((3, 40, 40), np.uint8), ds.sha256)
    with pytest.raises(ConfigError, match="40x40 crops"):
        load_runtime_views(small, train, ds.sha256, 0.5)
    with pytest.raises(ConfigError, match="no such file"):
        load_runtime_views(tmp_path / "missing.npz", train, ds.sha256, 0.5)
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(DataError, match="not a runtime views file"):
        load_runtime_views(tmp_path / "bad.npz", train, ds.sha256, 0.5)


def test_fit_trains_on_views_and_records_them(tiny, tmp_path):
    ds = load_training_data(tiny)
    train = ds.split("Training")
    path = write_views(tmp_path / "v.npz", train.rows[:20], train.x[:20][:, :, ::-1].copy(), ds.sha256)
    res = CliRunner().invoke(cli, ["fit", "--data", str(tiny), "--model", "edgenet_s", "--epochs", "1",
                                   "--batch-size", "16", "--runtime-views", str(path), "--runtime-view-p", "0.7",
                                   "--out", str(tmp_path), "--name", "rv"])
    assert res.exit_code == 0, res.output
    assert "runtime views: 20 crops of 20 Training faces" in res.output
    cfg = json.loads((tmp_path / "rv" / "config.json").read_text())
    assert cfg["runtime_views"] == str(path) and cfg["runtime_view_p"] == 0.7
    assert str(path) in cfg["source_files_sha256"]
    bad = CliRunner().invoke(cli, ["fit", "--data", str(tiny), "--epochs", "1", "--runtime-view-p", "1.5",
                                   "--out", str(tmp_path), "--name", "bad"])
    assert isinstance(bad.exception, ConfigError) and "probability" in str(bad.exception)


@pytest.mark.shared_data
def test_runtime_views_of_real_faces(shared_npz, tmp_path):
    """The real face stage on rendered Training faces: it finds most, and each crop is a 48-px face."""
    out = tmp_path / "views.npz"
    res = CliRunner().invoke(cli, ["runtime-views", "--data", str(shared_npz), "--out", str(out),
                                   "--max-faces", "24", "--seed", "1"])
    assert res.exit_code == 0, res.output
    with np.load(out) as z:
        rows, crops, meta = z["rows"], z["crops"], json.loads(str(z["meta"]))
        usage = np.load(shared_npz)["usage"]
    assert meta["faces"] == 24 and meta["detector"] == "blazeface" and meta["data_sha256"]
    assert 12 <= len(crops) == meta["found"] <= 24  # upscaled 48-px crops: about two thirds are found
    assert crops.shape[1:] == (48, 48) and crops.dtype == np.uint8
    assert (usage[rows] == 0).all()  # Training faces only
    assert crops.std(axis=(1, 2)).min() > 5  # a face, not an empty or flat border
    train = load_training_data(shared_npz).split("Training")
    views, _ = load_runtime_views(out, train, meta["data_sha256"], 0.5)
    assert len(views.crops) == len(crops)


def test_auto_makes_the_views_file_once_in_the_runs_folder(tiny, tmp_path):
    """`--runtime-views auto` (the recipes): the views of this data are made in --out on first use and the run
    records the file. The tiny data's patterns are (almost) no faces to BlazeFace: training goes on with what
    it found."""
    ds = load_training_data(tiny)
    args = ["fit", "--data", str(tiny), "--model", "edgenet_s", "--epochs", "1", "--batch-size", "16",
            "--runtime-views", "auto", "--out", str(tmp_path)]
    res = CliRunner().invoke(cli, [*args, "--name", "a"])
    assert res.exit_code == 0, res.output
    made = tmp_path / f"runtime_views_{ds.sha256[:12]}_v2_s1.npz"
    assert made.is_file() and "making " + str(made) in res.output
    found = re.search(r"wrote .*: (\d+) views of 126 renders", res.output)
    assert found and f"runtime views: {found.group(1)} crops" in res.output
    assert json.loads((tmp_path / "a" / "config.json").read_text())["runtime_views"] == str(made)
    stamp = made.stat().st_mtime_ns
    again = CliRunner().invoke(cli, [*args, "--name", "b"])
    assert again.exit_code == 0 and "making" not in again.output and made.stat().st_mtime_ns == stamp


@pytest.mark.shared_data
def test_views_rendered_in_parallel_are_the_views_rendered_in_turn(shared_npz, tmp_path):
    """`--jobs 2`: each view has its own random stream, so two processes write the same file as one."""
    files = {}
    for jobs in (1, 2):
        files[jobs] = tmp_path / f"views_j{jobs}.npz"
        res = CliRunner().invoke(cli, ["runtime-views", "--data", str(shared_npz), "--out", str(files[jobs]),
                                       "--max-faces", "16", "--views", "2", "--seed", "3", "--jobs", str(jobs)])
        assert res.exit_code == 0, res.output
        assert f"{jobs} at a time" in res.output
    with np.load(files[1]) as one, np.load(files[2]) as two:
        assert len(one["crops"]) > 8
        assert (one["rows"] == two["rows"]).all() and (one["crops"] == two["crops"]).all()
        assert (one["tilts"] == two["tilts"]).all()
        assert len(np.unique(one["tilts"])) == len(one["tilts"])  # every view its own render, none repeated
    bad = CliRunner().invoke(cli, ["runtime-views", "--data", str(shared_npz), "--out", str(tmp_path / "x.npz"),
                                   "--max-faces", "4", "--jobs", "0"])
    assert isinstance(bad.exception, ConfigError) and "--jobs" in str(bad.exception)

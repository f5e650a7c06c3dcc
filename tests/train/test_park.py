"""`fer-train park` / `unpark`: a run stopped on one machine, carried in the repository, resumed on a new
machine without its runs/ folder (no teachers, no runtime-views file) ends like a run that went straight through."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

keras = pytest.importorskip("keras")

from click.testing import CliRunner  # noqa: E402

from fer_edge.contract import file_sha256  # noqa: E402
from fer_edge.errors import ConfigError  # noqa: E402
from fer_train import fit as F  # noqa: E402
from fer_train import park as P  # noqa: E402
from fer_train import resume as R  # noqa: E402
from fer_train.cli import cli  # noqa: E402
from tests.train.test_resume import SETTINGS, assert_same_state, meta  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


@pytest.fixture(scope="module")
def teacher(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    return F.run_fit(F.FitConfig(data=str(tiny), out=str(out), name="t", model="edgenet_s", width=0.5, epochs=1,
                                 batch_size=16, verbose=0))


def settings(teacher):
    return {**SETTINGS, "runtime_views": "auto", "teacher": str(teacher)}


@pytest.fixture(scope="module")
def straight(tiny, teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    return F.run_fit(F.FitConfig(data=str(tiny), out=str(out), name="r", **settings(teacher)))


def stopped_after_two_epochs(cfg: F.FitConfig, monkeypatch):
    """The run folder of `cfg` interrupted (Ctrl-C) at the end of its second epoch."""
    original = F._callbacks

    class StopAfterEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    monkeypatch.setattr(F, "_callbacks", lambda *a, **k: [*original(*a, **k), StopAfterEpoch()])
    try:
        return F.run_fit(cfg)
    finally:
        monkeypatch.setattr(F, "_callbacks", original)


def test_parked_run_resumes_on_a_new_machine_like_a_straight_run(tiny, teacher, straight, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    run = stopped_after_two_epochs(F.FitConfig(data=str(tiny), out=str(runs), name="r", **settings(teacher)), monkeypatch)
    assert meta(run)["epochs_done"] == 2
    views = json.loads((run / "config.json").read_text())["runtime_views"]

    res = CliRunner().invoke(cli, ["park", str(run), "--to", str(tmp_path / "parking")])
    assert res.exit_code == 0, res.output
    parked = tmp_path / "parking" / "r"
    manifest = json.loads((parked / P.MANIFEST).read_text())
    assert manifest["epochs_done"] == 2 and manifest["epochs"] == 5
    assert {"config.json", R.CHECKPOINT, "model.keras", "history.csv", "teacher_targets.npy"} <= set(manifest["files_sha256"])
    assert manifest["not_carried"]["runtime_views"] == views
    assert f"fer-train unpark {parked}" in res.output

    # the new machine: no runs/ folder (so no runtime views file) and no teacher
    shutil.rmtree(runs)
    shutil.rmtree(teacher.parent)
    res = CliRunner().invoke(cli, ["unpark", str(parked), "--out", str(runs)])
    assert res.exit_code == 0, res.output
    assert "not on this machine" in res.output and f"fit --resume {run}" in res.output
    F.run_fit(F.resume_config(run, verbose=0), resume_dir=run)
    assert meta(run)["epochs_done"] == 5
    assert_same_state(straight, run)

    # unparking over a run that is already further is refused unless forced
    with pytest.raises(ConfigError, match="already exists and is at epoch 5"):
        P.unpark(parked, runs, log=lambda s: None)
    P.unpark(parked, runs, force=True, log=lambda s: None)
    assert meta(run)["epochs_done"] == 2


def test_parked_small_and_a_changed_parked_file_is_refused(straight, tmp_path):
    parked = P.park(straight, tmp_path / "parking", log=lambda s: None)
    manifest = json.loads((parked / P.MANIFEST).read_text())
    # the best checkpoint travels without its optimizer state; the binaries xz-compressed
    assert set(manifest["xz_compressed"]) == {R.CHECKPOINT, "model.keras", "best_epoch.keras", "swa.keras",
                                              "teacher_targets.npy"} & set(manifest["files_sha256"])
    assert (parked / "model.keras.xz").stat().st_size < 0.7 * (straight / "model.keras").stat().st_size
    # a file changed after parking: its hash no longer matches; a truncated archive is not readable
    P._unxz(parked / "teacher_targets.npy.xz", tmp_path / "t.npy")
    with open(tmp_path / "t.npy", "r+b") as fh:
        fh.seek(-4, 2)
        fh.write(b"\0\0\0\1")
    P._xz(tmp_path / "t.npy", parked / "teacher_targets.npy.xz")
    with pytest.raises(ConfigError, match="teacher_targets.npy has sha256"):
        P.unpark(parked, tmp_path / "runs", log=lambda s: None)
    with open(parked / f"{R.CHECKPOINT}.xz", "r+b") as fh:
        fh.truncate(100)
    with pytest.raises(ConfigError, match="not readable xz"):
        P.unpark(parked, tmp_path / "runs", log=lambda s: None)
    assert not (tmp_path / "runs" / "r").exists() and not list((tmp_path / "runs").glob(".*"))
    (parked / P.MANIFEST).unlink()
    with pytest.raises(ConfigError, match="not a folder `fer-train park` wrote"):
        P.unpark(parked, tmp_path / "runs", log=lambda s: None)


def test_park_refuses_a_run_in_training_or_without_an_epoch(straight, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text((straight / "config.json").read_text())
    with pytest.raises(ConfigError, match="no epoch has completed yet"):
        P.park(empty, tmp_path / "parking")
    with pytest.raises(ConfigError, match="not a fer-train run folder"):
        P.park(tmp_path / "nope", tmp_path / "parking")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)  # fer-train fit stand-in"])
    busy = tmp_path / "busy"
    try:
        shutil.copytree(straight, busy)
        (busy / R.LOCK).write_text(f"{live.pid}\n")
        with pytest.raises(ConfigError, match=f"process {live.pid} is training it"):
            P.park(busy, tmp_path / "parking")
    finally:
        live.kill()
        live.wait()
    assert not (tmp_path / "parking" / "busy").exists()


def test_an_online_distillation_run_carries_its_teacher_files(tiny, tmp_path, monkeypatch):
    """--kd-online reads the teachers on every step, so parking carries their files and unpark puts them back."""
    from fer_train import models as M

    (tmp_path / "teachers").mkdir()
    t_file = tmp_path / "teachers" / "t.keras"  # a single-file teacher (any model of the data's labels)
    keras.utils.set_random_seed(0)
    M.build_model("edgenet_s", (48, 48), 7, width=0.5).save(t_file)
    online = {**SETTINGS, "teacher": str(t_file), "kd_online": True}
    straight = F.run_fit(F.FitConfig(data=str(tiny), out=str(tmp_path / "straight"), name="o", **online))
    assert not (straight / "teacher_targets.npy").exists()  # nothing cached: the teacher scores every batch

    runs = tmp_path / "runs"
    run = stopped_after_two_epochs(F.FitConfig(data=str(tiny), out=str(runs), name="o", **online), monkeypatch)
    parked = P.park(run, tmp_path / "parking", log=lambda s: None)
    manifest = json.loads((parked / P.MANIFEST).read_text())
    assert [t["path"] for t in manifest["teachers"]] == [str(t_file)]
    assert (parked / manifest["teachers"][0]["stored"]).is_file()

    # a different file where the teacher was: refused, nothing unparked
    shutil.rmtree(runs)
    t_file.write_bytes(b"another model")
    with pytest.raises(ConfigError, match="not the teacher file the run was trained with"):
        P.unpark(parked, runs, log=lambda s: None)
    assert not (runs / "o").exists()
    # the new machine has no teacher: unpark puts it back, and the resume ends like the straight run
    t_file.unlink()
    lines = []
    P.unpark(parked, runs, log=lines.append)
    assert t_file.is_file() and any("teacher file" in line and "put back" in line for line in lines)
    F.run_fit(F.resume_config(run, verbose=0), resume_dir=run)
    assert_same_state(straight, run)

    # where the repository holds that exact teacher file (a shipped model, in any commit), the park refers to
    # its git blob instead of copying it
    if shutil.which("git"):
        repo = tmp_path / "repo"
        repo.mkdir()

        def git(*args):
            subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)

        git("init", "-q")
        shutil.copyfile(t_file, repo / "shipped.keras")
        git("add", "shipped.keras")
        git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "a shipped teacher")
        parked = P.park(run, repo / "parking", log=lambda s: None)
        entry = json.loads((parked / P.MANIFEST).read_text())["teachers"][0]
        assert entry["path"] == str(t_file) and "git_blob" in entry and not (parked / "teachers").exists()
        t_file.unlink()
        shutil.rmtree(runs)
        P.unpark(parked, runs, log=lambda s: None)
        assert file_sha256(t_file) == entry["sha256"]


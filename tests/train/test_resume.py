"""`fer-train fit --resume RUN`: a run interrupted (Ctrl-C after an epoch, in the middle of an epoch, or a
process killed outright) and resumed ends with the weights of a run that went straight through."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from click.testing import CliRunner  # noqa: E402

from fer_edge.errors import ConfigError  # noqa: E402
from fer_train import fit as F  # noqa: E402
from fer_train import resume as R  # noqa: E402
from fer_train.cli import cli  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

#: a tiny run that still exercises every piece of state: dropout (seed generators), mixup and flips (the
#: augmentation stream), a warmup + cosine schedule (the optimizer's iteration count), Adam moments, the weight EMA,
#: SWA accumulators, early-stopping counters and the best checkpoint
SETTINGS = dict(model="edgenet_s", width=0.5, epochs=5, batch_size=16, warmup_epochs=1, swa_epochs=3, mixup=0.2, ema=0.9,
                erasing=0.3, blur=0.3, noise=4.0, patience=4, verbose=0)


def state_arrays(run: Path) -> dict[str, np.ndarray]:
    with np.load(run / R.CHECKPOINT) as z:
        return {k: z[k] for k in z.files if k != "meta"}


def meta(run: Path) -> dict:
    with np.load(run / R.CHECKPOINT) as z:
        return json.loads(str(z["meta"]))


def history_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "history.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def assert_same_state(a: Path, b: Path) -> None:
    sa, sb = state_arrays(a), state_arrays(b)
    assert sa.keys() == sb.keys()
    assert any(k.startswith("swa_") for k in sa) and any(k.startswith("opt_") for k in sa)
    for k in sa:
        np.testing.assert_allclose(sa[k].astype(np.float64), sb[k].astype(np.float64), rtol=1e-5, atol=1e-6,
                                   err_msg=k)
    ma, mb = meta(a), meta(b)
    assert ma["epochs_done"] == mb["epochs_done"] and ma["best"] == pytest.approx(mb["best"])
    assert ma["early"] == pytest.approx(mb["early"]) and ma["swa"] == mb["swa"]
    ha, hb = history_rows(a), history_rows(b)
    assert [r["epoch"] for r in ha] == [r["epoch"] for r in hb]
    for ra, rb in zip(ha, hb):
        for k in ("loss", "val_loss", "val_accuracy", "learning_rate"):
            assert float(ra[k]) == pytest.approx(float(rb[k]), rel=1e-5), (k, ra["epoch"])


@pytest.fixture(scope="module")
def straight(tiny, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    return F.run_fit(F.FitConfig(data=str(tiny), out=str(out), name="straight", **SETTINGS))


def test_checkpoint_every_epoch_holds_the_whole_state(straight):
    m = meta(straight)
    assert m["epochs_done"] == 5 and len(m["history"]) == 5 and m["swa"]["count"] == 3
    assert m["ema_in_model"] is True  # --ema: the model variables saved are the averaged ones
    assert m["train_seconds"] > 0
    assert not list(straight.glob(".*.tmp*"))  # the atomic writes left no temporary file
    arrays = state_arrays(straight)
    # the optimizer's iteration count is the schedule's position: 5 epochs x ceil(63 / 16) steps
    assert any(v.shape == () and int(v) == 5 * 4 for k, v in arrays.items() if k.startswith("opt_"))


def test_interrupted_twice_and_resumed_ends_like_a_straight_run(tiny, tmp_path, straight, monkeypatch):
    """Sitting 1: Ctrl-C right after epoch 2. Sitting 2: Ctrl-C in the middle of epoch 4 (its half-done
    work is lost). Sitting 3: to the end. Same weights, optimizer, SWA sums, history as one sitting."""
    original = F._callbacks

    class StopAfterEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    class StopInEpoch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 3 and batch == 1:
                raise KeyboardInterrupt

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

    cfg = F.FitConfig(data=str(tiny), out=str(tmp_path), name="broken", **SETTINGS)
    monkeypatch.setattr(F, "_callbacks", lambda *a, **k: [*original(*a, **k), StopAfterEpoch()])
    run = F.run_fit(cfg)
    assert meta(run)["epochs_done"] == 2
    assert json.loads((run / "metrics.json").read_text())["interrupted"] is True

    monkeypatch.setattr(F, "_callbacks", lambda *a, **k: [*original(*a, **k), StopInEpoch()])
    F.run_fit(F.resume_config(run, verbose=0), resume_dir=run)
    assert meta(run)["epochs_done"] == 3  # epoch 4 did not complete

    monkeypatch.setattr(F, "_callbacks", original)
    F.run_fit(F.resume_config(run, verbose=0), resume_dir=run)
    assert_same_state(straight, run)
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (straight, run))
    assert mb["interrupted"] is False and mb["sittings"] == 3
    assert mb["PublicTest"]["accuracy"] == pytest.approx(ma["PublicTest"]["accuracy"])
    assert mb["best_epoch"] == ma["best_epoch"] and mb["swa"]["chosen"] == ma["swa"]["chosen"]
    assert [r["epochs_done"] for r in json.loads((run / "config.json").read_text())["resumed"]] == [2, 3]


def test_resume_through_the_cli_and_its_errors(tiny, tmp_path, straight):
    runner = CliRunner()
    res = runner.invoke(cli, ["fit", "--resume", str(straight), "--lr", "0.1"])
    assert res.exit_code == 2 and "--resume continues a run" in res.output and "--lr" in res.output
    res = runner.invoke(cli, ["fit", "--resume", str(straight), "-q"])
    assert isinstance(res.exception, ConfigError) and "nothing to resume" in str(res.exception)
    res = runner.invoke(cli, ["fit", "--resume", str(tmp_path / "nope")])
    assert isinstance(res.exception, ConfigError) and "not a fer-train run folder" in str(res.exception)
    # resuming on other data than the run started with is refused
    other = tmp_path / "other.npz"
    with np.load(tiny) as d:
        np.savez(other, **{k: d[k] for k in d.files}, extra=np.zeros(1))
    run = tmp_path / "short"
    (run).mkdir()
    for f in ("config.json", "data.json"):
        (run / f).write_text((straight / f).read_text())
    res = runner.invoke(cli, ["fit", "--resume", str(run), "--data", str(other), "-q"])
    assert isinstance(res.exception, ConfigError) and "not the data the run started on" in str(res.exception)
    # a run folder with no completed epoch starts over in place
    res = runner.invoke(cli, ["fit", "--resume", str(run), "-q"])
    assert res.exit_code == 0, res.output
    assert meta(run)["epochs_done"] == 5
    assert_same_state(straight, run)


def test_ema_is_the_optimizers_polyak_average(tmp_path):
    opt = F._optimizer(F.FitConfig(ema=0.99, optimizer="sgd"), steps_per_epoch=10)
    assert opt.use_ema and opt.ema_momentum == 0.99
    assert not F._optimizer(F.FitConfig(), steps_per_epoch=10).use_ema
    with pytest.raises(ConfigError, match="ema momentum"):
        F.FitConfig(ema=1.0).validate()


def test_a_run_folder_has_one_trainer_at_a_time(tmp_path, straight):
    """--resume of a run another live process is training is refused (two writers would interleave
    checkpoints); a lock left by a process that died is taken over."""
    assert not (straight / R.LOCK).exists()  # released when the run ended
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)  # fer-train fit stand-in"])
    try:
        for f in ("config.json", "data.json"):
            (tmp_path / f).write_text((straight / f).read_text())
        (tmp_path / R.LOCK).write_text(f"{live.pid}\n")
        with pytest.raises(ConfigError, match=f"being trained by process {live.pid}"):
            R.claim_run(tmp_path)
        res = CliRunner().invoke(cli, ["fit", "--resume", str(tmp_path)])
        assert isinstance(res.exception, ConfigError) and "being trained" in str(res.exception)
    finally:
        live.kill()
        live.wait()
    R.claim_run(tmp_path)  # the owner is gone: taken over
    assert int((tmp_path / R.LOCK).read_text()) == os.getpid()
    R.release_run(tmp_path)
    assert not (tmp_path / R.LOCK).exists()


def test_a_corrupt_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / R.CHECKPOINT).write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="not a readable fer-train checkpoint"):
        R.load_state(tmp_path)
    assert R.load_state(tmp_path / "empty") is None


@pytest.mark.slow
def test_a_killed_process_resumes(tiny, tmp_path):
    """SIGKILL (no Ctrl-C handler, no final metrics) after the first checkpoint; --resume finishes the run."""
    run = tmp_path / "killed"
    args = [sys.executable, "-m", "fer_train.fit", "--data", str(tiny), "--model", "edgenet_s", "--width", "0.5",
            "--epochs", "12", "--batch-size", "16", "--out", str(tmp_path), "--name", "killed", "-q", "--patience", "0"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if (run / R.CHECKPOINT).is_file() and meta(run)["epochs_done"] >= 2:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    done = meta(run)["epochs_done"]
    assert 2 <= done < 12 and not (run / "metrics.json").exists()
    res = CliRunner().invoke(cli, ["fit", "--resume", str(run), "-q"])
    assert res.exit_code == 0, res.output
    assert meta(run)["epochs_done"] == 12
    assert len(history_rows(run)) == 12
    m = json.loads((run / "metrics.json").read_text())
    assert m["epochs_run"] == 12 and m["sittings"] == 2

"""Exact resume of `fer-train fit` (`--resume RUN`): the state of a run after its last completed epoch.

After every epoch `EpochCheckpoint` writes `<run>/last_epoch.npz`, atomically (a temporary file in the
run folder, then `os.replace`), so a Ctrl-C, a killed process or a machine that went away leaves the
previous complete state or the new one, never half of one. It holds, as plain arrays (no pickle):

* every model variable (weights, BatchNorm statistics, the dropout seed generators' state),
* every optimizer variable (moments, the iteration count, which is the cosine schedule's position,
  and the learning rate that ReduceLROnPlateau may have lowered),
* the SWA accumulator (running sum, count, total weight) when --swa-epochs is on; with --ema the
  optimizer variables hold the weight EMA too (and `meta` says which copy the model variables hold),
* `meta`, a JSON string: epochs done, the best PublicTest accuracy so far (model.keras is that epoch),
  the early-stopping and plateau counters, whether early stopping fired, and the history rows.

The augmentation and shuffling stream needs no state: `augment.TrainBatches` draws every random number
of an epoch from a generator seeded by (seed, epoch, ...), so epoch k+1 after a resume is the epoch
k+1 of a run that never stopped. A resumed run therefore ends with the weights of an uninterrupted one
(float round-off aside): tests/train/test_resume.py checks it.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from fer_edge.errors import ConfigError

CHECKPOINT = "last_epoch.npz"
FORMAT = 1


def checkpoint_path(run: str | os.PathLike) -> Path:
    return Path(run) / CHECKPOINT


def _values(variables) -> list[np.ndarray]:
    import keras

    return [np.asarray(keras.ops.convert_to_numpy(v.value if hasattr(v, "value") else v)) for v in variables]


def optimizer_variables(model) -> list:
    """The optimizer's variables, created now if training has not built them yet (a fresh resume)."""
    opt = model.optimizer
    if not opt.built:
        opt.build(model.trainable_variables)
    return list(opt.variables)


def save_state(run: str | os.PathLike, model, meta: dict[str, Any], average=None) -> Path:
    """Write the run's state after an epoch, atomically (see the module docstring)."""
    path = checkpoint_path(run)
    arrays: dict[str, np.ndarray] = {}
    for i, v in enumerate(_values(model.variables)):
        arrays[f"model_{i:04d}"] = v
    for i, v in enumerate(_values(optimizer_variables(model))):
        arrays[f"opt_{i:04d}"] = v
    meta = {**meta, "format": FORMAT, "n_model": len(model.variables), "n_opt": len(model.optimizer.variables),
            "swa": None}
    if average is not None and average.count:
        for i, s in enumerate(average._sum):
            arrays[f"swa_{i:04d}"] = s
        meta["swa"] = {"count": average.count, "total_weight": average.total_weight, "n": len(average._sum)}
    arrays["meta"] = np.array(json.dumps(meta))
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def load_state(run: str | os.PathLike) -> dict[str, Any] | None:
    """The last complete state of a run (None when no epoch completed yet)."""
    path = checkpoint_path(run)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            state = {"meta": meta,
                     "model": [z[f"model_{i:04d}"] for i in range(meta["n_model"])],
                     "opt": [z[f"opt_{i:04d}"] for i in range(meta["n_opt"])],
                     "swa": [z[f"swa_{i:04d}"] for i in range(meta["swa"]["n"])] if meta.get("swa") else None}
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"{path}: not a readable fer-train checkpoint ({type(exc).__name__}: {exc})") from None
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{path}: checkpoint format {meta.get('format')} is not {FORMAT}")
    return state


def restore_state(model, state: dict[str, Any], average=None) -> None:
    """Put a saved state into a freshly built and compiled model (same config, same architecture)."""
    variables = list(model.variables)
    opt_vars = optimizer_variables(model)
    if len(variables) != len(state["model"]) or len(opt_vars) != len(state["opt"]):
        raise ConfigError("the checkpoint does not fit this model/optimizer (was the run's config.json edited?)")
    for v, value in zip([*variables, *opt_vars], [*state["model"], *state["opt"]]):
        if tuple(v.shape) != tuple(value.shape):
            raise ConfigError(f"checkpoint variable {v.path} has shape {value.shape}, the model {tuple(v.shape)}")
        v.assign(value.astype(v.dtype) if hasattr(value, "astype") else value)
    swa = state["meta"].get("swa")
    if average is not None and swa:
        average._sum = [np.asarray(s, np.float64).copy() for s in state["swa"]]
        average.count = int(swa["count"])
        average.total_weight = float(swa["total_weight"])


def write_history(path: str | os.PathLike, rows: list[dict[str, float]]) -> None:
    """history.csv as keras' CSVLogger writes it ("epoch", then the sorted log keys), from saved rows: a
    resumed run drops any row of an epoch that ended after the last checkpoint."""
    import csv

    path = Path(path)
    if not rows:
        path.unlink(missing_ok=True)
        return
    keys = sorted(k for k in rows[0] if k != "epoch")
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["epoch", *keys])
        for row in rows:
            w.writerow([int(row["epoch"]), *(row.get(k, "NA") for k in keys)])
    os.replace(tmp, path)


def epoch_checkpoint(run: Path, average=None, best=None, early=None, plateau=None, state=None, ema_swap=None):
    """The callback that saves the state after every epoch (put it last: it records what the other
    callbacks did that epoch) and, on a resume, gives them back their counters after they reset."""
    import keras

    meta0 = (state or {}).get("meta", {})

    class EpochCheckpoint(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.rows: list[dict[str, float]] = list(meta0.get("history", []))
            self.stopped_early = False

        def on_train_begin(self, logs=None):
            self.t0 = time.time()
            if not meta0:
                return
            if best is not None:
                best.best = meta0["best"]
            if ema_swap is not None:  # the saved model variables are the EMA ones: swap back at the next epoch
                ema_swap._ema_weights_in_model = bool(meta0.get("ema_in_model"))
            if early is not None and meta0.get("early"):
                for k, v in meta0["early"].items():
                    setattr(early, k, v)
            if plateau is not None and meta0.get("plateau"):
                for k, v in meta0["plateau"].items():
                    setattr(plateau, k, v)

        def on_epoch_end(self, epoch, logs=None):
            row = {"epoch": int(epoch)}
            row.update({k: float(v) for k, v in (logs or {}).items()})
            self.rows.append(row)
            self.stopped_early = bool(self.model.stop_training)
            meta = {"epochs_done": epoch + 1, "best": best.best if best is not None else None,
                    "history": self.rows, "stopped_early": self.stopped_early,
                    "train_seconds": meta0.get("train_seconds", 0.0) + time.time() - self.t0,
                    "ema_in_model": bool(ema_swap is not None and ema_swap._ema_weights_in_model),
                    "early": ({"wait": early.wait, "best": _num(early.best), "best_epoch": early.best_epoch}
                              if early is not None else None),
                    "plateau": ({"wait": plateau.wait, "best": _num(plateau.best),
                                 "cooldown_counter": plateau.cooldown_counter} if plateau is not None else None)}
            save_state(run, self.model, meta, average)

    return EpochCheckpoint()


def _num(v):
    return None if v is None else float(v)


# --------------------------------------------------------------------------- one process per run folder
LOCK = ".fit.pid"


def _live_owner(run: Path) -> int | None:
    """The pid of another live process training `run` (its lock file), else None (no lock, our own, or the
    process is gone: a killed run leaves a stale lock that the next sitting takes over)."""
    try:
        pid = int((Path(run) / LOCK).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if pid == os.getpid() or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():  # a recycled pid of an unrelated program is not an owner
        try:
            text = cmdline.read_bytes()
        except OSError:
            return pid
        if text and b"fer" not in text and b"fit" not in text and b"pytest" not in text:
            return None
    return pid


def claim_run(run: str | os.PathLike) -> None:
    """Refuse a run folder that another live fer-train process is training (two writers would interleave
    their checkpoints); otherwise record this process as its trainer."""
    run = Path(run)
    other = _live_owner(run)
    if other is not None:
        raise ConfigError(f"{run} is being trained by process {other} right now: let it finish, or stop it "
                          f"(kill {other}) and then --resume")
    tmp = run / f".{LOCK}.tmp"
    tmp.write_text(f"{os.getpid()}\n")
    os.replace(tmp, run / LOCK)


def release_run(run: str | os.PathLike) -> None:
    path = Path(run) / LOCK
    try:
        if int(path.read_text().split()[0]) == os.getpid():
            path.unlink()
    except (OSError, ValueError, IndexError):
        pass


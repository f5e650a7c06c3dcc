"""`fer-train tune`: keras-tuner Bayesian optimisation over the v2 family, chosen on PublicTest.

Search space (v2 layout: 3 x (conv-BN-ReLU x2, maxpool, dropout), dense, dropout, softmax):
  filters          first block's filters (then x2, x4): 32 | 48 | 64
  conv_dropout     0.1 .. 0.4
  dense_units      128 | 256 | 512
  dropout          head dropout 0.2 .. 0.6
  lr               1e-4 .. 3e-3 (log), Adam
  label_smoothing  0 .. 0.2
Objective: val_accuracy on PublicTest. Training uses the same host-side augmentation as `fit`.
The result folder holds the tuner's trials, `best_hyperparameters.json`, `trials.csv` and
`best_command.txt`: a ready-to-run `fer-train fit ...` line with the best values.
"""
from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import shlex
from pathlib import Path
from typing import Any

import click
import numpy as np

from fer_edge.contract import write_json_atomic
from fer_edge.errors import ConfigError, ModelError


@dataclasses.dataclass
class TuneConfig:
    data: str | None = None
    max_trials: int = 5
    epochs: int = 3
    batch_size: int = 64
    max_train_rows: int | None = None
    seed: int = 0
    out: str = "runs"
    name: str | None = None
    augment: bool = True
    verbose: int = 1


def build_hypermodel(input_size, num_classes):
    """A keras-tuner build function over the v2 family."""
    import keras

    from .models import build_v2

    def build(hp):
        model = build_v2(
            input_size, num_classes,
            filters=hp.Choice("filters", [32, 48, 64]),
            conv_dropout=hp.Float("conv_dropout", 0.1, 0.4, step=0.05),
            dense_units=hp.Choice("dense_units", [128, 256, 512]),
            dropout=hp.Float("dropout", 0.2, 0.6, step=0.1),
        )
        model.compile(
            optimizer=keras.optimizers.Adam(hp.Float("lr", 1e-4, 3e-3, sampling="log")),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=hp.Float("label_smoothing", 0.0, 0.2, step=0.05)),
            metrics=["accuracy"],
        )
        return model

    return build


def fit_command_for(best: dict[str, Any], data: str | None) -> str:
    """The `fer-train fit` line that trains the chosen hyper-parameters for real."""
    args = ["fer-train", "fit", "--model", "v2"]
    if data:
        args += ["--data", str(data)]
    args += ["--model-opt", f"filters={best['filters']}", "--model-opt", f"conv_dropout={best['conv_dropout']:.2f}",
             "--model-opt", f"dense_units={best['dense_units']}", "--dropout", f"{best['dropout']:.2f}",
             "--lr", f"{best['lr']:.2e}", "--label-smoothing", f"{best['label_smoothing']:.2f}"]
    return " ".join(shlex.quote(a) for a in args)


def run_tune(cfg: TuneConfig) -> Path:
    import keras
    import keras_tuner as kt

    from .augment import AugmentConfig, TrainBatches
    from .data import load_training_data, resolve_data_path, targets_of

    if cfg.max_trials < 1 or cfg.epochs < 1:
        raise ConfigError("max trials and epochs must be >= 1")
    keras.utils.set_random_seed(cfg.seed)
    data_path = resolve_data_path(cfg.data)
    ds = load_training_data(data_path)
    train, public = ds.split("Training"), ds.split("PublicTest")
    if cfg.max_train_rows and cfg.max_train_rows < len(train):
        rng = np.random.default_rng(cfg.seed)
        train = train.subset(np.sort(rng.choice(len(train), cfg.max_train_rows, replace=False)))
    out = Path(cfg.out) / (cfg.name or f"tune-v2-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)

    class BayesianOptimization(kt.BayesianOptimization):
        # keras-tuner imports tensorboard under the TF backend even without a TensorBoard callback
        # (tensorflow-cpu no longer ships it): only do its TensorBoard set-up when one is used.
        def _configure_tensorboard_dir(self, callbacks, trial, execution=0):
            if any(cb.__class__.__name__ == "TensorBoard" for cb in callbacks):
                super()._configure_tensorboard_dir(callbacks, trial, execution)

    tuner = BayesianOptimization(
        build_hypermodel(ds.input_size, len(ds.labels)),
        objective=kt.Objective("val_accuracy", direction="max"),
        max_trials=cfg.max_trials, seed=cfg.seed, directory=str(out), project_name="tuner", overwrite=True,
    )
    batches = TrainBatches(train.x, targets_of(train), cfg.batch_size, AugmentConfig(enabled=cfg.augment), seed=cfg.seed)
    tuner.search(batches, validation_data=(public.x[..., None].astype(np.float32), targets_of(public)),
                 epochs=cfg.epochs, verbose=cfg.verbose)

    trials = sorted(tuner.oracle.trials.values(), key=lambda t: int(t.trial_id))
    rows = []
    for t in trials:
        score = t.score if t.score is not None else float("nan")
        rows.append({"trial": t.trial_id, **t.hyperparameters.values, "public_val_accuracy": score, "status": t.status})
    with open(out / "trials.csv", "w", newline="") as fh:
        fields = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("trial",), k))
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    best_hp = tuner.get_best_hyperparameters(1)[0].values
    best_trial = tuner.oracle.get_best_trials(1)[0]
    if best_trial.score is None:
        raise ModelError(f"no tuning trial finished (see {out / 'tuner'})")
    command = fit_command_for(best_hp, cfg.data)
    write_json_atomic(out / "best_hyperparameters.json", {
        "hyperparameters": best_hp, "public_val_accuracy": best_trial.score, "objective": "val_accuracy (PublicTest)",
        "epochs_per_trial": cfg.epochs, "max_trials": cfg.max_trials, "train_rows": len(train),
        "data": str(data_path), "backend": keras.backend.backend(), "fit_command": command,
    })
    (out / "best_command.txt").write_text(command + "\n")
    click.echo("best hyper-parameters (PublicTest val_accuracy "
               f"{best_trial.score:.4f}): " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                         for k, v in best_hp.items()))
    click.echo(f"train it: {command}")
    click.echo(f"tune folder: {out}")
    keras.backend.clear_session()
    return out


@click.command("tune")
@click.option("--data", envvar="FER_DATA", default=None, help="Default: $FER_DATA, else ../shared/data/fer2013.npz.")
@click.option("--max-trials", type=int, default=TuneConfig.max_trials, show_default=True)
@click.option("--epochs", type=int, default=TuneConfig.epochs, show_default=True, help="Epochs per trial.")
@click.option("--batch-size", type=int, default=TuneConfig.batch_size, show_default=True)
@click.option("--max-train-rows", type=int, default=None, help="Subsample Training for quicker trials.")
@click.option("--seed", type=int, default=TuneConfig.seed, show_default=True)
@click.option("--out", default=TuneConfig.out, show_default=True)
@click.option("--name", default=None, help="Result folder name (default tune-v2-<timestamp>).")
@click.option("--augment/--no-augment", default=True, show_default=True)
@click.option("-q", "--quiet", is_flag=True)
def tune_cmd(quiet, **kw) -> None:
    """Bayesian search over the v2 family (keras-tuner), objective PublicTest accuracy."""
    run_tune(TuneConfig(verbose=0 if quiet else 1, **kw))

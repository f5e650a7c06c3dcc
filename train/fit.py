"""`fer-train fit`: train one model (or a small grid of them) on Training, choose on PublicTest,
report PrivateTest once. Reads top to bottom: config -> data -> targets -> model -> callbacks ->
fit -> best checkpoint -> final metrics. All settings live in `FitConfig`.

The run folder (`<out>/<name>`, default name `<model>-<YYYYmmdd-HHMMSS>`) ends up holding:
  config.json   FitConfig + model name, params, MACs, keras version and backend
  model.keras   the epoch with the best PublicTest accuracy (or, with --swa-epochs, the weight average of
                the last epochs when that scores higher on PublicTest; then also best_epoch.keras)
  swa.keras     with --swa-epochs: the weight average, BatchNorm re-estimated (swa.py)
  history.csv   per epoch: loss, accuracy (augmented Training), val_loss, val_accuracy (PublicTest), lr
  metrics.json  best epoch, PublicTest metrics of the best checkpoint, and PrivateTest (the reported
                split), evaluated once at the end
  data.json     data path, sha256, format, counts per split and class
  last_epoch.npz  the whole training state after the last completed epoch, written atomically every epoch:
                `fer-train fit --resume RUN` continues from it exactly (resume.py)
  teacher_targets.npy  with --teacher: the teachers' softened probabilities (a resume reuses them)

Settings come from the flags, or from a recipe (`--recipe NAME`, recipes.py: train/recipes/NAME.toml) that
the flags given override; config.json records the recipe's name and sha256.

Targets are always float distributions (one-hot, FER+ vote shares, teacher mixes, mixup mixes),
the loss is categorical cross-entropy (with optional label smoothing).

Knowledge distillation (`--teacher`, repeatable): the teacher (a run folder or .keras file) predicts
every Training face once before training (averaged with its mirror image by default); with several
teachers their probabilities are averaged first (an ensemble, distilled into one edge model, so the
device runs one network); the probabilities are softened with the temperature T (p_i^(1/T),
renormalised == softmax(logits / T)) and mixed with the labels:
target = (1 - kd_alpha) * label + kd_alpha * teacher. Augmented views of a face keep the teacher
target of the clean face. Simple, backend-agnostic, and costs one inference pass.
`--kd-online` instead has the teachers score every augmented batch, the very views the student sees
(Beyer et al. 2022, "consistent teaching": a zoomed, rotated, erased or runtime-cropped face is not
as clear as the clean one, and the teacher says how unclear); it costs the teachers' inference on every
step (int8 .tflite teachers are the cheap ones) and needs the teacher files on every resume (park.py
carries them).

Runtime views (`--runtime-views FILE|auto`, runtime_views.py): a Training face is shown, with probability
`--runtime-view-p`, as the runtime's own crop of it (BlazeFace + alignment on a camera-like frame), with the
face's own targets; the face stage's crops differ from FER2013's framing more than any clean-crop augmentation.

Keras and the models are imported inside functions so `fer-train --help` stays fast.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import itertools
import json
import math
import os
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from fer_edge.contract import write_json_atomic
from fer_edge.errors import ConfigError, DataError

# one way down (data -> models -> scoring -> swa -> fit): the data helpers live in data.py; these names
# stay importable from here for callers of the earlier layout
from .data import (  # noqa: F401
    DEFAULT_DATA_CANDIDATES, balanced_class_weights, data_summary, load_training_data, resolve_data_path,
    targets_of,
)

DEFAULT_GRID = "lr=1e-3,3e-4;dropout=0.2,0.4"
PRECISIONS = ("auto", "float32", "mixed_bfloat16")


@dataclasses.dataclass
class FitConfig:
    # data
    data: str | None = None                 # .npz / .csv / image folder; None -> $FER_DATA -> ../shared/data/fer2013.npz
    ferplus_votes: str | None = None        # ferplus_votes.npz: train on FER+ vote distributions (8 classes)
    skip_bad: bool = False                  # skip malformed rows/images instead of failing
    max_train_rows: int | None = None       # random subsample of Training (smoke runs)
    max_eval_rows: int | None = None        # smoke runs only: subsample PublicTest/PrivateTest (recorded in metrics)
    # model
    model: str = "edgenet"
    dropout: float | None = None            # None -> the builder's default
    width: float | None = None              # width multiplier (edgenet*) / alpha (mobilenetv2)
    model_opts: dict[str, Any] = dataclasses.field(default_factory=dict)
    pretrained: bool = False                # mobilenetv2 only: ImageNet weights (needs network once)
    init_from: str | None = None            # warm start: run folder / .keras whose same-named, same-shaped layers are copied
    # optimisation
    epochs: int = 60
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"                 # adam | adamw | sgd (Nesterov, momentum 0.9)
    weight_decay: float = 1e-4              # adamw and sgd
    momentum: float = 0.9
    schedule: str = "cosine"                # cosine (with warmup) | plateau (on PublicTest accuracy) | none
    warmup_epochs: int = 2
    label_smoothing: float = 0.0
    class_weights: bool = False             # 'balanced' weights as per-sample weights
    patience: int = 15                      # early stopping on PublicTest accuracy; 0 = off
    # augmentation (host side, see augment.py)
    augment: bool = True
    flip: bool = True
    shift: float = 0.1
    rotation: float = 10.0
    zoom: float = 0.1
    erasing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    blur: float = 0.0                       # runtime-crop variation (augment.py): blur probability,
    brightness: float = 0.0                 # brightness shift (fraction of 255), contrast change,
    contrast: float = 0.0                   # JPEG round-trip probability, sensor-noise sigma (grey levels)
    jpeg: float = 0.0
    noise: float = 0.0
    # the runtime's own crops of Training faces (runtime_views.py, `fer-train runtime-views`): a face that has
    # views is shown as one of them with this probability, then augmented like any face. "auto": the views file
    # of this data in `out`, made on first use (config.json records the file)
    runtime_views: str | None = None
    runtime_view_p: float = 0.5
    # knowledge distillation
    teacher: str | list[str] | None = None  # one run/.keras, or several (an ensemble: probabilities averaged)
    kd_alpha: float = 0.5
    kd_temperature: float = 2.0
    kd_flip: bool = True
    kd_online: bool = False                 # the teachers score each augmented batch instead of each clean face once
                                            # (kd_flip then does not apply: the augmentation flips the faces)
    # weight averaging (swa.py): mean of the weights at the end of the last N epochs, BatchNorm
    # re-estimated; it becomes model.keras only if it beats the best single epoch on PublicTest
    swa_epochs: int = 0
    # the SWA phase's learning rate: with it, the schedule (cosine or none) spans the epochs before the last
    # swa_epochs, which run at this constant rate (Izmailov et al.'s SWA learning rate). 0 = average the
    # schedule's own last epochs (where a cosine is near 0 and the averaged weights barely differ)
    swa_lr: float = 0.0
    # weight EMA (Polyak averaging) per optimizer step with this momentum, e.g. 0.999; 0 = off. Validation,
    # the best checkpoint and SWA then use the averaged weights (keras' use_ema + SwapEMAWeights)
    ema: float = 0.0
    # run
    seed: int = 0
    out: str = "runs"
    name: str | None = None
    jit_compile: bool = False               # TF backend: XLA measured 0.36x the default's images/s here; JAX always jits
    # compute precision of the training step: auto = mixed_bfloat16 under TensorFlow on a CPU with AMX-BF16
    # (with the fused BatchNorm, 2.05-2.16x the images/s of the float32 step here: train_speed.py), float32
    # elsewhere. Saved models are float32 either way. config.json records what auto resolved to.
    precision: str = "auto"
    steps_per_execution: int = 1
    workers: int = 1                        # augmentation threads
    threads: int | None = None              # TensorFlow intra-op threads (None: all cores)
    recipe: str | None = None               # the recipe the settings came from (train/recipes/<name>.toml)
    recipe_sha256: str | None = None        # of that recipe file
    verbose: int = 1
    eval_private: bool = True               # grid trials leave PrivateTest for the chosen trial only

    def validate(self) -> None:
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch size must be >= 1"),
            (self.lr > 0, "learning rate must be > 0"),
            (self.optimizer in ("adam", "adamw", "sgd"), f"optimizer must be adam, adamw or sgd, not {self.optimizer!r}"),
            (self.schedule in ("cosine", "plateau", "none"), f"schedule must be cosine, plateau or none, not {self.schedule!r}"),
            (0 <= self.label_smoothing < 1, "label smoothing must be in [0, 1)"),
            (0 <= self.kd_alpha <= 1, "kd alpha must be in [0, 1]"),
            (self.kd_temperature > 0, "kd temperature must be > 0"),
            (not self.kd_online or bool(self.teacher), "--kd-online needs --teacher"),
            (self.mixup >= 0 and self.cutmix >= 0, "mixup / cutmix alpha must be >= 0"),
            (0 <= self.erasing <= 1, "erasing is a probability in [0, 1]"),
            (self.max_train_rows is None or self.max_train_rows >= 1, "max train rows must be >= 1"),
            (self.max_eval_rows is None or self.max_eval_rows >= 1, "max eval rows must be >= 1"),
            (self.dropout is None or 0 <= self.dropout < 1, "dropout must be in [0, 1)"),
            (0 <= self.swa_epochs <= self.epochs, "swa epochs must be in [0, epochs]"),
            (self.swa_lr >= 0, "swa lr must be >= 0"),
            (not self.swa_lr or 0 < self.swa_epochs < self.epochs,
             "--swa-lr needs --swa-epochs between 1 and epochs - 1 (the phase follows the schedule)"),
            (not self.swa_lr or self.schedule != "plateau", "--swa-lr goes with the cosine or none schedule, not plateau"),
            (0 <= self.blur <= 1 and 0 <= self.jpeg <= 1, "blur / jpeg are probabilities in [0, 1]"),
            (0 <= self.brightness <= 1 and 0 <= self.contrast < 1, "brightness must be in [0, 1], contrast in [0, 1)"),
            (self.noise >= 0, "noise sigma must be >= 0"),
            (0 <= self.runtime_view_p <= 1, "runtime view p is a probability in [0, 1]"),
            (self.threads is None or self.threads >= 1, "threads must be >= 1"),
            (self.warmup_epochs >= 0, "warmup epochs must be >= 0"),
            (0 <= self.ema < 1, "ema momentum must be in [0, 1)"),
            (self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)


def teachers_of(teacher: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """FitConfig.teacher as a list (a single teacher is stored as a plain string)."""
    if not teacher:
        return []
    return [teacher] if isinstance(teacher, str) else list(teacher)


class Teachers:
    """The teachers of a run, loaded once: their averaged probabilities on any batch of faces, softened with
    the kd temperature T (p_i^(1/T), renormalised == softmax(logits / T)). A lock lets augmentation threads
    (`--workers`) share the interpreters."""

    def __init__(self, teacher: str | list[str], num_classes: int, temperature: float, batch_size: int = 256):
        from .scoring import load_keras_model, predict_probs

        self.names, self.temperature, self._predict = teachers_of(teacher), float(temperature), []
        for name in self.names:
            if str(name).endswith(".tflite"):  # any contract model file, int8 included
                n_out, predict = _tflite_teacher(name)
            else:
                model = load_keras_model(name)
                n_out = int(model.output_shape[-1])
                predict = (lambda faces, progress=False, model=model:  # noqa: E731
                           predict_probs(model, faces, batch_size=batch_size))
            if n_out != num_classes:
                raise ConfigError(f"teacher {name} has {n_out} outputs, the data has {num_classes} labels")
            self._predict.append(predict)
        self._lock = threading.Lock()

    def __call__(self, faces: np.ndarray, flip: bool = False, progress: bool = False) -> np.ndarray:
        """(N, H, W) raw 0..255 faces -> (N, C) float32 targets; `flip` averages each face with its mirror."""
        faces = np.asarray(faces)
        with self._lock:
            qs = [predict(faces, progress=progress) for predict in self._predict]
            if flip:
                qs = [0.5 * (q + predict(faces[:, :, ::-1], progress=progress)) for q, predict in zip(qs, self._predict)]
        logp = np.log(np.clip(np.mean(qs, axis=0), 1e-8, 1.0)) / self.temperature
        logp -= logp.max(axis=1, keepdims=True)
        q = np.exp(logp)
        return (q / q.sum(axis=1, keepdims=True)).astype(np.float32)


def teacher_targets(teacher: str | list[str], x: np.ndarray, num_classes: int, temperature: float, flip: bool,
                    batch_size: int = 256) -> np.ndarray:
    """The teachers' (averaged) softened probabilities on clean Training faces (see the module docstring)."""
    return Teachers(teacher, num_classes, temperature, batch_size)(x, flip=flip, progress=True)


def _tflite_teacher(path: str):
    """A .tflite teacher's label count and its *trained* probabilities: softmax of the logits its final
    SOFTMAX reads (dequantised for int8: finer than its 1/256 output steps), with any calibration
    temperature taken back out (a softmax beta set in place, or T folded into the last Dense, as its card
    says). Why: a shipped file is calibrated (`fer-convert --temperature`), and --kd-temperature must
    soften what the teacher learnt, whether or not it has been calibrated since."""
    from fer_convert.tflite_graph import TfliteLogits
    from fer_edge import contract

    card = contract.load_card_for(path)
    logits = TfliteLogits(path, labels=card.labels if card is not None else None)
    # TfliteLogits applies the file's softmax beta; the trained logits are those times T folded into the Dense
    scale = (card.temperature_in_weights(Path(path).name) if card is not None else 1.0) / logits.beta

    def predict(faces: np.ndarray, progress: bool = False) -> np.ndarray:
        z = logits(faces, progress=progress) * scale
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    return len(logits.labels), predict


# --------------------------------------------------------------------------- warm start
def init_from_run(model, source: str, faces: np.ndarray | None = None) -> dict[str, list[str]]:
    """Copy weights from another run's model into `model`, layer by layer, where name and shapes match.

    Why: continuing a schedule (more epochs from a finished run) and transfer (a FER2013 backbone under a
    FER+ 8-class head) are the cheapest accuracy on a CPU. Layers that differ (the 7- vs 8-way head, a
    wider block) keep their fresh initialisation and are listed, so the user sees what was carried.
    `source` may be a float32 .tflite with its card (a shipped model): `faces` (Training) then give its
    rebuilt BatchNorms real statistics, and a calibration temperature folded into it is taken back out
    (from_tflite.py).
    """
    from .scoring import load_keras_model

    src = {layer.name: layer for layer in load_keras_model(source, faces=faces, as_trained=True).layers}
    copied, fresh = [], []
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        other = src.get(layer.name)
        theirs = other.get_weights() if other is not None else []
        if len(theirs) == len(weights) and all(a.shape == b.shape for a, b in zip(weights, theirs)):
            layer.set_weights(theirs)
            copied.append(layer.name)
        else:
            fresh.append(layer.name)
    if not copied:
        raise ConfigError(f"--init-from {source}: no layer matches this model by name and shape "
                          f"(is it the same architecture?)")
    return {"copied": copied, "fresh": fresh}


def _source_hashes(sources) -> dict[str, str]:
    """sha256 of the model files a run starts from or learns from (a shipped .tflite is replaced when a
    better model ships: the hash says which one this run used)."""
    from fer_edge.contract import file_sha256

    return {str(s): file_sha256(s) for s in sources if s and Path(s).is_file()}


# --------------------------------------------------------------------------- run folder
def make_run_dir(cfg: FitConfig) -> Path:
    name = cfg.name or f"{cfg.model}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    run = Path(cfg.out) / name
    candidate, i = run, 1
    while candidate.exists() and any(candidate.iterdir()):
        i += 1
        candidate = run.with_name(f"{run.name}-{i}")
    candidate.mkdir(parents=True, exist_ok=True)
    return candidate


def _model_opts(cfg: FitConfig) -> dict[str, Any]:
    from .models import model_options

    return model_options(cfg.model, dropout=cfg.dropout, width=cfg.width, model_opts=cfg.model_opts,
                         pretrained=cfg.pretrained)


# --------------------------------------------------------------------------- keras pieces
def _optimizer(cfg: FitConfig, steps_per_epoch: int):
    import keras

    lr: Any = cfg.lr
    # with --swa-lr the schedule ends where the SWA phase (the last swa_epochs, at a constant rate) begins
    schedule_epochs = cfg.epochs - cfg.swa_epochs if cfg.swa_lr else cfg.epochs
    if cfg.schedule == "cosine":
        total = max(1, schedule_epochs * steps_per_epoch)
        warm = min(cfg.warmup_epochs * steps_per_epoch, total // 2)
        lr = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=cfg.lr / 10 if warm else cfg.lr, decay_steps=max(1, total - warm),
            alpha=0.01, warmup_target=cfg.lr if warm else None, warmup_steps=warm)
    if cfg.swa_lr:
        lr = then_constant(lr, boundary_step=schedule_epochs * steps_per_epoch, value=cfg.swa_lr)
    ema = {"use_ema": True, "ema_momentum": cfg.ema} if cfg.ema else {}
    if cfg.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=lr, **ema)
    if cfg.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate=lr, weight_decay=cfg.weight_decay, **ema)
    return keras.optimizers.SGD(learning_rate=lr, momentum=cfg.momentum, nesterov=True,
                                weight_decay=cfg.weight_decay or None, **ema)


def then_constant(first, boundary_step: int, value: float):
    """A learning-rate schedule: `first` (a schedule or a number) before optimizer step `boundary_step`,
    `value` from there on. A function of the step alone, so a resumed run continues it exactly."""
    import keras

    @keras.saving.register_keras_serializable(package="fer_train")
    class ThenConstant(keras.optimizers.schedules.LearningRateSchedule):
        def __init__(self, first, boundary_step, value):
            self.first, self.boundary_step, self.value = first, int(boundary_step), float(value)

        def __call__(self, step):
            before = self.first(step) if callable(self.first) else self.first
            before = keras.ops.cast(before, "float32")
            return keras.ops.where(keras.ops.less(keras.ops.cast(step, "int64"), self.boundary_step),
                                   before, keras.ops.cast(self.value, "float32"))

        def get_config(self):
            first = (keras.optimizers.schedules.serialize(self.first)
                     if isinstance(self.first, keras.optimizers.schedules.LearningRateSchedule) else self.first)
            return {"first": first, "boundary_step": self.boundary_step, "value": self.value}

        @classmethod
        def from_config(cls, config):
            first = config["first"]
            if isinstance(first, dict):
                first = keras.optimizers.schedules.deserialize(first)
            return cls(first, config["boundary_step"], config["value"])

    return ThenConstant(first, boundary_step, value)


def _callbacks(cfg: FitConfig, run: Path, average=None, state=None):
    """The epoch-end callbacks, in order: learning rate into the logs, history.csv, the best PublicTest
    checkpoint (model.keras, written atomically), early stopping, the plateau schedule, SWA, and last the
    resume checkpoint (resume.py), which records what all of them did that epoch."""
    import keras

    from . import models as M
    from .resume import epoch_checkpoint
    from .swa import swa_callback

    class LogLearningRate(keras.callbacks.Callback):
        """Put the learning rate of the epoch into the logs (before CSVLogger writes them)."""

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                lr = self.model.optimizer.learning_rate
                logs["learning_rate"] = float(keras.ops.convert_to_numpy(lr))

    class BestCheckpoint(keras.callbacks.Callback):
        """model.keras = the epoch with the highest PublicTest accuracy so far (temp file + os.replace)."""

        def __init__(self):
            super().__init__()
            self.best = -np.inf

        def on_epoch_end(self, epoch, logs=None):
            current = (logs or {}).get("val_accuracy")
            if current is not None and current > self.best:
                self.best = float(current)
                tmp = run / ".model.tmp.keras"
                M.float32_twin(self.model).save(tmp)
                os.replace(tmp, run / "model.keras")

    best = BestCheckpoint()
    # with --ema: the averaged weights are in the model for validation and from each epoch's end to the next
    # epoch's start (so the checkpoints, SWA and the resume state see them); training steps use the raw ones
    swap = keras.callbacks.SwapEMAWeights(swap_on_epoch=True) if cfg.ema else None
    cbs = [*([swap] if swap else []), LogLearningRate(),
           keras.callbacks.CSVLogger(str(run / "history.csv"), append=state is not None), best]
    early = plateau = None
    if cfg.patience > 0:
        early = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=cfg.patience,
                                              restore_best_weights=False, verbose=1)
        cbs.append(early)
    if cfg.schedule == "plateau":
        plateau = keras.callbacks.ReduceLROnPlateau(monitor="val_accuracy", mode="max", factor=0.5,
                                                    patience=max(2, cfg.patience // 3 if cfg.patience else 4),
                                                    min_lr=cfg.lr / 100, verbose=1)
        cbs.append(plateau)
    if average is not None:
        cbs.append(swa_callback(average, first_epoch=cfg.epochs - cfg.swa_epochs))
    cbs.append(epoch_checkpoint(run, average=average, best=best, early=early, plateau=plateau, state=state,
                                ema_swap=swap))
    return cbs


def _set_threads(threads: int | None, log) -> None:
    """TensorFlow's intra-op threads (the only knob that matters for these small convs); inter-op 1."""
    if not threads:
        return
    import keras

    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialised in this process (tests, a grid): keep what it has
        if tf.config.threading.get_intra_op_parallelism_threads() != int(threads):
            log(f"note: TensorFlow already runs with "
                f"{tf.config.threading.get_intra_op_parallelism_threads() or 'all'} threads; --threads {threads} ignored")


def cpu_flags() -> set[str]:
    """The CPU feature flags Linux reports (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def resolve_precision(precision: str, model: str | None = None) -> tuple[str, str]:
    """(policy, why) for FitConfig.precision. auto picks bfloat16 only where it was measured to pay:
    TensorFlow on a CPU whose matrix unit does bfloat16 (AMX-BF16), with no GPU in use, for an
    architecture whose bfloat16 step is the faster one (models.ModelSpec.bfloat16_pays)."""
    if precision != "auto":
        return precision, "asked for"
    import keras

    from .models import MODEL_SPECS

    if model in MODEL_SPECS and not MODEL_SPECS[model].bfloat16_pays:
        return "float32", f"auto: a bfloat16 step was measured slower for {model}"

    if keras.backend.backend() != "tensorflow":
        return "float32", f"auto: the {keras.backend.backend()} backend"
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return "float32", "auto: a GPU is in use"
    if "amx_bf16" in cpu_flags():
        return "mixed_bfloat16", "auto: this CPU has AMX-BF16"
    return "float32", "auto: this CPU has no AMX-BF16"


# --------------------------------------------------------------------------- the run
def run_fit(cfg: FitConfig, resume_dir: str | os.PathLike | None = None) -> Path:
    """Train one model as configured; returns the run folder. With `resume_dir` (a run folder made by an
    earlier call with this same cfg: see `resume_config`), continue it from its last completed epoch.
    While it trains, the run folder is claimed by this process (resume.claim_run): a second `--resume` of
    it is refused until this one ends, whatever way it ends."""
    import keras

    from .resume import release_run

    claimed: list[Path] = []
    policy = keras.mixed_precision.global_policy().name
    try:
        return _run_fit(cfg, resume_dir, claimed)
    finally:
        keras.mixed_precision.set_global_policy(policy)  # a bfloat16 run leaves the process as it found it
        for run in claimed:
            release_run(run)


def _run_fit(cfg: FitConfig, resume_dir, claimed: list[Path]) -> Path:
    import keras

    from . import models as M
    from .augment import AugmentConfig, TrainBatches
    from .resume import claim_run, load_state, restore_state, write_history
    from .scoring import evaluate_model, load_keras_model
    from .swa import WeightAverage

    cfg.validate()
    log = (lambda *a: click.echo(" ".join(str(x) for x in a))) if cfg.verbose else (lambda *a: None)
    _set_threads(cfg.threads, log)
    cfg.precision, why = resolve_precision(cfg.precision, cfg.model)
    keras.mixed_precision.set_global_policy(cfg.precision)
    keras.utils.set_random_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    run_dir = Path(resume_dir) if resume_dir is not None else None
    if run_dir is not None and run_dir.is_dir():
        claim_run(run_dir)  # not while another process trains it
        claimed.append(run_dir)
    state = load_state(run_dir) if run_dir is not None else None
    done = state["meta"]["epochs_done"] if state else 0
    if run_dir is not None and (run_dir / "metrics.json").is_file() and state and (
            done >= cfg.epochs or state["meta"].get("stopped_early")):
        raise ConfigError(f"{run_dir} has finished ({done} of {cfg.epochs} epochs"
                          f"{', stopped early' if state['meta'].get('stopped_early') else ''}): nothing to resume")

    # ---- data: fit on Training, choose on PublicTest, report PrivateTest
    data_path = resolve_data_path(cfg.data)
    ds = load_training_data(data_path, cfg.ferplus_votes, cfg.skip_bad)
    train, public, private = ds.split("Training"), ds.split("PublicTest"), ds.split("PrivateTest")
    if len(train) == 0 or len(public) == 0:
        raise DataError(f"{data_path}: needs Training and PublicTest rows (has {len(train)} and {len(public)})")
    if cfg.max_train_rows and cfg.max_train_rows < len(train):
        train = train.subset(np.sort(rng.choice(len(train), cfg.max_train_rows, replace=False)))
    if cfg.max_eval_rows:  # smoke runs: fewer PublicTest/PrivateTest rows (metrics.json says so)
        public, private = (p.subset(np.sort(rng.choice(len(p), cfg.max_eval_rows, replace=False)))
                           if len(p) > cfg.max_eval_rows else p for p in (public, private))
    num_classes = len(ds.labels)

    # ---- targets (float distributions) and per-sample weights
    y_train = targets_of(train)
    online = None
    if cfg.teacher and cfg.kd_online:  # the teachers score every augmented batch (TrainBatches)
        log(f"distillation, online: teacher(s) {', '.join(teachers_of(cfg.teacher))} score every augmented batch "
            f"(alpha {cfg.kd_alpha}, T {cfg.kd_temperature})")
        online = Teachers(cfg.teacher, num_classes, cfg.kd_temperature)
    elif cfg.teacher:
        cached = run_dir / "teacher_targets.npy" if run_dir is not None else None
        if cached is not None and cached.is_file() and np.load(cached).shape == y_train.shape:
            soft = np.load(cached)
            log(f"distillation: teacher targets of {len(train)} Training faces from {cached}")
        else:
            log(f"distillation: teacher(s) {', '.join(teachers_of(cfg.teacher))} predict {len(train)} Training faces "
                f"(alpha {cfg.kd_alpha}, T {cfg.kd_temperature}, flip-averaged {cfg.kd_flip})")
            soft = teacher_targets(cfg.teacher, train.x, num_classes, cfg.kd_temperature, cfg.kd_flip)
        y_train = (1 - cfg.kd_alpha) * y_train + cfg.kd_alpha * soft
    sample_weight = None
    if cfg.class_weights:
        cw = balanced_class_weights(train.y, num_classes)
        sample_weight = (y_train * cw[None, :]).sum(axis=1) if train.soft is not None else cw[train.y]
        log("class weights:", dict(zip(ds.labels, np.round(cw, 3).tolist())))

    # ---- model
    model = M.build_model(cfg.model, ds.input_size, num_classes, **_model_opts(cfg))
    params, macs = M.count_params(model), M.count_macs(model)
    init = init_from_run(model, cfg.init_from, train.x) if cfg.init_from and state is None else None
    if init:
        log(f"init from {cfg.init_from}: {len(init['copied'])} layers copied, "
            f"fresh: {', '.join(init['fresh']) or 'none'}")
    views = None
    if cfg.runtime_views:
        from .runtime_views import AUTO_SEED, AUTO_VIEWS, auto_views_path, load_runtime_views, make_runtime_views

        if cfg.runtime_views == "auto":  # the recipes: made once per data file, then reused by every run
            cfg.runtime_views = str(auto_views_path(cfg.out, ds.sha256))
        auto = Path(cfg.runtime_views).name == auto_views_path(".", ds.sha256).name
        if auto and not Path(cfg.runtime_views).is_file():  # first use, or a resume on a new machine (park.py)
            jobs = max(1, min(AUTO_VIEWS, cfg.threads or os.cpu_count() or 1))  # as many cores as training gets
            log(f"runtime views: none yet for this data; making {cfg.runtime_views} (once: 12-17 minutes "
                f"per view for FER2013 on one core here, {jobs} view(s) at a time)")
            make_runtime_views(str(data_path), cfg.runtime_views, views=AUTO_VIEWS, seed=AUTO_SEED, jobs=jobs,
                               log=log)
        views, views_meta = load_runtime_views(cfg.runtime_views, train, ds.sha256, cfg.runtime_view_p)
        log(f"runtime views: {len(views.crops)} crops of {len(np.unique(views.owner))} Training faces from "
            f"{cfg.runtime_views} ({views_meta.get('detector')}), each shown with p {cfg.runtime_view_p}")
    batches = TrainBatches(
        train.x, y_train, cfg.batch_size, seed=cfg.seed, sample_weight=sample_weight, workers=cfg.workers, views=views,
        teacher=online, kd_alpha=cfg.kd_alpha,
        augment=AugmentConfig(enabled=cfg.augment, flip=cfg.flip, shift=cfg.shift, rotation=cfg.rotation,
                              zoom=cfg.zoom, erasing=cfg.erasing, mixup=cfg.mixup, cutmix=cfg.cutmix,
                              blur=cfg.blur, brightness=cfg.brightness, contrast=cfg.contrast, jpeg=cfg.jpeg,
                              noise=cfg.noise))
    batches.set_epoch(done)  # the augmentation/shuffle stream of epoch `done`, as if never stopped
    model.compile(
        optimizer=_optimizer(cfg, len(batches)),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
        metrics=["accuracy"],
        jit_compile=bool(cfg.jit_compile) if keras.backend.backend() == "tensorflow" else "auto",
        steps_per_execution=cfg.steps_per_execution,
    )

    # ---- run folder: config and data first, so an interrupted run still says what it was
    average = WeightAverage() if cfg.swa_epochs else None
    if run_dir is not None:
        run = run_dir
        recorded = json.loads((run / "data.json").read_text()).get("sha256") if (run / "data.json").is_file() else None
        if recorded and ds.sha256 and recorded != ds.sha256:
            raise ConfigError(f"--resume {run}: {data_path} is not the data the run started on "
                              f"(sha256 {ds.sha256[:12]}, data.json says {recorded[:12]})")
        if (run / "best_epoch.keras").is_file():  # an interrupted sitting made the SWA model.keras: undo it
            os.replace(run / "best_epoch.keras", run / "model.keras")
        write_history(run / "history.csv", state["meta"]["history"] if state else [])
        if state:
            restore_state(model, state, average)
        config = json.loads((run / "config.json").read_text())
        config.setdefault("resumed", []).append(
            {"at": _dt.datetime.now().isoformat(timespec="seconds"), "epochs_done": done,
             # what this sitting runs with where it differs from the start (--precision, --threads, --workers)
             **{k: getattr(cfg, k) for k, start in (("precision", "float32"), ("threads", None), ("workers", 1))
                if getattr(cfg, k) != config.get(k, start)}})
        config["precision"] = cfg.precision  # the next resume computes as this sitting does
        write_json_atomic(run / "config.json", config)
        log(f"resuming {run} after epoch {done} of {cfg.epochs}"
            + (f" (best PublicTest acc so far {state['meta']['best']:.4f})" if state else " (no epoch had completed)"))
    else:
        run = make_run_dir(cfg)
        claim_run(run)
        claimed.append(run)
    if run_dir is None:
        config = {**dataclasses.asdict(cfg), "data": str(data_path), "run_dir": str(run),
                  "model_name": cfg.model, "params": params, "macs": macs, "input_size": list(ds.input_size),
                  "labels": list(ds.labels), "num_classes": num_classes, "train_rows": len(train),
                  "keras_version": keras.__version__, "backend": keras.backend.backend(),
                  "python": platform.python_version(), "numpy": np.__version__,
                  "init": ({"source": cfg.init_from, "fresh_layers": init["fresh"], "copied_layers": len(init["copied"])}
                           if init else None),
                  "source_files_sha256": _source_hashes([cfg.init_from, *teachers_of(cfg.teacher), cfg.runtime_views])}
        write_json_atomic(run / "config.json", config)
        write_json_atomic(run / "data.json", {**data_summary(ds), "train_rows_used": len(train)})
    if cfg.teacher and not cfg.kd_online and not (run / "teacher_targets.npy").is_file():  # a resume reuses them, no new predictions
        with open(run / ".teacher_targets.npy.tmp", "wb") as fh:
            np.save(fh, soft)
        os.replace(run / ".teacher_targets.npy.tmp", run / "teacher_targets.npy")
    log(f"run {run}\nmodel {cfg.model}: {params:,} params, {macs / 1e6:.1f} M MACs at "
        f"{ds.input_size[0]}x{ds.input_size[1]}; backend {keras.backend.backend()}; "
        f"{len(train)} Training / {len(public)} PublicTest rows")
    log("config:", json.dumps({k: v for k, v in dataclasses.asdict(cfg).items() if v not in (None, {}, "")}))
    log(f"precision {cfg.precision} ({why}); saved models are float32")

    # ---- fit (Ctrl-C keeps the best checkpoint so far)
    x_val = public.x[..., None].astype(np.float32)
    y_val = targets_of(public)
    t0 = time.time()
    interrupted = False
    finished = state is not None and (done >= cfg.epochs or state["meta"].get("stopped_early"))
    try:
        if not finished:
            model.fit(batches, validation_data=(x_val, y_val), epochs=cfg.epochs, initial_epoch=done, shuffle=False,
                      callbacks=[batches.epoch_callback(), *_callbacks(cfg, run, average, state)],
                      verbose=_progress_mode(cfg.verbose))
    except KeyboardInterrupt:
        interrupted = True
        click.echo(f"\ninterrupted: keeping the best checkpoint so far; continue with: fer-train fit --resume {run}",
                   err=True)
    train_seconds = time.time() - t0 + (state["meta"].get("train_seconds", 0.0) if state else 0.0)

    # ---- final metrics from the best checkpoint
    history = _read_history(run / "history.csv")
    n_epochs = len(history.get("epoch", []))
    if not (run / "model.keras").exists():  # interrupted before the first epoch ended
        M.float32_twin(model).save(run / "model.keras")
    swa = _weight_average(model, average, train, public, run, log) if average is not None else None
    best = load_keras_model(run)
    metrics: dict[str, Any] = {
        "model": cfg.model, "params": params, "macs": macs,
        "epochs_run": n_epochs, "interrupted": interrupted, "train_seconds": round(train_seconds, 1),
        "sittings": 1 + len(config.get("resumed", [])),
        "seconds_per_epoch": round(train_seconds / max(1, n_epochs), 1),
        "best_epoch": (int(np.argmax(history["val_accuracy"])) + 1) if history.get("val_accuracy") else None,
        "epoch_numbering": "1-based (history.csv's 'epoch' column is 0-based)",
        "selection": ("weight average of the last epochs (swa.keras), better than the best epoch on PublicTest"
                      if swa and swa["chosen"] else "best PublicTest accuracy (checkpoint model.keras)"),
        "PublicTest": evaluate_model(best, public),
    }
    if swa:
        metrics["swa"] = swa
    if cfg.max_eval_rows:
        metrics["eval_rows_subsampled"] = {"PublicTest": len(public), "PrivateTest": len(private),
                                           "note": "smoke run: --max-eval-rows, not comparable to full-split figures"}
    if cfg.eval_private and len(private):
        metrics["PrivateTest"] = evaluate_model(best, private)
        metrics["reported"] = {"split": "PrivateTest", "accuracy": metrics["PrivateTest"]["accuracy"],
                               "macro_f1": metrics["PrivateTest"]["macro_f1"],
                               "note": "evaluated once, with the checkpoint chosen on PublicTest"}
    write_json_atomic(run / "metrics.json", metrics)
    pub = metrics["PublicTest"]
    msg = f"best epoch {metrics['best_epoch']}: PublicTest acc {pub['accuracy']:.4f}"
    if "PrivateTest" in metrics:
        msg += f" | PrivateTest acc {metrics['PrivateTest']['accuracy']:.4f} (reported)"
    log(msg)
    click.echo(f"run folder: {run}")
    keras.backend.clear_session()
    return run


def _weight_average(model, average, train, public, run: Path, log) -> dict[str, Any] | None:
    """Put the averaged weights in `model`, re-estimate BatchNorm on Training, save swa.keras, and make it
    model.keras (the best epoch kept as best_epoch.keras) when its PublicTest accuracy is higher."""
    import shutil

    from . import models as M
    from .scoring import evaluate_model, load_keras_model
    from .swa import recompute_batchnorm

    if average.count == 0:  # stopped before the averaging window
        return None
    model.set_weights(average.mean(model.get_weights()))
    faces = recompute_batchnorm(model, train.x)
    averaged = M.float32_twin(model)
    averaged.save(run / "swa.keras")
    swa_acc = evaluate_model(averaged, public)["accuracy"]
    best_acc = evaluate_model(load_keras_model(run / "model.keras"), public)["accuracy"]
    chosen = swa_acc > best_acc
    if chosen:
        shutil.copyfile(run / "model.keras", run / "best_epoch.keras")
        shutil.copyfile(run / "swa.keras", run / "model.keras")
    log(f"weight average of {average.count} epochs (BatchNorm re-estimated on {faces} Training faces): "
        f"PublicTest acc {swa_acc:.4f} vs best epoch {best_acc:.4f} -> "
        f"{'the average' if chosen else 'the best epoch'} is model.keras")
    return {"epochs_averaged": average.count, "batchnorm_faces": faces, "PublicTest_accuracy": swa_acc,
            "best_epoch_PublicTest_accuracy": best_acc, "chosen": chosen}


def _progress_mode(verbose: int) -> int:
    """Keras verbose: the live progress bar on a terminal; one line per epoch when logging to a file."""
    if verbose <= 0:
        return 0
    return 1 if verbose == 1 and sys.stdout.isatty() else 2


def _read_history(path: Path) -> dict[str, list[float]]:
    from .scoring import read_history

    return read_history(path) if path.is_file() and path.stat().st_size else {}


# --------------------------------------------------------------------------- grid search
def parse_grid(spec: str) -> dict[str, list[Any]]:
    """'lr=1e-3,3e-4;dropout=0.2,0.4;batch_size=64' -> {field: [values]} (FitConfig fields)."""
    fields = {f.name: f for f in dataclasses.fields(FitConfig)}
    grid: dict[str, list[Any]] = {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        if "=" not in part:
            raise ConfigError(f"grid entry {part!r} is not KEY=V1,V2,...")
        key, values = (s.strip() for s in part.split("=", 1))
        key = key.replace("-", "_")
        if key not in fields:
            raise ConfigError(f"grid key {key!r} is not a fit setting")
        grid[key] = [_parse_value(v.strip()) for v in values.split(",") if v.strip()]
        if not grid[key]:
            raise ConfigError(f"grid key {key!r} has no values")
    if not grid:
        raise ConfigError("empty grid")
    return grid


def _parse_value(v: str) -> Any:
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(v.lower(), v)


def run_grid(base: FitConfig, spec: str) -> Path:
    """Fit every point of the grid (PublicTest picks the best), then report PrivateTest for the best."""
    import csv

    grid = parse_grid(spec)
    keys = list(grid)
    gname = base.name or f"{base.model}-grid-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    gdir = Path(base.out) / gname
    gdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, values in enumerate(itertools.product(*(grid[k] for k in keys)), start=1):
        point = dict(zip(keys, values))
        tag = "-".join(f"{k}{v}" for k, v in point.items())
        cfg = dataclasses.replace(base, out=str(gdir), name=f"trial{i:02d}-{tag}", eval_private=False, **point)
        click.echo(f"\n=== grid trial {i}: {point}")
        run = run_fit(cfg)
        m = json.loads((run / "metrics.json").read_text())
        rows.append({"trial": i, **point, "public_accuracy": m["PublicTest"]["accuracy"],
                     "public_loss": m["PublicTest"]["loss"], "best_epoch": m["best_epoch"], "run": str(run)})
        with open(gdir / "grid.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    best = max(rows, key=lambda r: r["public_accuracy"])
    best_run = Path(best["run"])
    summary: dict[str, Any] = {"grid": grid, "best": best, "chosen_on": "PublicTest accuracy"}
    ds = load_training_data(resolve_data_path(base.data), base.ferplus_votes, base.skip_bad)
    private = ds.split("PrivateTest")
    if len(private):
        import keras

        from .scoring import evaluate_model, load_keras_model

        pm = evaluate_model(load_keras_model(best_run), private)
        summary["best_PrivateTest"] = {"accuracy": pm["accuracy"], "macro_f1": pm["macro_f1"], "loss": pm["loss"]}
        m = json.loads((best_run / "metrics.json").read_text())
        m["PrivateTest"] = pm
        m["reported"] = {"split": "PrivateTest", "accuracy": pm["accuracy"], "macro_f1": pm["macro_f1"],
                         "note": "grid winner on PublicTest; PrivateTest evaluated once"}
        write_json_atomic(best_run / "metrics.json", m)
        keras.backend.clear_session()
    write_json_atomic(gdir / "grid_best.json", summary)
    click.echo(f"\ngrid results: {gdir / 'grid.csv'}")
    click.echo(f"best (PublicTest acc {best['public_accuracy']:.4f}): "
               + ", ".join(f"{k}={best[k]}" for k in keys)
               + (f" | PrivateTest acc {summary['best_PrivateTest']['accuracy']:.4f}" if "best_PrivateTest" in summary else ""))
    click.echo(f"grid folder: {gdir}")
    return gdir


# --------------------------------------------------------------------------- resume
def resume_config(run: str | os.PathLike, data: str | None = None, workers: int | None = None,
                  threads: int | None = None, verbose: int = 1, precision: str | None = None) -> FitConfig:
    """The FitConfig a run folder was started with (its config.json), to continue it with run_fit."""
    run = Path(run)
    cfg_path = run / "config.json"
    if not run.is_dir() or not cfg_path.is_file():
        raise ConfigError(f"--resume {run}: not a fer-train run folder (no config.json)")
    try:
        recorded = json.loads(cfg_path.read_text())
    except ValueError as exc:
        raise ConfigError(f"{cfg_path}: not valid JSON ({exc})") from None
    if recorded.get("soup"):
        raise ConfigError(f"--resume {run}: a soup is not a training run")
    names = {f.name for f in dataclasses.fields(FitConfig)}
    values = {k: v for k, v in recorded.items() if k in names}
    values.setdefault("precision", "float32")  # runs from before the setting existed computed in float32
    values.update(out=str(run.parent), name=run.name, verbose=verbose)
    if data is not None:
        values["data"] = data
    if workers is not None:
        values["workers"] = workers
    if threads is not None:
        values["threads"] = threads
    if precision is not None:  # e.g. a long float32 run continued in bfloat16 on a CPU that has AMX
        values["precision"] = precision
    cfg = FitConfig(**values)
    cfg.validate()
    return cfg


# --------------------------------------------------------------------------- CLI
def _kv(ctx, param, values) -> dict[str, Any]:
    out = {}
    for item in values:
        if "=" not in item:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE")
        k, v = item.split("=", 1)
        if "," in v:
            out[k.strip()] = tuple(_parse_value(s.strip()) for s in v.split(","))
        else:
            out[k.strip()] = _parse_value(v.strip())
    return out


@click.command("fit")
@click.option("--data", envvar="FER_DATA", default=None,
              help="fer2013.npz / fer2013.csv / image folder. Default: $FER_DATA, else ../shared/data/fer2013.npz.")
@click.option("--ferplus-votes", default=None, help="ferplus_votes.npz: train on FER+ vote distributions (8 classes).")
@click.option("--skip-bad", is_flag=True, help="Skip malformed rows/images instead of failing.")
@click.option("--model", "model_name", default=FitConfig.model, show_default=True, help="Architecture (see `fer-train models`).")
@click.option("--dropout", type=float, default=None, help="Head dropout (default: the model's own).")
@click.option("--width", type=float, default=None, help="Width multiplier (edgenet*), alpha (mobilenetv2).")
@click.option("--model-opt", "model_opts", multiple=True, callback=_kv, metavar="KEY=VALUE",
              help="Extra builder option, e.g. --model-opt depths=1,2,2,1 (repeatable).")
@click.option("--pretrained", is_flag=True, help="mobilenetv2: ImageNet weights (downloads once; never needed).")
@click.option("--init-from", default=None, metavar="RUN",
              help="Warm start from a run folder, a .keras file or a float32 .tflite with its model card (e.g. "
                   "models/fer_default_float32.tflite): layers with the same name and shapes are copied "
                   "(continue a schedule, fine-tune a shipped model, or put a FER2013 backbone under a FER+ head).")
@click.option("--epochs", type=int, default=FitConfig.epochs, show_default=True)
@click.option("--batch-size", type=int, default=FitConfig.batch_size, show_default=True)
@click.option("--lr", type=float, default=FitConfig.lr, show_default=True, help="Peak learning rate.")
@click.option("--optimizer", type=click.Choice(["adam", "adamw", "sgd"]), default=FitConfig.optimizer, show_default=True)
@click.option("--weight-decay", type=float, default=FitConfig.weight_decay, show_default=True, help="adamw / sgd.")
@click.option("--schedule", type=click.Choice(["cosine", "plateau", "none"]), default=FitConfig.schedule, show_default=True,
              help="cosine with warmup, or halve on a PublicTest plateau.")
@click.option("--warmup-epochs", type=int, default=FitConfig.warmup_epochs, show_default=True)
@click.option("--label-smoothing", type=float, default=FitConfig.label_smoothing, show_default=True)
@click.option("--mixup", type=float, default=FitConfig.mixup, show_default=True, metavar="ALPHA", help="0 = off.")
@click.option("--cutmix", type=float, default=FitConfig.cutmix, show_default=True, metavar="ALPHA", help="0 = off.")
@click.option("--augment/--no-augment", default=True, show_default=True, help="Host-side augmentation.")
@click.option("--flip/--no-flip", default=True, show_default=True)
@click.option("--shift", type=float, default=FitConfig.shift, show_default=True, help="Max shift, fraction of size.")
@click.option("--rotation", type=float, default=FitConfig.rotation, show_default=True, help="Max rotation, degrees.")
@click.option("--zoom", type=float, default=FitConfig.zoom, show_default=True, help="Max zoom in/out, fraction.")
@click.option("--erasing", type=float, default=FitConfig.erasing, show_default=True, help="Random-erasing probability.")
@click.option("--blur", type=float, default=FitConfig.blur, show_default=True,
              help="Probability of a Gaussian blur (sigma 0.3-1.2 px): runtime-crop variation.")
@click.option("--brightness", type=float, default=FitConfig.brightness, show_default=True,
              help="Max brightness shift, fraction of 255.")
@click.option("--contrast", type=float, default=FitConfig.contrast, show_default=True,
              help="Max contrast change: factor in [1-c, 1+c].")
@click.option("--jpeg", type=float, default=FitConfig.jpeg, show_default=True,
              help="Probability of a JPEG round trip at quality 30-90.")
@click.option("--noise", type=float, default=FitConfig.noise, show_default=True,
              help="Max sigma of Gaussian noise, grey levels.")
@click.option("--runtime-views", default=None, metavar="FILE",
              help="Train also on the runtime's own crops of Training faces (made by `fer-train runtime-views`): "
                   "BlazeFace + alignment on camera-like frames, as the pipeline cuts faces out. 'auto': this "
                   "data's views file in --out, made on first use (25-35 min for FER2013 on one core).")
@click.option("--runtime-view-p", type=float, default=FitConfig.runtime_view_p, show_default=True, metavar="P",
              help="With --runtime-views: the probability that a face is shown as one of its views.")
@click.option("--class-weights", is_flag=True, help="Balanced class weights (as per-sample weights).")
@click.option("--patience", type=int, default=FitConfig.patience, show_default=True, help="Early stopping on PublicTest accuracy; 0 = off.")
@click.option("--teacher", multiple=True, help="Knowledge distillation: teacher run folder, .keras file or any "
              "contract .tflite (int8 too, e.g. models/fer_default_int8.tflite); repeat for an ensemble "
              "(probabilities averaged).")
@click.option("--kd-alpha", type=float, default=FitConfig.kd_alpha, show_default=True, help="Weight of the teacher's targets.")
@click.option("--kd-temperature", type=float, default=FitConfig.kd_temperature, show_default=True)
@click.option("--kd-online/--kd-fixed", default=FitConfig.kd_online, show_default=True,
              help="--kd-online: the teachers score every augmented batch, the views the student sees (consistent "
                   "teaching; costs their inference on every step: int8 .tflite teachers are the cheap ones, and a "
                   "resume needs the teacher files, which `fer-train park` carries). --kd-fixed: each clean Training "
                   "face once, before training (cached in the run folder).")
@click.option("--swa-epochs", type=int, default=FitConfig.swa_epochs, show_default=True, metavar="N",
              help="Average the weights of the last N epochs (SWA; BatchNorm re-estimated); kept as model.keras "
                   "only if it beats the best single epoch on PublicTest. 0 = off.")
@click.option("--swa-lr", type=float, default=FitConfig.swa_lr, show_default=True, metavar="LR",
              help="The SWA phase: the last --swa-epochs run at this constant learning rate, after the schedule "
                   "(which then spans the epochs before them). 0 = average the schedule's own last epochs.")
@click.option("--ema", type=float, default=FitConfig.ema, show_default=True, metavar="MOMENTUM",
              help="Exponential moving average of the weights per step (e.g. 0.999), used for validation, the "
                   "best checkpoint and SWA. 0 = off.")
@click.option("--max-train-rows", type=int, default=None, help="Subsample Training (smoke runs).")
@click.option("--max-eval-rows", type=int, default=None, help="Subsample PublicTest/PrivateTest (smoke runs only).")
@click.option("--seed", type=int, default=FitConfig.seed, show_default=True)
@click.option("--out", default=FitConfig.out, show_default=True, help="Parent folder of run folders.")
@click.option("--name", default=None, help="Run folder name (default <model>-<timestamp>).")
@click.option("--jit-compile/--no-jit-compile", default=FitConfig.jit_compile, show_default=True,
              help="XLA under TensorFlow (slower on CPU here; JAX always compiles).")
@click.option("--precision", type=click.Choice(PRECISIONS), default=FitConfig.precision, show_default=True,
              help="Compute precision of training steps. auto: mixed_bfloat16 under TensorFlow on a CPU with "
                   "AMX-BF16 (~2x faster here, same accuracy: benchmarks/train_speed.py), else float32; float32 "
                   "for mobilenetv2, whose bfloat16 step is slower. "
                   "Saved models are float32 either way. With --resume: change a run's precision from here on.")
@click.option("--steps-per-execution", type=int, default=FitConfig.steps_per_execution, show_default=True)
@click.option("--workers", type=int, default=FitConfig.workers, show_default=True, help="Augmentation threads.")
@click.option("--threads", type=int, default=None, help="TensorFlow intra-op threads (default: all cores).")
@click.option("--recipe", default=None, metavar="NAME",
              help="Settings from a recipe: train/recipes/NAME.toml (see `fer-train recipes`) or a .toml file; "
                   "flags given here override it; config.json records its name and sha256.")
@click.option("--resume", "resume", default=None, metavar="RUN",
              help="Continue an interrupted run folder from its last completed epoch, with its own settings "
                   "(only --data, --workers, --threads, --precision and -q may be given with it).")
@click.option("--grid", default=None, is_flag=False, flag_value=DEFAULT_GRID, metavar="SPEC",
              help=f"Grid search over fit settings, chosen on PublicTest; SPEC like '{DEFAULT_GRID}' (the default when no SPEC is given).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def fit_command(ctx, model_name, model_opts, grid, quiet, recipe, resume, **kw) -> None:
    """Train a model: fit on Training, keep the best PublicTest epoch, report PrivateTest once."""
    from click.core import ParameterSource

    given = {name for name in ctx.params
             if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
    if resume:
        extra = given - {"resume", "quiet", "workers", "threads", "data", "precision"}
        if extra:
            raise click.UsageError("--resume continues a run with the settings in its config.json; drop "
                                   + ", ".join("--" + n.replace("_", "-").replace("model-name", "model") for n in sorted(extra)))
        cfg = resume_config(resume, data=kw["data"] if "data" in given else None,
                            workers=kw["workers"] if "workers" in given else None,
                            threads=kw["threads"] if "threads" in given else None, verbose=0 if quiet else 1,
                            precision=kw["precision"] if "precision" in given else None)
        run_fit(cfg, resume_dir=resume)
        return
    teacher = kw.pop("teacher")
    kw["teacher"] = None if not teacher else teacher[0] if len(teacher) == 1 else list(teacher)
    cfg = FitConfig(model=model_name, model_opts=model_opts, verbose=0 if quiet else 1, **kw)
    if recipe:
        from .recipes import apply_recipe

        fields = {"model_name": "model"}
        cfg, info = apply_recipe(cfg, recipe, {fields.get(n, n) for n in given})
        if cfg.verbose:
            overridden = sorted(given - {"data", "out", "name", "quiet", "recipe", "threads", "workers"})
            click.echo(f"recipe {info['name']} v{info['version']} ({info['path']}, sha256 {info['sha256'][:12]})"
                       + (f"; overridden here: {', '.join('--' + n.replace('_', '-') for n in overridden)}"
                          if overridden else ""))
    cfg.validate()
    if grid:
        run_grid(cfg, grid)
    else:
        run_fit(cfg)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(fit_command())

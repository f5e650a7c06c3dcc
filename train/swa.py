"""Weight averaging: SWA over the last epochs of a run (`fer-train fit --swa-epochs N`) and a
"model soup" of finished runs of one architecture (`fer-train soup`).

Why: averaging the weights of models from one basin (the epochs of a run, or warm restarts of one
run) lands nearer the flat centre of that basin and generalises better, at no cost on the device:
it is still one network of the same size. The averaged BatchNorm statistics are not the statistics
of the averaged network, so they are recomputed from Training faces afterwards (Izmailov et al.
2018, "Averaging Weights Leads to Wider Optima and Better Generalization").
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


class WeightAverage:
    """A running (weighted) mean of a model's weight list (float64, so many small updates stay exact)."""

    def __init__(self) -> None:
        self.count = 0
        self.total_weight = 0.0
        self._sum: list[np.ndarray] | None = None

    def add(self, weights: Sequence[np.ndarray], weight: float = 1.0) -> None:
        if self._sum is None:
            self._sum = [weight * np.asarray(w, np.float64) for w in weights]
        else:
            if len(weights) != len(self._sum) or any(np.shape(w) != s.shape for w, s in zip(weights, self._sum)):
                raise ValueError("weight lists differ in shape: not the same architecture")
            for s, w in zip(self._sum, weights):
                s += weight * np.asarray(w, np.float64)
        self.count += 1
        self.total_weight += weight

    def mean(self, like: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The average, cast back to the dtypes of `like` (the model's own weight list)."""
        if not self.count or self._sum is None:
            raise ValueError("nothing averaged yet")
        return [(s / self.total_weight).astype(np.asarray(w).dtype) for s, w in zip(self._sum, like)]


def batchnorm_layers(model) -> list:
    import keras

    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        elif hasattr(layer, "layers"):  # a nested model (e.g. a Keras Applications backbone)
            found.extend(batchnorm_layers(layer))
    return found


def recompute_batchnorm(model, x_uint8: np.ndarray, max_faces: int = 8192, batch_size: int = 128,
                        seed: int = 0) -> int:
    """Reset every BatchNorm layer's moving mean/variance and re-estimate them on `x_uint8` (N, H, W).

    The momentum of batch k is k/(k+1), so the moving statistics end as the plain mean over batches.
    Returns the number of faces used (0 when the model has no BatchNorm).
    """
    bns = batchnorm_layers(model)
    if not bns or not len(x_uint8):
        return 0
    idx = np.random.default_rng(seed).permutation(len(x_uint8))[:max_faces]
    momenta = [layer.momentum for layer in bns]
    for layer in bns:
        layer.moving_mean.assign(np.zeros(layer.moving_mean.shape, "float32"))
        layer.moving_variance.assign(np.ones(layer.moving_variance.shape, "float32"))
    try:
        for k, start in enumerate(range(0, len(idx), batch_size)):
            for layer in bns:
                layer.momentum = k / (k + 1)
            model(x_uint8[np.sort(idx[start:start + batch_size])][..., None].astype("float32"), training=True)
    finally:
        for layer, m in zip(bns, momenta):
            layer.momentum = m
    return len(idx)


def swa_callback(average: WeightAverage, first_epoch: int):
    """A Keras callback adding the model's weights to `average` at the end of every epoch >= first_epoch
    (0-based)."""
    import keras

    class SWA(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch >= first_epoch:
                average.add(self.model.get_weights())

    return SWA()


def soup(sources: Sequence[str], x_uint8: np.ndarray | None = None, weights: Sequence[float] | None = None,
         models: Sequence | None = None):
    """Average the weights of several saved models of the same architecture (a uniform soup unless
    `weights` are given), then recompute BatchNorm statistics on `x_uint8` when given. `models`: the
    sources already loaded (run_soup scores them first), else they are loaded here.

    Returns the averaged model (the first source's structure and compile settings)."""
    from fer_edge.errors import ConfigError

    from .scoring import load_keras_model

    if len(sources) < 2:
        raise ConfigError("a soup needs at least two models")
    w = np.asarray(weights if weights is not None else [1.0] * len(sources), np.float64)
    if len(w) != len(sources) or np.any(w < 0) or w.sum() <= 0:
        raise ConfigError("soup weights: one non-negative weight per model, not all zero")
    models = list(models) if models is not None else [load_keras_model(source) for source in sources]
    average = WeightAverage()
    for source, model, wi in zip(sources, models, w):
        try:
            average.add(model.get_weights(), float(wi))
        except ValueError:
            raise ConfigError(f"{source} is not the same architecture as {sources[0]}") from None
    base = models[0]
    base.set_weights(average.mean(base.get_weights()))
    if x_uint8 is not None:
        recompute_batchnorm(base, x_uint8)
    return base


def run_soup(sources: Sequence[str], name: str | None = None, out: str = "runs", weights: Sequence[float] | None = None,
             data: str | None = None, eval_private: bool = True, log=print):
    """`fer-train soup`: average finished runs into a new run folder that fer-convert and fer-train
    evaluate accept like any other. Every ingredient and the soup are scored on PublicTest (the
    choice is the user's, on PublicTest); PrivateTest is reported once for the soup."""
    import datetime as _dt
    import json
    from pathlib import Path

    from fer_edge.contract import write_json_atomic
    from fer_edge.errors import ConfigError

    from .scoring import evaluate_model, load_keras_model, resolve_model_path
    from .data import load_training_data, resolve_data_path

    def recorded_json(source: str, what: str) -> dict:
        """A run's data.json / config.json; a .tflite's model card holds the same (data, training)."""
        path = resolve_model_path(source)
        if path.suffix == ".tflite":
            from fer_edge.contract import load_card_for

            from .from_tflite import card_config

            return card_config(path) if what == "config" else dict(getattr(load_card_for(path), "data", {}) or {})
        f = path.parent / f"{what}.json"
        return json.loads(f.read_text()) if f.is_file() else {}

    infos = [recorded_json(s, "data") for s in sources]
    configs = [recorded_json(s, "config") for s in sources]
    hashes = {i.get("sha256") for i in infos if i.get("sha256")}
    if len(hashes) > 1:
        raise ConfigError("the runs were trained on different data (data.json sha256 differ): "
                          + ", ".join(f"{s}: {i.get('sha256', '?')[:12]}" for s, i in zip(sources, infos)))
    recorded = infos[0].get("path")  # a FER+ run records "fer2013.npz + ferplus_votes.npz" here
    data_path = resolve_data_path(data or configs[0].get("data")
                                  or (recorded if recorded and Path(recorded).exists() else None))
    ds = load_training_data(data_path, configs[0].get("ferplus_votes"))
    train, public, private = ds.split("Training"), ds.split("PublicTest"), ds.split("PrivateTest")
    run = Path(out) / (name or f"soup-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}")
    if run.exists() and any(run.iterdir()):
        raise ConfigError(f"{run} exists and is not empty: choose another --name")
    models, ingredients = [load_keras_model(s, faces=train.x, as_trained=True) for s in sources], []
    for s, m in zip(sources, models):
        acc = evaluate_model(m, public)["accuracy"]
        ingredients.append({"source": str(s), "PublicTest_accuracy": acc})
        log(f"  {s}: PublicTest acc {acc:.4f}")
    model = soup(sources, train.x, weights, models=models)
    run.mkdir(parents=True, exist_ok=True)
    model.save(run / "model.keras")
    w = list(weights) if weights is not None else [1.0] * len(sources)
    config = {**configs[0], "name": run.name, "run_dir": str(run), "out": out,
              "soup": {"sources": [str(s) for s in sources], "weights": w, "batchnorm": "re-estimated on Training"}}
    write_json_atomic(run / "config.json", config)
    write_json_atomic(run / "data.json", infos[0] if infos[0] and not data else
                      {"path": str(data_path), "sha256": ds.sha256})
    metrics = {"model": configs[0].get("model_name", configs[0].get("model")), "params": configs[0].get("params"),
               "macs": configs[0].get("macs"), "selection": "uniform weight average of the sources (a soup)"
               if weights is None else "weighted average of the sources (a soup)",
               "ingredients": ingredients, "PublicTest": evaluate_model(model, public)}
    log(f"soup: PublicTest acc {metrics['PublicTest']['accuracy']:.4f} "
        f"(best ingredient {max(i['PublicTest_accuracy'] for i in ingredients):.4f})")
    if eval_private and len(private):
        metrics["PrivateTest"] = evaluate_model(model, private)
        metrics["reported"] = {"split": "PrivateTest", "accuracy": metrics["PrivateTest"]["accuracy"],
                               "macro_f1": metrics["PrivateTest"]["macro_f1"],
                               "note": "evaluated once; choose between soup and ingredients on PublicTest"}
    write_json_atomic(run / "metrics.json", metrics)
    log(f"run folder: {run}")
    return run

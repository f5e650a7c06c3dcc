"""Rebuild the Keras model behind a float32 .tflite file, so `fer-train` can warm-start from, distil from,
evaluate or soup a shipped model when the run folder that made it is gone (`models/` ships .tflite files
and cards only: a fresh clone has no `runs/`).

Why this is exact: the TFLite converter folds every BatchNorm into the conv before it (kernel * gamma /
sigma plus a bias) and the input Rescaling (x / 255) into the first conv. The architecture named in the
model card is rebuilt, the folded kernels go into its convs, and every BatchNorm is given the statistics
its conv's output really has on Training faces (mean m, variance v) with gamma = sqrt(v + eps) and
beta = m + bias. In inference it then adds the bias and nothing else; in training it normalises by
statistics that already match, so fine-tuning starts where the shipped model is. Without faces the
BatchNorms are plain bias adds (exact for prediction, not meant for training). The rebuilt model is
checked against the TFLite interpreter before it is returned.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from fer_edge import contract
from fer_edge.errors import ModelError

#: largest probability difference allowed between the rebuilt Keras model and the .tflite file
MAX_PROB_DIFF = 1e-4
_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def card_config(path: str | os.PathLike) -> dict[str, Any]:
    """The model card's training config (what `fer-train fit` wrote as config.json), checked for what a
    rebuild needs: the architecture and its options."""
    card = contract.load_card_for(path)
    if card is None:
        raise ModelError(f"{path}: no model card beside it ({contract.card_path_for(path).name}): "
                         "the architecture to rebuild is unknown")
    cfg = dict(card.training or {})
    cfg.setdefault("model_name", cfg.get("model") or card.architecture)
    if not cfg.get("model_name"):
        raise ModelError(f"{path}: its model card names no architecture")
    cfg["input_size"], cfg["labels"] = list(card.input_size), list(card.labels)
    cfg["num_classes"] = len(card.labels)
    return cfg


def _component_names(tensor_name: str) -> set[str]:
    """'edgenet_1/s1b1_1_conv_1/convolution;…' -> {'s1b1_1_conv_1', 's1b1_1_conv', 'convolution', …}."""
    names = set()
    for part in re.split(r"[;/]", tensor_name):
        names.add(part)
        names.add(re.sub(r"_\d+$", "", part))
    return names


def _producer(layer):
    """The layer whose output `layer` takes (functional models only)."""
    history = getattr(layer.input, "_keras_history", None)
    return history.operation if history is not None else None


def keras_from_tflite(path: str | os.PathLike, faces: np.ndarray | None = None, check_faces: int = 256,
                      as_trained: bool = False):
    """Rebuild the Keras model of a float32 .tflite (see the module docstring); `faces` (N, H, W) uint8
    Training faces give BatchNorm its real statistics (needed to train on, not to predict).

    `as_trained`: take a calibration temperature folded into the last Dense (the card says so) back out,
    after the check against the file: the model as its run left it. Why: training on from the file's
    sharpened logits (x 1/T, 2.2 for fer_fast) meets label smoothing and teacher targets at T 2 with a
    large loss, and the first epochs of a fine-tune undo the model instead of adjusting it. A model
    converted again is calibrated again (fer-convert fits its own T).

    Always a float32 model, whatever the process's compute policy: the statistics and the check against
    the file are of the weights, which bfloat16 arithmetic (a training run's `--precision`) would blur by
    ~1e-2. A bfloat16 run copies these weights into its own model (fit.init_from_run)."""
    import keras

    policy = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("float32")
    try:
        model = _rebuild(Path(path), faces, check_faces)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    if as_trained:
        _take_out_temperature(model, Path(path))
    return model


def _take_out_temperature(model, path: Path) -> float:
    """Multiply the last Dense layer by the temperature its card says was folded into it (logits / T)."""
    import keras

    card = contract.load_card_for(path)
    t = card.temperature_in_weights(path.name) if card is not None else 1.0
    if t != 1.0:
        head = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)][-1]
        head.set_weights([w * np.float32(t) for w in head.get_weights()])
    return t


def _rebuild(path: Path, faces: np.ndarray | None, check_faces: int):
    import keras

    from fer_convert.tflite_graph import read_constants, read_graph

    from .models import build_model, model_options

    cfg = card_config(path)
    graph = read_graph(path)
    if any(graph.tensors[i].type != "FLOAT32" for i in graph.inputs):
        raise ModelError(f"{path.name} is not a float32 model (its weights are quantised): give its float32 "
                         "variant (fer-convert --float32 writes <name>_float32.tflite)")
    consts = read_constants(path)
    opts = model_options(cfg["model_name"], dropout=cfg.get("dropout"), width=cfg.get("width"),
                         model_opts=cfg.get("model_opts"))
    model = build_model(cfg["model_name"], cfg["input_size"], cfg["num_classes"], **opts)
    wanted = {layer.name: layer for layer in model.layers
              if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense))}

    # ---- one TFLite op per conv/dense layer, matched by the layer name inside the weight tensor's name
    found: dict[str, tuple[np.ndarray, np.ndarray | None, bool]] = {}
    for op in graph.operators:
        if op.name not in _OPS:
            continue
        w_index = op.inputs[1]
        names = _component_names(graph.tensors[w_index].name) & set(wanted)
        if len(names) != 1:
            raise ModelError(f"{path.name}: cannot tell which layer the weights {graph.tensors[w_index].name!r} "
                             f"belong to (matches: {sorted(names) or 'none'})")
        name = names.pop()
        if name in found or w_index not in consts:
            raise ModelError(f"{path.name}: layer {name} appears twice or has no float weights")
        bias = consts.get(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
        found[name] = (consts[w_index], bias, op.inputs[0] in graph.inputs)
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise ModelError(f"{path.name} is not a {cfg['model_name']} as its card says: no weights for "
                         f"{', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")

    # ---- kernels in, BatchNorm after a conv = its folded bias (exact in inference)
    bn_after = {_producer(layer).name: layer for layer in model.layers
                if isinstance(layer, keras.layers.BatchNormalization) and _producer(layer) is not None}
    for name, (w, b, reads_input) in found.items():
        layer = wanted[name]
        if isinstance(layer, keras.layers.Dense):
            kernel = w.T
        elif isinstance(layer, keras.layers.DepthwiseConv2D):  # (1, kh, kw, C*m) -> (kh, kw, C, m)
            kh, kw, cin, mult = layer.kernel.shape
            kernel = w.reshape(kh, kw, cin, mult)
        else:  # (O, kh, kw, I) -> (kh, kw, I, O)
            kernel = w.transpose(1, 2, 3, 0)
        if tuple(kernel.shape) != tuple(layer.kernel.shape):
            raise ModelError(f"{path.name}: layer {name} holds {tuple(kernel.shape)} weights in the file but "
                             f"{tuple(layer.kernel.shape)} in the {cfg['model_name']} its card describes")
        src = _producer(layer)
        if reads_input and isinstance(src, keras.layers.Rescaling):  # x/255 was folded into this conv
            if np.any(np.asarray(src.offset) != 0):
                raise ModelError(f"{path.name}: an input Rescaling with an offset cannot be unfolded")
            kernel = kernel / np.float32(src.scale)
        bias = np.zeros(kernel.shape[-1], np.float32) if b is None else b
        bn = bn_after.get(name)
        if bn is not None:
            layer.set_weights([kernel.astype(np.float32)] + ([np.zeros_like(bias)] if layer.use_bias else []))
            eps = float(bn.epsilon)
            bn.set_weights([np.ones_like(bias), bias, np.zeros_like(bias), np.full_like(bias, 1.0 - eps)])
        elif layer.use_bias:
            layer.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
        else:
            if np.any(np.abs(bias) > 1e-6):
                raise ModelError(f"{path.name}: layer {name} has no bias in the architecture but one in the file")
            layer.set_weights([kernel.astype(np.float32)])
    if faces is not None and len(faces):
        _inflate_batchnorm(model, bn_after, faces)
    _check_against_tflite(model, path, faces, check_faces)
    return model


def _inflate_batchnorm(model, bn_after: dict, faces: np.ndarray, max_faces: int = 4096, batch_size: int = 256) -> None:
    """Give each BatchNorm its input's real mean/variance and the gamma/beta that keep the function
    (gamma = sqrt(v + eps), beta = m + bias): see the module docstring."""
    import keras

    bns = list(bn_after.values())
    probe = keras.Model(model.input, [bn.input for bn in bns])
    idx = np.random.default_rng(0).permutation(len(faces))[:max_faces]
    total = [np.zeros(bn.moving_mean.shape, np.float64) for bn in bns]
    total_sq = [np.zeros_like(t) for t in total]
    for start in range(0, len(idx), batch_size):
        x = contract.batch_to_model_input(faces[np.sort(idx[start:start + batch_size])])
        outs = probe(x, training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for k, y in enumerate(outs):
            y = keras.ops.convert_to_numpy(y).astype(np.float64).reshape(-1, y.shape[-1])
            total[k] += y.sum(0)
            total_sq[k] += (y * y).sum(0)
    for k, bn in enumerate(bns):
        n = len(idx) * int(np.prod(bn.input.shape[1:-1]))  # faces x positions per face
        mean = total[k] / n
        var = np.maximum(total_sq[k] / n - mean * mean, 0.0)
        beta = bn.get_weights()[1]
        eps = float(bn.epsilon)
        bn.set_weights([np.sqrt(var + eps).astype(np.float32), (beta + mean).astype(np.float32),
                        mean.astype(np.float32), var.astype(np.float32)])


def _check_against_tflite(model, path: Path, faces: np.ndarray | None, n: int) -> None:
    """The rebuilt model must give the .tflite file's probabilities (max difference MAX_PROB_DIFF)."""
    from fer_edge.classifier import EmotionClassifier

    clf = EmotionClassifier(path, threads=1)
    if faces is not None and len(faces):
        x = np.asarray(faces[np.linspace(0, len(faces) - 1, min(n, len(faces))).astype(int)], np.uint8)
    else:  # an equivalence check of two implementations of one function: any images do
        x = np.random.default_rng(0).integers(0, 256, (32, *clf.input_size), dtype=np.uint8)
    ref = clf.predict_pixels(x)
    got = model.predict(contract.batch_to_model_input(x), batch_size=128, verbose=0)
    diff = float(np.abs(ref - got).max())
    if not diff <= MAX_PROB_DIFF:
        raise ModelError(f"{path.name}: the rebuilt Keras model differs from the file by {diff:.2e} in probability "
                         f"(allowed {MAX_PROB_DIFF:.0e}): the card's architecture does not match the weights")

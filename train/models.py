"""Model builders: one function per architecture, a registry for the CLI, params and MAC counters.

Every builder has the signature ``build_x(input_size=(48, 48), num_classes=7, **opts) -> keras.Model``
and honours the model contract (fer_edge.contract): the input is ``(H, W, 1)`` raw grayscale values
0..255, normalisation is the model's first layer, the output is softmax probabilities.

Only layers that TFLite int8 and the Edge TPU compiler handle well are used: Conv2D,
DepthwiseConv2D, BatchNormalization (folded at conversion), ReLU/ReLU6, MaxPool/AvgPool,
GlobalAveragePooling, Dense, Add, Concatenate, Resizing (only for the optional ImageNet path).
No SiLU/GELU, no layers whose behaviour depends on the batch size at inference.

Pure Keras 3 (``keras.layers``): builds and trains under the TensorFlow and the JAX backend.
"""
from __future__ import annotations

import dataclasses
import math
import socket
from typing import Callable, Sequence

import keras
from keras import layers

from fer_edge.contract import DEFAULT_INPUT_SIZE, EMOTIONS
from fer_edge.errors import ConfigError, ModelError

_NUM_CLASSES = len(EMOTIONS)

#: training-time BatchNorm through TensorFlow's fused kernel (FusedBatchNormalization below); tests and
#: benchmarks/train_speed.py turn it off to compare with Keras' own layer
FUSED_BATCHNORM = True


@keras.saving.register_keras_serializable(package="fer_train")
class FusedBatchNormalization(layers.BatchNormalization):
    """Keras' BatchNormalization, whose training step runs as one fused TensorFlow kernel.

    Why: Keras 3 computes a training-mode BatchNorm as separate mean / squared-difference / multiply /
    tile ops, in float32 even under a bfloat16 policy. Profiled on this project's 2-core CPU (edgenet,
    batch 128, benchmarks/train_speed.py) those ops took ~40 % of the step; `FusedBatchNormV3` (oneDNN,
    and fused with the ReLU after it by TensorFlow's graph optimiser) does the same statistics in one
    pass, on bfloat16 inputs too. Inference, other backends, masks, renorm and non-4-D inputs take
    Keras' own path, so prediction, TFLite conversion (BatchNorm folded into the conv) and the saved
    variables are those of a plain BatchNormalization."""

    def call(self, inputs, training=None, mask=None):
        if not (FUSED_BATCHNORM and training and self.trainable and mask is None and not self.renorm
                and len(inputs.shape) == 4 and self.axis in (-1, 3)
                and keras.backend.backend() == "tensorflow"):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        gamma = tf.cast(self.gamma, "float32") if self.scale else tf.ones(self.moving_mean.shape, "float32")
        beta = tf.cast(self.beta, "float32") if self.center else tf.zeros(self.moving_mean.shape, "float32")
        x = inputs if inputs.dtype in (tf.float32, tf.bfloat16, tf.float16) else tf.cast(inputs, "float32")
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(x, gamma, beta, epsilon=self.epsilon,
                                                             data_format="NHWC", is_training=True)
        # the same moving-average update as Keras' layer; the fused kernel's variance carries Bessel's
        # correction n/(n-1), n = batch x height x width >= 128 x 3 x 3 here, i.e. <= 0.1 % apart
        m = self.momentum
        self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
        self.moving_variance.assign(self.moving_variance * m + variance * (1.0 - m))
        return tf.cast(y, self.compute_dtype)


def float32_twin(model: keras.Model) -> keras.Model:
    """The same model with every layer computing in float32 and the same weights: what is saved,
    evaluated and converted after a mixed-precision (bfloat16) training run."""
    policies = {getattr(getattr(layer, "dtype_policy", None), "name", "float32") for layer in model.layers}
    if policies <= {"float32"}:
        return model

    def clone(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")  # the input layers too
    try:
        twin = keras.models.clone_model(model, clone_function=clone)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    twin.set_weights(model.get_weights())
    return twin


# --------------------------------------------------------------------------- shared pieces
def _input(input_size: Sequence[int]) -> keras.KerasTensor:
    h, w = int(input_size[0]), int(input_size[1])
    if min(h, w) < 16:
        raise ConfigError(f"input size {h}x{w} is too small (at least 16x16)")
    return keras.Input((h, w, 1), name="face")


def _normalise(x, mode: str = "unit"):
    """0..255 -> [0, 1] ('unit') or [-1, 1] ('symmetric'); a Rescaling layer, i.e. part of the model."""
    if mode == "symmetric":
        return layers.Rescaling(1.0 / 127.5, offset=-1.0, name="normalise")(x)
    return layers.Rescaling(1.0 / 255.0, name="normalise")(x)


def _head(x, num_classes: int, dropout: float, name: str = "predictions"):
    if dropout > 0:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    # float32 under a bfloat16 training policy: the probabilities and the loss keep full precision
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name=name)(x)


def _conv_bn_relu(x, filters: int, kernel: int = 3, strides: int = 1, name: str = ""):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = FusedBatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _dw_bn_relu(x, strides: int = 1, name: str = ""):
    x = layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = FusedBatchNormalization(name=f"{name}_dwbn")(x)
    return layers.ReLU(name=f"{name}_dwrelu")(x)


# --------------------------------------------------------------------------- baseline
def build_baseline(input_size: Sequence[int] = DEFAULT_INPUT_SIZE, num_classes: int = _NUM_CLASSES,
                   dropout: float = 0.5, conv_dropout: float = 0.25, dense_units: int = 128) -> keras.Model:
    """The seed's first CNN: conv32-conv64-maxpool-dropout-dense128-dropout-softmax."""
    inp = _input(input_size)
    x = _normalise(inp)
    x = layers.Conv2D(32, 3, activation="relu", name="conv1")(x)
    x = layers.Conv2D(64, 3, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.Dropout(conv_dropout, name="pool_dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    out = _head(x, num_classes, dropout)
    return keras.Model(inp, out, name="baseline")


# --------------------------------------------------------------------------- v2
def build_v2(input_size: Sequence[int] = DEFAULT_INPUT_SIZE, num_classes: int = _NUM_CLASSES,
             filters: Sequence[int] = (64, 128, 256), dropout: float = 0.5, conv_dropout: float = 0.25,
             dense_units: int = 256) -> keras.Model:
    """The seed's 6-conv CNN: 3 x (conv-BN-ReLU, conv-BN-ReLU, maxpool, dropout), dense, dropout, softmax.

    The seed reported 64.78 % PrivateTest accuracy with this layout.
    """
    if isinstance(filters, int):
        filters = (filters, filters * 2, filters * 4)
    inp = _input(input_size)
    x = _normalise(inp)
    for i, f in enumerate(filters, start=1):
        x = _conv_bn_relu(x, int(f), name=f"block{i}a")
        x = _conv_bn_relu(x, int(f), name=f"block{i}b")
        x = layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
        x = layers.Dropout(conv_dropout, name=f"block{i}_dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(int(dense_units), use_bias=False, name="dense")(x)
    x = FusedBatchNormalization(name="dense_bn")(x)
    x = layers.ReLU(name="dense_relu")(x)
    out = _head(x, num_classes, dropout)
    return keras.Model(inp, out, name="v2")


# --------------------------------------------------------------------------- MobileNetV2
_IMAGENET_SIZES = (96, 128, 160, 192, 224)
_IMAGENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)


def build_mobilenetv2(input_size: Sequence[int] = DEFAULT_INPUT_SIZE, num_classes: int = _NUM_CLASSES,
                      alpha: float = 1.0, dropout: float = 0.2, weights: str | None = None,
                      pretrained_size: int = 96, download_timeout: float = 30.0,
                      bn_momentum: float = 0.99) -> keras.Model:
    """keras.applications.MobileNetV2 for grayscale faces.

    Default: random init (``weights=None``), 1-channel input at the face size, no network access.
    ``weights="imagenet"`` (``fer-train fit --pretrained``): the face is resized to
    ``pretrained_size`` (96..224) and repeated to 3 channels inside the model, then the ImageNet
    weights are loaded (downloaded by Keras once into ~/.keras/models). Without network and
    without a cached copy this raises ModelError within ``download_timeout`` seconds.
    """
    from keras.applications import MobileNetV2

    inp = _input(input_size)
    if weights in (None, "", "none"):
        x = _normalise(inp, "symmetric")  # MobileNetV2's own preprocessing range
        base_kwargs = dict(input_tensor=x, weights=None)
    elif weights == "imagenet":
        if alpha not in _IMAGENET_ALPHAS:
            raise ConfigError(f"ImageNet weights exist for alpha in {_IMAGENET_ALPHAS}, not {alpha}")
        if pretrained_size not in _IMAGENET_SIZES:
            raise ConfigError(f"ImageNet weights need an input size in {_IMAGENET_SIZES}, not {pretrained_size}")
        x = layers.Resizing(pretrained_size, pretrained_size, interpolation="bilinear", name="upsize")(inp)
        x = layers.Concatenate(name="to_rgb")([x, x, x])
        x = _normalise(x, "symmetric")
        base_kwargs = dict(input_tensor=x, input_shape=(pretrained_size, pretrained_size, 3), weights="imagenet")
    else:
        raise ConfigError(f"weights must be None or 'imagenet', not {weights!r}")

    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(download_timeout)  # urllib has no timeout of its own: never hang
    try:
        base = MobileNetV2(include_top=False, alpha=alpha, pooling="avg", **base_kwargs)
    except Exception as exc:  # noqa: BLE001 - any failure to fetch/read the weights is a user-level error
        if weights == "imagenet":
            raise ModelError(
                "could not load the ImageNet weights for MobileNetV2 (no network and no cached copy in "
                f"~/.keras/models?): {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            ) from None
        raise
    finally:
        socket.setdefaulttimeout(old_timeout)
    # keras.applications uses BN momentum 0.999 (ImageNet-length schedules): after a few FER2013 epochs
    # (~1,300 steps) the moving statistics still hold ~26 % of their initial values, and PublicTest
    # accuracy sits at one class (measured: 18.19 % for 6 epochs). 0.99 forgets the start in ~500 steps.
    for layer in base.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = bn_momentum
    out = _head(base.output, num_classes, dropout)
    return keras.Model(inp, out, name="mobilenetv2")


# --------------------------------------------------------------------------- edgenet (own design)
def _res_block(x, filters: int, strides: int, kind: str, name: str):
    """Residual block. kind='conv': ResNet basic block (two 3x3 convs). kind='sep': the same with
    depthwise-separable 3x3 convs (DW3x3-BN-ReLU-PW1x1-BN-ReLU, twice). Shortcut: identity, or
    1x1 conv (stride 2) + BN when the shape changes."""
    in_ch = x.shape[-1]
    shortcut = x
    if strides != 1 or in_ch != filters:
        if strides != 1:
            shortcut = layers.MaxPooling2D(2, name=f"{name}_scpool")(shortcut) if kind == "sep" else shortcut
        shortcut = layers.Conv2D(filters, 1, strides=1 if kind == "sep" else strides, use_bias=False,
                                 name=f"{name}_scconv")(shortcut)
        shortcut = FusedBatchNormalization(name=f"{name}_scbn")(shortcut)
    if kind == "conv":
        y = _conv_bn_relu(x, filters, 3, strides, name=f"{name}_1")
        y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_2_conv")(y)
        y = FusedBatchNormalization(name=f"{name}_2_bn")(y)
    elif kind == "sep":
        y = _dw_bn_relu(x, strides, name=f"{name}_1")
        y = _conv_bn_relu(y, filters, 1, name=f"{name}_1pw")
        y = _dw_bn_relu(y, 1, name=f"{name}_2")
        y = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_2pw_conv")(y)
        y = FusedBatchNormalization(name=f"{name}_2pw_bn")(y)
    else:
        raise ConfigError(f"block kind must be 'conv' or 'sep', not {kind!r}")
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)


def _edgenet(name: str, input_size, num_classes, stem: Sequence[int], widths: Sequence[int],
             depths: Sequence[int], kind: str, dropout: float, width: float) -> keras.Model:
    def w(c: int) -> int:
        return max(8, int(round(c * width / 8)) * 8)

    if len(widths) != len(depths):
        raise ConfigError("widths and depths must have the same length")
    inp = _input(input_size)
    x = _normalise(inp)
    for i, c in enumerate(stem, start=1):
        x = _conv_bn_relu(x, w(c), 3, name=f"stem{i}")
    for s, (c, d) in enumerate(zip(widths, depths), start=1):
        for b in range(int(d)):
            x = _res_block(x, w(c), 2 if b == 0 else 1, kind, name=f"s{s}b{b + 1}")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = _head(x, num_classes, dropout)
    return keras.Model(inp, out, name=name)


def build_edgenet(input_size: Sequence[int] = DEFAULT_INPUT_SIZE, num_classes: int = _NUM_CLASSES,
                  width: float = 1.0, widths: Sequence[int] = (32, 64, 128, 256),
                  depths: Sequence[int] = (1, 2, 2, 1), stem: Sequence[int] = (32,),
                  kind: str = "conv", dropout: float = 0.3) -> keras.Model:
    """Own edge design: a compact ResNet for 48x48 faces (~1.6 M params, ~58 M MACs at 48x48).

    A full-resolution 3x3 stem conv (32) keeps the fine detail of small faces, then four stages
    of ResNet basic blocks (32, 64, 128, 256 channels; 1, 2, 2, 1 blocks; the first block of each
    stage halves the resolution with a stride-2 conv: 24, 12, 6, 3), global average pooling,
    dropout, softmax. Only Conv2D/BN/ReLU/Add/GAP/Dense: folds into int8 Conv+ReLU and maps 1:1
    to the Edge TPU. Dense 3x3 convs were chosen over depthwise-separable ones because they train
    ~6x faster per MAC on a CPU (TF/oneDNN: depthwise backward passes are slow); ``kind="sep"``
    swaps in depthwise-separable blocks, ``width`` scales every channel count (e.g. 1.5 -> ~3.6 M).
    """
    return _edgenet("edgenet", input_size, num_classes, stem, widths, depths, kind, dropout, width)


def build_edgenet_s(input_size: Sequence[int] = DEFAULT_INPUT_SIZE, num_classes: int = _NUM_CLASSES,
                    width: float = 1.0, widths: Sequence[int] = (32, 64, 96),
                    depths: Sequence[int] = (1, 1, 1), stem: Sequence[int] = (32,),
                    kind: str = "conv", dropout: float = 0.2) -> keras.Model:
    """Fast tier (<= 0.25 M params, 25.3 M MACs): the edgenet layout cut to three stages
    (32, 64, 96 channels at 24, 12, 6) with one ResNet basic block each, GAP, softmax.
    ``kind="sep"`` gives depthwise-separable blocks (fewer MACs on a Pi, slower to train on CPU)."""
    return _edgenet("edgenet_s", input_size, num_classes, stem, widths, depths, kind, dropout, width)


# --------------------------------------------------------------------------- registry
@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., keras.Model]
    description: str
    max_params: int | None = None  # the budget the tests hold the default build to
    #: whether a bfloat16 training step is faster than float32 on a CPU with AMX-BF16 (fit's --precision auto);
    #: measured with benchmarks/train_speed.py, images per CPU-second of the default step against float32
    #: with Keras' BatchNorm: baseline 2.1x, v2 3.8x, edgenet 2.1x, edgenet_s 2.2x; MobileNetV2 0.6x
    #: (keras.applications' own BatchNorm layers and depthwise convolutions)
    bfloat16_pays: bool = True


MODEL_SPECS: dict[str, ModelSpec] = {
    s.name: s for s in (
        ModelSpec("baseline", build_baseline, "seed's 2-conv CNN (conv32-conv64-pool-dense128)"),
        ModelSpec("v2", build_v2, "seed's 6-conv CNN with BN, 64/128/256 (seed: 64.78 %)"),
        ModelSpec("mobilenetv2", build_mobilenetv2, "keras.applications MobileNetV2, grayscale, random init",
                  bfloat16_pays=False),
        ModelSpec("edgenet", build_edgenet, "own compact ResNet, 4 stages, GAP (edge design, <= 5 M)", 5_000_000),
        ModelSpec("edgenet_s", build_edgenet_s, "own tiny ResNet, 3 stages, GAP (fast tier, <= 0.25 M)", 250_000),
    )
}
MODELS: dict[str, Callable[..., keras.Model]] = {k: s.builder for k, s in MODEL_SPECS.items()}


def build_model(name: str, input_size: Sequence[int] = DEFAULT_INPUT_SIZE, num_classes: int = _NUM_CLASSES,
                **opts) -> keras.Model:
    """Build a registered model; unknown names or options are ConfigErrors (one-line CLI message)."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r} (choose from {', '.join(MODELS)})")
    opts = {k: v for k, v in opts.items() if v is not None}
    try:
        return MODELS[name](input_size=tuple(input_size), num_classes=int(num_classes), **opts)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise ConfigError(f"model {name!r}: {exc}") from None
        raise


def model_options(name: str, dropout: float | None = None, width: float | None = None,
                  model_opts: dict | None = None, pretrained: bool = False) -> dict:
    """The builder options of a run's settings (fit's --dropout/--width/--model-opt/--pretrained, or a
    model card's training config): width is `alpha` for mobilenetv2."""
    opts = dict(model_opts or {})
    if dropout is not None:
        opts["dropout"] = dropout
    if width is not None:
        opts["alpha" if name == "mobilenetv2" else "width"] = width
    if pretrained:
        if name != "mobilenetv2":
            raise ConfigError("--pretrained is only available for mobilenetv2")
        opts["weights"] = "imagenet"
    return opts


def count_params(model: keras.Model) -> int:
    """All weights, trainable or not (BN moving statistics included, as Keras' summary counts them)."""
    return int(sum(math.prod(w.shape) for w in model.weights))


def count_trainable_params(model: keras.Model) -> int:
    return int(sum(math.prod(w.shape) for w in model.trainable_weights))


def _layer_macs(layer) -> int:
    """Multiply-accumulates of one call of `layer` (batch 1), from its config and shapes."""
    if isinstance(layer, keras.Model):  # nested model (e.g. an application used as a layer)
        return sum(_layer_macs(sub) for sub in layer.layers)
    try:
        in_shape = tuple(layer.input.shape)
        out_shape = tuple(layer.output.shape)
    except (AttributeError, ValueError):
        return 0
    if isinstance(layer, layers.SeparableConv2D):
        kh, kw = layer.kernel_size
        cin = in_shape[-1]
        mult = layer.depth_multiplier
        spatial = out_shape[1] * out_shape[2]
        return spatial * (kh * kw * cin * mult + cin * mult * out_shape[-1])
    if isinstance(layer, layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return out_shape[1] * out_shape[2] * out_shape[3] * kh * kw
    if isinstance(layer, layers.Conv2D):
        kh, kw = layer.kernel_size
        groups = getattr(layer, "groups", 1) or 1
        return out_shape[1] * out_shape[2] * out_shape[3] * kh * kw * (in_shape[-1] // groups)
    if isinstance(layer, layers.Dense):
        lead = math.prod(d for d in in_shape[1:-1]) if len(in_shape) > 2 else 1
        return lead * in_shape[-1] * out_shape[-1]
    return 0


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates per image (batch 1) of Conv2D, DepthwiseConv2D, SeparableConv2D and
    Dense layers, computed by hand from layer configs and output shapes (any backend)."""
    return int(sum(_layer_macs(layer) for layer in model.layers))


def describe_models(input_size: Sequence[int] = DEFAULT_INPUT_SIZE, num_classes: int = _NUM_CLASSES) -> list[dict]:
    """Rows for `fer-train models`: name, description, params, MACs at `input_size`."""
    rows = []
    for name, spec in MODEL_SPECS.items():
        model = build_model(name, input_size, num_classes)
        rows.append({"name": name, "description": spec.description, "params": count_params(model),
                     "macs": count_macs(model)})
        del model
        keras.backend.clear_session()
    return rows

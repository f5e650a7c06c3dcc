"""Read a .tflite flatbuffer into plain data: operators (name, version), tensors (type, shape,
quantisation). The Edge TPU check and the model card's MAC count both read models this way.

The flatbuffer schema comes from a package already installed: ai-edge-litert's bundled
`schema_py_generated` (the edge runtime's own dependency), else TensorFlow's copy.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from fer_edge.errors import ModelError


def _schema():
    for module_name in ("ai_edge_litert.schema_py_generated", "tensorflow.lite.python.schema_py_generated"):
        try:
            return __import__(module_name, fromlist=["ModelT"])
        except ImportError:
            continue
    raise ModelError("cannot read .tflite files: install ai-edge-litert (it bundles the TFLite schema)")


@dataclasses.dataclass(frozen=True)
class Tensor:
    name: str
    type: str  # "INT8", "FLOAT32", ...
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...] | None  # None = static (same as shape)
    quantized: bool  # has a scale
    is_constant: bool  # backed by a non-empty buffer (weights, biases)

    @property
    def dynamic(self) -> bool:
        return self.shape_signature is not None and any(d < 0 for d in self.shape_signature)


@dataclasses.dataclass(frozen=True)
class Operator:
    name: str  # builtin operator name, e.g. "CONV_2D", or "CUSTOM:<code>"
    version: int
    inputs: tuple[int, ...]  # tensor indices, -1 = optional input left out
    outputs: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Graph:
    """The main subgraph of a .tflite model."""

    path: Path
    tensors: tuple[Tensor, ...]
    operators: tuple[Operator, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    subgraphs: int

    def tensor(self, index: int) -> Tensor | None:
        return self.tensors[index] if index >= 0 else None


def _load(path: Path):
    """The flatbuffer of `path` as the schema's ModelT; ModelError when it is missing or not a TFLite model."""
    try:
        buf = path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"model not found: {path}") from None
    schema = _schema()
    # The TFLite file identifier "TFL3" sits at bytes 4..8 of every model.
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ModelError(f"{path} is not a TFLite model (no TFL3 identifier)")
    try:
        model = schema.ModelT.InitFromPackedBuf(buf, 0)
    except Exception as exc:  # a corrupt flatbuffer raises anything from struct.error to IndexError
        raise ModelError(f"{path} is not a readable TFLite model: {exc}") from None
    if not model.subgraphs:
        raise ModelError(f"{path} has no subgraph")
    return model


def read_graph(path: str | os.PathLike) -> Graph:
    """Parse `path` (a .tflite file); ModelError when it is missing or not a TFLite flatbuffer."""
    path = Path(path)
    model = _load(path)
    schema = _schema()
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    codes = []
    for oc in model.operatorCodes or []:
        # builtinCode holds codes >= 127; deprecatedBuiltinCode the old ones (max() covers both)
        code = max(int(oc.builtinCode or 0), int(oc.deprecatedBuiltinCode or 0))
        name = op_names.get(code, f"BUILTIN_{code}")
        if name == "CUSTOM":
            custom = oc.customCode.decode() if isinstance(oc.customCode, bytes) else str(oc.customCode)
            name = f"CUSTOM:{custom}"
        codes.append((name, int(oc.version or 1)))
    buffers = model.buffers or []
    g = model.subgraphs[0]
    tensors = []
    for t in g.tensors or []:
        q = t.quantization
        quantized = q is not None and q.scale is not None and len(q.scale) > 0
        buf_index = int(t.buffer or 0)
        data = buffers[buf_index].data if 0 < buf_index < len(buffers) else None
        has_data = data is not None and len(data) > 0
        if not has_data and 0 < buf_index < len(buffers):  # large models keep tensors outside the flatbuffer
            has_data = bool(getattr(buffers[buf_index], "size", 0))
        shape = tuple(int(s) for s in (t.shape if t.shape is not None else ()))
        sig = tuple(int(s) for s in t.shapeSignature) if t.shapeSignature is not None else None
        name = t.name.decode(errors="replace") if isinstance(t.name, bytes) else str(t.name)
        tensors.append(Tensor(name, type_names.get(t.type, str(t.type)), shape, sig, quantized, has_data))
    ops = []
    for op in g.operators or []:
        name, version = codes[op.opcodeIndex]
        ops.append(Operator(name, version, _ints(op.inputs), _ints(op.outputs)))
    return Graph(path, tuple(tensors), tuple(ops), _ints(g.inputs), _ints(g.outputs), len(model.subgraphs))


def _ints(a) -> tuple[int, ...]:
    return tuple(int(i) for i in (a if a is not None else ()))


def count_macs(graph: Graph) -> int:
    """Multiply-accumulates of one inference, from the graph's conv / dense layers.

    CONV_2D: out_pixels * out_channels * kh * kw * in_channels; DEPTHWISE_CONV_2D: out_pixels *
    out_channels * kh * kw; FULLY_CONNECTED: batch * units * in_features; TRANSPOSE_CONV: in_pixels *
    in_channels * kh * kw * out_channels. Other ops (pooling, adds, softmax) are not counted.
    """
    macs = 0
    for op in graph.operators:
        if op.name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"):
            continue
        if op.name == "TRANSPOSE_CONV":  # inputs: output_shape, weights, input
            w, x = graph.tensor(op.inputs[1]), graph.tensor(op.inputs[2])
            if w is None or x is None or len(w.shape) != 4:
                continue
            macs += int(np.prod(x.shape[:-1])) * x.shape[-1] * w.shape[0] * w.shape[1] * w.shape[2]
            continue
        w, y = graph.tensor(op.inputs[1]), graph.tensor(op.outputs[0])
        if w is None or y is None:
            continue
        if op.name == "CONV_2D" and len(w.shape) == 4:  # weights (out_c, kh, kw, in_c)
            macs += int(np.prod(y.shape[:-1])) * int(np.prod(w.shape))
        elif op.name == "DEPTHWISE_CONV_2D" and len(w.shape) == 4:  # weights (1, kh, kw, out_c)
            macs += int(np.prod(y.shape[:-1])) * int(np.prod(w.shape))
        elif op.name == "FULLY_CONNECTED" and len(w.shape) == 2:  # weights (units, in_features)
            macs += int(np.prod(y.shape[:-1])) * int(np.prod(w.shape))
    return int(macs)


def read_constants(path: str | os.PathLike) -> dict[int, np.ndarray]:
    """The FLOAT32 constant tensors (weights, biases) of the main subgraph, by tensor index.

    Why: a float32 .tflite holds a trained model's weights (BatchNorm already folded into the convs);
    `fer-train` reads them to warm-start or distil from a shipped model when its Keras file is gone.
    """
    model = _load(Path(path))
    float32 = _schema().TensorType.FLOAT32
    buffers = model.buffers or []
    out: dict[int, np.ndarray] = {}
    for i, t in enumerate(model.subgraphs[0].tensors or []):
        b = int(t.buffer or 0)
        if t.type != float32 or not 0 < b < len(buffers) or buffers[b].data is None or not len(buffers[b].data):
            continue
        shape = tuple(int(s) for s in (t.shape if t.shape is not None else ()))
        out[i] = np.frombuffer(bytes(bytearray(buffers[b].data)), "<f4").reshape(shape).copy()
    return out


def softmax_beta(path: str | os.PathLike) -> float:
    """The beta of the model's final SOFTMAX (softmax(beta * x)); 1.0 when it has none."""
    model = _load(Path(path))
    schema = _schema()
    g = model.subgraphs[0]
    for op in reversed(g.operators or []):
        oc = model.operatorCodes[op.opcodeIndex]
        if max(int(oc.builtinCode or 0), int(oc.deprecatedBuiltinCode or 0)) == schema.BuiltinOperator.SOFTMAX:
            opts = op.builtinOptions
            return float(opts.beta) if opts is not None and opts.beta is not None else 1.0
    return 1.0


def set_softmax_beta(path: str | os.PathLike, beta: float, out: str | os.PathLike) -> Path:
    """Write `path` with its final SOFTMAX computing softmax(beta * x) to `out`: a temperature T folded
    into a converted model (beta = 1 / T) without touching its weights or quantisation. The int8
    SOFTMAX kernel builds its lookup table from input_scale * beta, so the calibrated probabilities
    are what its 1/256 output steps quantise."""
    import flatbuffers

    from fer_edge.contract import write_bytes_atomic

    model = _load(Path(path))
    schema = _schema()
    hits = 0
    for g in model.subgraphs:
        for op in g.operators or []:
            oc = model.operatorCodes[op.opcodeIndex]
            if max(int(oc.builtinCode or 0), int(oc.deprecatedBuiltinCode or 0)) == schema.BuiltinOperator.SOFTMAX:
                if op.builtinOptions is None:
                    op.builtinOptionsType = schema.BuiltinOptions.SoftmaxOptions
                    op.builtinOptions = schema.SoftmaxOptionsT()
                op.builtinOptions.beta = float(beta)
                hits += 1
    if hits != 1:
        raise ModelError(f"{path}: want exactly one SOFTMAX op to fold a temperature into, found {hits}")
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return write_bytes_atomic(Path(out), bytes(builder.Output()))


class TfliteLogits:
    """The input of a .tflite model's final SOFTMAX (dequantised for int8), for (N, H, W) faces with raw
    0..255 values at the model's input size, through the same interpreter package and input quantisation
    as the runtime. For an int8 model these are its own logits, at the resolution of the logit tensor (much
    finer than the 1/256 steps of its probabilities); the softmax's beta is applied, so softmax(result) is
    what the model computes before its output is quantised. `labels` names the outputs of a file without a
    model card beside it (a temporary copy of an 8-label FER+ model). The interpreter is made once, so a
    teacher that scores every training batch (`fer-train fit --kd-online`) pays only for the invokes."""

    def __init__(self, path: str | os.PathLike, labels: "tuple[str, ...] | None" = None):
        import warnings

        from fer_edge.classifier import EmotionClassifier

        graph = read_graph(path)
        soft = [op for op in graph.operators if op.name == "SOFTMAX"]
        if len(soft) != 1:
            raise ModelError(f"{Path(path).name}: want exactly one SOFTMAX op, found {len(soft)}")
        index = soft[0].inputs[0]
        self.path = Path(path)
        self._clf = EmotionClassifier(path, threads=1, labels=labels)
        self.labels = tuple(self._clf.labels)
        with warnings.catch_warnings():  # "preserve_all_tensors is for debugging": reading one tensor is the point
            warnings.simplefilter("ignore")
            self._interp = self._clf.backend.Interpreter(model_path=str(path), num_threads=1,
                                                         experimental_preserve_all_tensors=True)
        self._interp.allocate_tensors()
        detail = next(d for d in self._interp.get_tensor_details() if d["index"] == index)
        self._scale, self._zero = detail.get("quantization", (0.0, 0))
        self._index = index
        self._in_index = self._interp.get_input_details()[0]["index"]
        self.beta = softmax_beta(path)  # applied to what __call__ returns

    def __call__(self, faces: np.ndarray, progress: bool = False) -> np.ndarray:
        faces = np.asarray(faces)
        out = np.empty((len(faces), len(self.labels)), np.float64)
        iterator = enumerate(faces)
        if progress:
            from tqdm import tqdm

            iterator = tqdm(iterator, total=len(faces), desc=f"{self.path.name} logits", unit="face", leave=False)
        for i, face in iterator:
            self._interp.set_tensor(self._in_index, self._clf.prepare_pixels(face))
            self._interp.invoke()
            z = self._interp.get_tensor(self._index).reshape(-1)
            out[i] = (z.astype(np.float64) - self._zero) * self._scale if self._scale else z
        return out * self.beta


def tflite_logits(path: str | os.PathLike, faces: np.ndarray, progress: bool = False,
                  labels: "tuple[str, ...] | None" = None) -> np.ndarray:
    """`TfliteLogits(path, labels)(faces)`: one file's logits for a set of faces, read once."""
    return TfliteLogits(path, labels)(faces, progress)

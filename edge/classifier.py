"""Emotion classifier: one TFLite interpreter, chosen once, fed by the shared contract.

Interpreter choice and delegates live here and nowhere else. The edge loop, the Streamlit app and
`fer-convert`'s gate all go through `EmotionClassifier`, so the gate measures exactly what the
device will run.

Order: ai-edge-litert (maintained, numpy 1 and 2, XNNPACK) -> tflite_runtime (old, numpy 1 only)
-> tensorflow.lite (workstations that have TensorFlow anyway).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import contract
from .errors import ContractError, DeviceError, ModelError

log = logging.getLogger(__name__)

EDGETPU_LIBRARY = "libedgetpu.so.1"


@dataclass(frozen=True)
class InterpreterBackend:
    name: str
    Interpreter: type
    load_delegate: Callable[..., Any] | None


_BACKEND: InterpreterBackend | None = None


def interpreter_backend() -> InterpreterBackend:
    """Import the first TFLite interpreter that is installed (once per process)."""
    global _BACKEND
    if _BACKEND is not None:
        return _BACKEND
    errors = []
    for name, module_name in (
        ("ai-edge-litert", "ai_edge_litert.interpreter"),
        ("tflite-runtime", "tflite_runtime.interpreter"),
        ("tensorflow.lite", "tensorflow.lite"),
    ):
        try:
            module = __import__(module_name, fromlist=["Interpreter"])
            if name == "tensorflow.lite":
                _BACKEND = InterpreterBackend(name, module.Interpreter, module.experimental.load_delegate)
            else:
                _BACKEND = InterpreterBackend(name, module.Interpreter, getattr(module, "load_delegate", None))
            return _BACKEND
        except (ImportError, AttributeError) as exc:  # tflite_runtime breaks under numpy 2 at import
            errors.append(f"{name}: {exc}")
    raise ModelError(
        "no TFLite interpreter installed; `pip install ai-edge-litert` (tried " + "; ".join(errors) + ")"
    )


def edgetpu_model_path(model_path: Path) -> Path:
    """`x_int8.tflite` -> `x_int8_edgetpu.tflite` (what edgetpu_compiler writes); kept if already so."""
    if model_path.stem.endswith("_edgetpu"):
        return model_path
    return model_path.with_name(model_path.stem + "_edgetpu" + model_path.suffix)


class EmotionClassifier:
    """A TFLite model honouring the contract: face crop in, one probability per label out."""

    def __init__(
        self,
        model_path: str | os.PathLike,
        threads: int = 1,
        edgetpu: bool = False,
        labels: Sequence[str] | None = None,
        flip_average: bool = False,
    ) -> None:
        self.model_path = Path(model_path)
        #: average each face's probabilities with its mirror image's (two invokes per face): fewer errors
        #: and better-calibrated scores for twice the classifier time (README, "Mirror averaging")
        self.flip_average = bool(flip_average)
        if not self.model_path.is_file():
            raise ModelError(f"model not found: {self.model_path}")
        self.card = contract.load_card_for(self.model_path)
        self.backend = interpreter_backend()
        self.device = "cpu"
        self.interpreter = None
        if edgetpu:
            self.interpreter = self._try_edgetpu(threads)
        if self.interpreter is None:
            self.interpreter = self._make_interpreter(self.model_path, threads, delegates=None)
        self.interpreter.allocate_tensors()
        self._in = self.interpreter.get_input_details()[0]
        self._out = self.interpreter.get_output_details()[0]
        self._check_contract(labels)

    # ------------------------------------------------------------------ construction
    def _make_interpreter(self, path: Path, threads: int, delegates: list | None):
        kwargs: dict[str, Any] = {"model_path": str(path)}
        if delegates:
            kwargs["experimental_delegates"] = delegates
        else:
            kwargs["num_threads"] = max(1, int(threads))
        try:
            return self.backend.Interpreter(**kwargs)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"cannot load {path} as a TFLite model: {exc}") from None

    def _try_edgetpu(self, threads: int):
        """Load the Edge TPU delegate with the `_edgetpu` model; None (and a warning) to fall back."""
        tpu_path = edgetpu_model_path(self.model_path)
        if not tpu_path.is_file():
            log.warning("Edge TPU asked for, but %s does not exist: running %s on the CPU", tpu_path, self.model_path)
            return None
        if self.backend.load_delegate is None:
            log.warning("Edge TPU asked for, but %s cannot load delegates: running on the CPU", self.backend.name)
            return None
        try:
            delegate = self.backend.load_delegate(EDGETPU_LIBRARY)
            interpreter = self.backend.Interpreter(model_path=str(tpu_path), experimental_delegates=[delegate])
        except (OSError, ValueError, RuntimeError) as exc:
            log.warning("Edge TPU not usable (%s): running %s on the CPU", exc, self.model_path)
            return None
        self.device = "edgetpu"
        self.model_path = tpu_path
        return interpreter

    def _check_contract(self, labels: Sequence[str] | None) -> None:
        shape = tuple(int(s) for s in self._in["shape"])
        if len(shape) != 4 or shape[0] != 1 or shape[3] != 1:
            raise ContractError(
                f"{self.model_path.name}: input shape {shape} breaks the contract (want (1, H, W, 1) grayscale)"
            )
        self.input_size = (shape[1], shape[2])
        n_out = int(np.prod(self._out["shape"]))
        if labels is not None:
            self.labels = tuple(labels)
        elif self.card is not None:
            self.labels = tuple(self.card.labels)
        else:
            self.labels = contract.EMOTIONS
        if n_out != len(self.labels):
            raise ContractError(
                f"{self.model_path.name}: model gives {n_out} scores but there are {len(self.labels)} labels"
            )
        if self.card is not None and tuple(self.card.input_size) != self.input_size:
            raise ContractError(
                f"{self.model_path.name}: card says input {self.card.input_size}, model has {list(self.input_size)}"
            )
        self.input_dtype = np.dtype(self._in["dtype"])
        self._in_scale, self._in_zero = self._in.get("quantization", (0.0, 0))
        self.output_dtype = np.dtype(self._out["dtype"])
        self._out_scale, self._out_zero = self._out.get("quantization", (0.0, 0))
        self._in_index = self._in["index"]
        self._out_index = self._out["index"]
        self._input_shape = shape

    # ------------------------------------------------------------------ inference
    def prepare(self, face: np.ndarray) -> np.ndarray:
        """Face crop (any size, gray or BGR) -> the exact tensor the model takes (1, H, W, 1)."""
        return self.prepare_pixels(contract.preprocess(face, self.input_size))

    def prepare_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """(H, W) raw 0..255 values at input size -> model input tensor, quantised if need be."""
        x = np.asarray(pixels, np.float32).reshape(self._input_shape)
        if np.issubdtype(self.input_dtype, np.integer):
            return contract.quantize(x, self._in_scale, self._in_zero, self.input_dtype)
        return x.astype(self.input_dtype, copy=False)

    def invoke(self, tensor: np.ndarray) -> np.ndarray:
        """Run one prepared tensor; return the probabilities (float32, sums to 1). With `flip_average`,
        the mean of the face's and its mirror image's (a prepared tensor mirrors exactly, int8 too)."""
        probs = self._invoke_once(tensor)
        if self.flip_average:
            probs = 0.5 * (probs + self._invoke_once(np.ascontiguousarray(tensor[:, :, ::-1, :])))
        return probs

    def _invoke_once(self, tensor: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self._in_index, tensor)
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self._out_index).reshape(-1)
        if np.issubdtype(self.output_dtype, np.integer):
            out = contract.dequantize(out, self._out_scale, self._out_zero)
        out = np.clip(out.astype(np.float32), 0.0, None)
        total = float(out.sum())
        return out / total if total > 0 else np.full_like(out, 1.0 / out.size)

    def predict(self, face: np.ndarray) -> np.ndarray:
        """One face crop -> probabilities in `self.labels` order."""
        return self.invoke(self.prepare(face))

    def predict_pixels(self, faces: np.ndarray, progress: bool = False) -> np.ndarray:
        """(N, H, W) faces already at input size (e.g. FER2013 rows) -> (N, labels) probabilities.

        Batch-1 invokes, one face at a time: the same path the device runs.
        """
        faces = np.asarray(faces)
        if faces.ndim == 4 and faces.shape[-1] == 1:
            faces = faces[..., 0]
        if faces.ndim != 3 or faces.shape[1:] != self.input_size:
            raise ContractError(f"expected faces of shape (N, {self.input_size[0]}, {self.input_size[1]}), got {faces.shape}")
        probs = np.empty((len(faces), len(self.labels)), np.float32)
        iterator: Any = range(len(faces))
        if progress:
            from tqdm import tqdm

            iterator = tqdm(iterator, desc=f"{self.model_path.name}", unit="face", leave=False)
        for i in iterator:
            probs[i] = self.invoke(self.prepare_pixels(faces[i]))
        return probs

    def describe(self) -> str:
        q = "int8" if np.issubdtype(self.input_dtype, np.integer) else str(self.input_dtype)
        mirror = ", mirror-averaged" if self.flip_average else ""
        return (f"{self.model_path.name} ({q}, input {self.input_size[0]}x{self.input_size[1]}, {self.backend.name}, "
                f"{self.device}{mirror})")


def require_edgetpu_compiler() -> str:
    """Path of `edgetpu_compiler` on PATH, or a DeviceError saying how to get it."""
    import shutil

    path = shutil.which("edgetpu_compiler")
    if not path:
        raise DeviceError("edgetpu_compiler is not on PATH (x86-64 Debian/Ubuntu only; see README 'Coral')")
    return path

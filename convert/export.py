"""Keras model -> TFLite variants: one entry point, `export(model, formats, ...)`, one function per
format (like Ultralytics' exporter), each file validated through the edge classifier right after.

Variants (file `<base>_<variant>.tflite`):
  int8     full-integer: int8 weights and activations, int8 input and output, calibrated on real
           Training faces (calibrate.py); what the Raspberry Pi and the Edge TPU run
  float16  float16 weights, float32 compute and I/O
  dynamic  int8 weights, float activations (dynamic-range quantisation), float32 I/O
  float32  the float model as TFLite (the reference)
All have a fixed batch of 1: the model function is exported with an input signature
(1, H, W, 1) float32 and converted from that SavedModel.

What happens, in order (nothing is written before every input has been checked):
  1. load the model (a .keras file, or a fer-train run folder), check it against the contract
  2. load the data (--data, else the run's data.json, else ../shared/data), sample calibration faces
  3. convert each variant into a hidden work folder inside the output folder; validate each
  4. the gate (gate.py) on each variant; passing files move to their final names, failing ones
     to `<file>.rejected` (never to the name the runtime loads)
  5. latency benchmark, Edge TPU check (edgetpu.py), reports, model card (card.py)
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import os
import platform
import statistics
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from fer_edge import contract
from fer_edge.errors import ContractError, DataError, FerError, GateError, ModelError

from . import calibrate, card as card_mod, edgetpu as edgetpu_mod, gate as gate_mod

log = logging.getLogger(__name__)

VARIANTS: tuple[str, ...] = ("int8", "float16", "dynamic", "float32")
KERAS_SUFFIXES = (".keras", ".h5")
REJECTED_SUFFIX = ".rejected"


# --------------------------------------------------------------------------- the model to convert
@dataclasses.dataclass
class Source:
    """What MODEL on the command line resolves to."""

    model_path: Path  # the .keras file
    run_dir: Path | None  # the fer-train run folder, when MODEL is one
    base: str  # output base name: <base>_int8.tflite, <base>.json
    out_dir: Path
    config: dict[str, Any]  # the run's config.json ({} for a bare .keras file)
    data_info: dict[str, Any]  # the run's data.json ({} for a bare .keras file)


def resolve_source(model: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                   name: str | None = None) -> Source:
    """A .keras file or a fer-train run folder -> paths, base name and the run's records.

    Defaults: next to the input; for a run folder inside it, base name = the run folder's name.
    """
    path = Path(model)
    if not path.exists():
        raise ModelError(f"model not found: {path}")
    run_dir = None
    if path.is_dir():
        run_dir = path
        candidates = [path / ("model" + s) for s in KERAS_SUFFIXES]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise ModelError(f"{path} is a folder but holds no model.keras (not a fer-train run folder)")
        model_path = found[0]
        default_base = path.resolve().name
        default_out = path
    else:
        if path.suffix.lower() not in KERAS_SUFFIXES:
            raise ModelError(f"{path} is not a Keras model file (want .keras or .h5, or a fer-train run folder)")
        model_path = path
        default_base = path.stem
        default_out = path.parent
        if (path.parent / "config.json").is_file() and (path.parent / "data.json").is_file():
            run_dir = path.parent  # a run folder's model.keras named directly
            if path.stem == "model":
                default_base = path.parent.resolve().name
    base = name or default_base
    if not base or "/" in base or base.startswith("."):
        raise ModelError(f"bad output name {base!r}")
    config = calibrate.read_json(run_dir / "config.json") if run_dir else {}
    data_info = calibrate.read_json(run_dir / "data.json") if run_dir else {}
    return Source(model_path, run_dir, base, Path(out_dir) if out_dir else default_out, config, data_info)


def import_keras():
    """Keras on the TensorFlow backend (TFLite conversion goes through TensorFlow)."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    if keras.backend.backend() != "tensorflow":
        log.warning("Keras runs on the %s backend; TFLite export needs TensorFlow (set KERAS_BACKEND=tensorflow)",
                    keras.backend.backend())
    return keras


def load_keras_model(path: Path):
    """Load a .keras / .h5 file; ModelError (never a traceback) when it is corrupt or not Keras."""
    if not path.is_file():
        raise ModelError(f"model not found: {path}")
    if path.suffix.lower() == ".keras" and not zipfile.is_zipfile(path):
        raise ModelError(f"{path} is not a Keras model (a .keras file is a zip archive; this one is corrupt or something else)")
    keras = import_keras()
    try:  # custom layers of fer-train's builders register themselves on import
        import fer_train.models  # noqa: F401
    except Exception as exc:  # a missing or broken builder module must not stop a plain conversion
        log.debug("fer_train.models not importable: %s", exc)
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:
        raise ModelError(f"cannot load {path} as a Keras model: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if not hasattr(model, "inputs") or not hasattr(model, "predict"):
        raise ModelError(f"{path} does not hold a Keras model")
    return model


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    input_size: tuple[int, int]
    n_outputs: int
    params: int
    architecture: str


def check_model_contract(model, where: str = "model") -> ModelInfo:
    """One input (None, H, W, 1) grayscale of a fixed size, one output (None, n). ContractError else."""
    try:
        inputs, outputs = list(model.inputs), list(model.outputs)
    except (AttributeError, ValueError) as exc:
        raise ContractError(f"{where}: the model has no defined input ({exc})") from None
    if len(inputs) != 1 or len(outputs) != 1:
        raise ContractError(f"{where}: want one input and one output, got {len(inputs)} and {len(outputs)}")
    shape = tuple(inputs[0].shape)
    if len(shape) != 4 or shape[3] != 1:
        raise ContractError(
            f"{where}: input shape {shape} breaks the contract: want (batch, H, W, 1) grayscale"
            + (" (this model takes colour input)" if len(shape) == 4 and shape[3] == 3 else "")
        )
    if shape[1] is None or shape[2] is None or min(shape[1], shape[2]) < 8:
        raise ContractError(f"{where}: input shape {shape}: H and W must be fixed and >= 8")
    out_shape = tuple(outputs[0].shape)
    if len(out_shape) != 2 or out_shape[1] is None:
        raise ContractError(f"{where}: output shape {out_shape}: want (batch, number of labels)")
    arch = str(getattr(model, "name", "") or "")
    return ModelInfo((int(shape[1]), int(shape[2])), int(out_shape[1]), int(model.count_params()), arch)


def choose_labels(n_outputs: int, override: Sequence[str] | None, existing: contract.ModelCard | None,
                  config: dict[str, Any], where: str = "model") -> list[str]:
    """--labels, else the run's config.json, else the existing card's, else FER2013's (FER+ for 8 outputs)."""
    if override:
        labels, origin = list(override), "--labels"
    elif isinstance(config.get("labels"), list) and config["labels"]:
        labels, origin = [str(x) for x in config["labels"]], "the run's config.json"
    elif existing is not None:
        labels, origin = list(existing.labels), f"the existing card {existing.name}.json"
    elif n_outputs == len(contract.FERPLUS_EMOTIONS):
        labels, origin = list(contract.FERPLUS_EMOTIONS), "FER+"
    else:
        labels, origin = list(contract.EMOTIONS), "FER2013"
    if n_outputs != len(labels):
        raise ContractError(f"{where} gives {n_outputs} scores but there are {len(labels)} labels "
                            f"({', '.join(labels)}; from {origin})")
    return labels


def float_predict(model, x_uint8: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Float model probabilities for (N, H, W) uint8 faces (fer-train's predict_probs when present)."""
    try:
        from fer_train.evaluate import predict_probs
    except ImportError:
        predict_probs = None
    if predict_probs is not None:
        return np.asarray(predict_probs(model, x_uint8, batch_size=batch_size), np.float32)
    return np.asarray(model.predict(contract.batch_to_model_input(x_uint8), batch_size=batch_size, verbose=0), np.float32)


def check_probabilities(probs: np.ndarray, where: str) -> None:
    """The contract's output: one probability per label (softmax), rows summing to 1."""
    if not np.all(np.isfinite(probs)):
        raise ContractError(f"{where}: output has NaN/inf values")
    sums = probs.sum(axis=1)
    if probs.min() < -1e-4 or probs.max() > 1 + 1e-4 or np.abs(sums - 1).max() > 1e-2:
        raise ContractError(
            f"{where}: output is not a probability distribution (row sums {sums.min():.3f}..{sums.max():.3f}); "
            "the contract wants a softmax output"
        )


# --------------------------------------------------------------------------- one function per format
def export_saved_model(model, input_size: tuple[int, int], directory: Path) -> Path:
    """The model's inference function with a fixed (1, H, W, 1) float32 input, as a SavedModel."""
    keras = import_keras()
    spec = keras.InputSpec(shape=(1, input_size[0], input_size[1], 1), dtype="float32")
    try:
        model.export(str(directory), format="tf_saved_model", input_signature=[spec], verbose=False)
    except Exception as exc:
        raise ModelError(f"cannot export the model function for conversion: {str(exc).splitlines()[0]}") from None
    return directory


def _converter(saved_model: Path):
    import tensorflow as tf

    return tf, tf.lite.TFLiteConverter.from_saved_model(str(saved_model))


def to_float32(saved_model: Path, calibration: np.ndarray | None = None) -> bytes:
    _, conv = _converter(saved_model)
    return conv.convert()


def to_float16(saved_model: Path, calibration: np.ndarray | None = None) -> bytes:
    tf, conv = _converter(saved_model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_types = [tf.float16]
    return conv.convert()


def to_dynamic(saved_model: Path, calibration: np.ndarray | None = None) -> bytes:
    tf, conv = _converter(saved_model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    return conv.convert()


def to_int8(saved_model: Path, calibration: np.ndarray | None = None) -> bytes:
    if calibration is None or len(calibration) == 0:
        raise DataError("int8 conversion needs calibration faces")
    calibrate.check_calibration_faces(calibration)
    tf, conv = _converter(saved_model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: calibrate.representative_dataset(calibration)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


CONVERTERS: dict[str, Callable[[Path, np.ndarray | None], bytes]] = {
    "int8": to_int8, "float16": to_float16, "dynamic": to_dynamic, "float32": to_float32,
}


def convert_variant(variant: str, saved_model: Path, calibration: np.ndarray | None) -> bytes:
    try:
        return CONVERTERS[variant](saved_model, calibration)
    except (DataError, ContractError, ModelError):
        raise
    except Exception as exc:  # the converter's errors are long MLIR dumps: keep the first line
        first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise ModelError(f"TFLite conversion ({variant}) failed: {first}") from None


def validate_tflite(path: Path, variant: str, labels: Sequence[str], input_size: tuple[int, int],
                    face: np.ndarray | None = None) -> dict[str, Any]:
    """Load a written file through the edge classifier (contract checks) and run one predict."""
    from fer_edge.classifier import EmotionClassifier

    clf = EmotionClassifier(path, threads=1, labels=labels)
    if tuple(clf.input_size) != tuple(input_size):
        raise ContractError(f"{path.name}: input {clf.input_size} differs from the Keras model's {input_size}")
    if variant == "int8" and (clf.input_dtype != np.int8 or clf.output_dtype != np.int8):
        raise ContractError(f"{path.name}: want int8 input and output, got {clf.input_dtype} / {clf.output_dtype}")
    if face is None:
        face = np.full(input_size, 128, np.uint8)
    probs = clf.predict_pixels(face[None])
    check_probabilities(probs, path.name)
    return {
        "input": {"shape": [1, *input_size, 1], "dtype": str(clf.input_dtype),
                  "quantization": [float(clf._in_scale), int(clf._in_zero)]},
        "output": {"shape": [1, len(labels)], "dtype": str(clf.output_dtype),
                   "quantization": [float(clf._out_scale), int(clf._out_zero)]},
        "interpreter": clf.backend.name,
    }


def bench_latency(path: Path, labels: Sequence[str], face: np.ndarray, invokes: int = 200,
                  warmup: int = 10) -> dict[str, Any]:
    """ms per face of EmotionClassifier.invoke, 1 thread, median of `invokes` runs (after warm-up)."""
    from fer_edge.classifier import EmotionClassifier

    clf = EmotionClassifier(path, threads=1, labels=labels)
    tensor = clf.prepare_pixels(face)
    for _ in range(warmup):
        clf.invoke(tensor)
    times = []
    for _ in range(invokes):
        t0 = time.perf_counter()
        clf.invoke(tensor)
        times.append((time.perf_counter() - t0) * 1000.0)
    times.sort()
    return {
        "median_ms": round(statistics.median(times), 4),
        "p90_ms": round(times[min(len(times) - 1, int(0.9 * len(times)))], 4),
        "mean_ms": round(statistics.fmean(times), 4),
        "invokes": invokes, "threads": 1, "interpreter": clf.backend.name,
        "machine": platform.machine(), "processor": _cpu_name(),
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# --------------------------------------------------------------------------- the entry point
@dataclasses.dataclass
class ExportOptions:
    formats: tuple[str, ...] = ("int8",)
    out_dir: Path | None = None
    name: str | None = None
    data: Path | None = None
    calib_size: int = calibrate.DEFAULT_CALIB_SIZE
    seed: int = 0
    gate: bool = True
    split: str = "public"
    gate_rows: int | None = None
    max_drop: float = gate_mod.DEFAULT_MAX_DROP_PP
    min_agreement: float = gate_mod.DEFAULT_MIN_AGREEMENT_PCT
    allow_weak: bool = False  # the gate reports a useless model (not above the majority baseline) without failing it
    edgetpu: bool = False
    allow_cpu_ops: bool = False
    require_compiler: bool = False
    bench: int = 200
    labels: tuple[str, ...] | None = None
    ferplus_votes: Path | None = None
    progress: bool = True
    #: "auto": fit T on PublicTest (minimum NLL) and fold 1/T into the last Dense layer; a number: use
    #: that T; None: no calibration (the model's probabilities as trained)
    temperature: str | float | None = "auto"


@dataclasses.dataclass
class VariantResult:
    variant: str
    path: Path  # final file, or the .rejected one
    size: int
    sha256: str
    status: str  # "accepted", "rejected", "ungated"
    validation: dict[str, Any]
    gate: dict[str, Any] | None = None
    latency: dict[str, Any] | None = None
    macs: int | None = None

    def summary(self) -> dict[str, Any]:
        d = {"file": self.path.name, "status": self.status, "bytes": self.size, "sha256": self.sha256,
             "validation": self.validation, "latency": self.latency}
        if self.gate is not None:
            d["gate"] = {k: self.gate[k] for k in ("passed", "split", "rows", "reasons", "report_json", "report_md")}
            d["gate"].update({k: self.gate["metrics"][k] for k in
                              ("top1_float", "top1_converted", "drop_pp", "agreement_pct", "mean_abs_dprob")})
        return d


@dataclasses.dataclass
class ExportResult:
    source: Source
    variants: dict[str, VariantResult]
    card_path: Path
    report_path: Path
    edgetpu: dict[str, Any] | None = None


def export(model: str | os.PathLike, formats: Sequence[str] = ("int8",), *,
           options: ExportOptions | None = None, say: Callable[[str], None] | None = None,
           **overrides: Any) -> ExportResult:
    """Convert MODEL (a .keras file or a fer-train run folder) to the TFLite `formats`.

    Returns what was written. Raises GateError (exit 5) after writing the reports when a gate
    failed, EdgeTpuIncompatible (exit 3) when --edgetpu found blockers, and the named FerError
    of any bad input before writing anything.
    """
    opts = dataclasses.replace(options or ExportOptions(), formats=tuple(formats), **overrides)
    say = say or log.info
    formats = _check_formats(opts.formats, opts.edgetpu)

    # 1. model and contract: everything checked before anything is written
    src = resolve_source(model, opts.out_dir, opts.name)
    card_path = src.out_dir / f"{src.base}.json"
    existing = card_mod.load_existing(card_path, say)
    keras_model = load_keras_model(src.model_path)
    info = check_model_contract(keras_model, src.model_path.name)
    labels = choose_labels(info.n_outputs, opts.labels, existing, src.config, src.model_path.name)
    say(f"model: {src.model_path} ({info.architecture or 'keras'}, input {info.input_size[0]}x{info.input_size[1]}, "
        f"{len(labels)} labels, {info.params:,} params)")

    # 2. data: calibration faces and the gate's labelled split
    if opts.data is not None and not Path(opts.data).exists():
        raise DataError(f"data not found: {opts.data}")
    need_data = "int8" in formats or opts.gate
    dataset = data_path = None
    calib = calib_idx = None
    if need_data:
        data_path = calibrate.resolve_data_path(opts.data, src.run_dir)
        votes = calibrate.resolve_votes(opts.ferplus_votes, src.run_dir, data_path, labels)
        dataset = calibrate.load_data(data_path, votes)
        _check_data_labels(dataset, labels)
    elif opts.temperature == "auto":  # calibration wants PublicTest; without any data it is skipped, said
        try:
            data_path = calibrate.resolve_data_path(opts.data, src.run_dir)
        except DataError:
            say("warning: no labelled data found: the scores are NOT calibrated (pass --data; --temperature none "
                "says it is meant)")
        else:
            dataset = calibrate.load_data(data_path, calibrate.resolve_votes(opts.ferplus_votes, src.run_dir, data_path, labels))
            _check_data_labels(dataset, labels)
    if "int8" in formats:
        calib, calib_idx = calibrate.calibration_faces(dataset, opts.calib_size, opts.seed, info.input_size)
        say(f"calibration: {len(calib)} Training faces from {data_path} (class-balanced, seed {opts.seed})")
    calibration = None
    if opts.temperature is not None and not (opts.temperature == "auto" and dataset is None):
        calibration = calibrate_model(keras_model, opts.temperature, dataset, info.input_size, say)
    gate_set = None
    if opts.gate:
        gate_set = gate_mod.gate_split(dataset, opts.split, opts.gate_rows, opts.seed, info.input_size)
        float_probs = float_predict(keras_model, gate_set.x)
        check_probabilities(float_probs, src.model_path.name)
        say(f"gate: {gate_set.split}, {len(gate_set.y)} faces; float top-1 {gate_mod.top1(gate_set.y, float_probs):.2f}%")
    # one face for validation and the latency benchmark
    probe = calib[0] if calib is not None else gate_set.x[0] if gate_set is not None else np.full(info.input_size, 128, np.uint8)
    if gate_set is None:
        check_probabilities(float_predict(keras_model, probe[None]), src.model_path.name)

    # 3.-4. convert, validate, gate; files stay in a hidden work folder until judged
    src.out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, VariantResult] = {}
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix=".fer-convert-", dir=src.out_dir) as work, \
            tempfile.TemporaryDirectory(prefix="fer-convert-savedmodel-") as sm_dir:
        work = Path(work)
        saved = export_saved_model(keras_model, info.input_size, Path(sm_dir) / "saved_model")
        pending: dict[str, Path] = {}
        for variant in formats:
            t0 = time.perf_counter()
            data = convert_variant(variant, saved, calib)
            path = contract.write_bytes_atomic(work / f"{src.base}_{variant}.tflite", data)
            validation = validate_tflite(path, variant, labels, info.input_size, probe)
            pending[variant] = path
            say(f"{variant}: {path.name}, {len(data) / 1024:.1f} KiB, converted in {time.perf_counter() - t0:.1f} s, "
                f"input {validation['input']['dtype']}")
            results[variant] = VariantResult(variant, path, len(data), contract.file_sha256(path), "ungated", validation)
        for variant, path in pending.items():
            res = results[variant]
            res.macs = _macs(path)
            if opts.gate:
                conv_probs = gate_mod.converted_predict(path, labels, gate_set.x, progress=opts.progress)
                report = gate_mod.build_report(
                    variant=variant, model_file=f"{src.base}_{variant}.tflite", gate_set=gate_set, labels=labels,
                    float_probs=float_probs, conv_probs=conv_probs, max_drop_pp=opts.max_drop,
                    min_agreement_pct=opts.min_agreement, data=_data_info(dataset, data_path),
                    allow_weak=opts.allow_weak)
                res.status = "accepted" if report["passed"] else "rejected"
                report["file"] = f"{src.base}_{variant}.tflite" + ("" if report["passed"] else REJECTED_SUFFIX)
                gate_mod.write_reports(report, src.out_dir, src.base, variant)
                res.gate = report
                say(gate_mod.one_line(report))
                if not report["passed"]:
                    failures.append(gate_mod.failure_message(report, src.out_dir))
            final = src.out_dir / path.name
            if res.status == "rejected":
                final = final.with_name(final.name + REJECTED_SUFFIX)
                if (src.out_dir / path.name).exists():
                    say(f"warning: an older {path.name} is still in {src.out_dir}; it is NOT this conversion")
            else:
                final.with_name(final.name + REJECTED_SUFFIX).unlink(missing_ok=True)  # a stale verdict
            os.replace(path, final)
            res.path = final
            if opts.bench and res.status != "rejected":
                res.latency = bench_latency(final, labels, probe, opts.bench)
                say(f"{variant}: {res.latency['median_ms']:.3f} ms/face (median of {opts.bench}, 1 thread, {res.latency['interpreter']})")

    # 5. Edge TPU, reports, card
    tpu = None
    tpu_error: FerError | None = None
    if opts.edgetpu:
        int8 = results["int8"]
        if int8.status == "rejected":
            say("edgetpu: skipped, the int8 model failed the gate")
        else:
            try:
                tpu = edgetpu_step(int8.path, src.out_dir, src.base, opts, say)
            except FerError as exc:  # incompatible, compiler missing or failing: card and reports first
                tpu_error = exc
                tpu = getattr(exc, "report", None)
    if not opts.gate:
        say("gate: SKIPPED (--no-gate): the converted files are not checked against the float model")
    card_mod.update_card(
        card_path, existing=existing, base=src.base, labels=labels, input_size=info.input_size,
        architecture=str(src.config.get("model") or src.config.get("architecture") or info.architecture),
        params=info.params, results=results, keras_path=src.model_path, training=src.config,
        data=src.data_info or (_data_info(dataset, data_path) if dataset is not None else {}),
        edgetpu=tpu, gate_enabled=opts.gate)
    _record_calibration(card_path, calibration, [v for v, r in results.items() if r.status != "rejected"])
    say(f"card: {card_path}")
    report_path = write_convert_report(src, opts, formats, results, tpu, data_path, dataset, calib_idx, labels, info)
    say(f"report: {report_path}")
    result = ExportResult(src, results, card_path, report_path, tpu)
    if failures:
        failures.sort(key=lambda m: not m.startswith("int8"))  # the int8 verdict is what matters most
        raise GateError(" | ".join(failures))
    if tpu_error is not None:
        raise tpu_error
    return result


def edgetpu_step(model_path: Path, out_dir: Path, base: str, opts: ExportOptions, say: Callable[[str], None]) -> dict[str, Any]:
    """Check (and compile, when the compiler is installed) an int8 model; writes `<base>_edgetpu_check.json`.

    Raises EdgeTpuIncompatible (exit 3) on blockers, or ops on the CPU without --allow-cpu-ops;
    DeviceError (exit 6) when --require-compiler and the compiler is missing.
    """
    from fer_edge.errors import DeviceError

    check = edgetpu_mod.check_model(model_path)
    say(f"edgetpu check of {model_path.name} (compiler {edgetpu_mod.COMPILER_VERSION} rules):\n{check.table()}")
    say(f"edgetpu: {check.summary()}")
    report = check.to_dict()
    report_path = out_dir / f"{base}_edgetpu_check.json"
    problem = None
    if check.tensor_problems:
        problem = check.summary()
    elif not check.ops_ok and not opts.allow_cpu_ops:
        problem = check.summary() + " (pass --allow-cpu-ops to accept a partly-mapped model)"
    if problem is None:
        if edgetpu_mod.compiler_path() is None:
            msg = edgetpu_mod.missing_compiler_message(model_path, out_dir)
            report["compiler"] = {"available": False, "install": list(edgetpu_mod.INSTALL_COMMANDS),
                                  "command": " ".join(edgetpu_mod.compile_command(model_path, out_dir))}
            say(("error: " if opts.require_compiler else "warning: ") + msg)
            contract.write_json_atomic(report_path, report)
            if opts.require_compiler:
                exc = DeviceError(f"{edgetpu_mod.COMPILER} is not on PATH (--require-compiler); install commands printed above")
                exc.report = report
                raise exc
            return report
        comp = edgetpu_mod.run_compiler(model_path, out_dir)
        report["compiler"] = {"available": True, **{k: v for k, v in comp.items() if k != "stdout"},
                              "output": comp.get("stdout", "")}
        on_tpu, on_cpu = comp.get("ops_on_tpu"), comp.get("ops_on_cpu")
        say(f"edgetpu_compiler {comp.get('version', '?')}: {on_tpu} ops on the Edge TPU, {on_cpu} on the CPU -> "
            f"{comp['files'].get('tflite')}")
        if on_cpu and not opts.allow_cpu_ops:
            problem = f"edgetpu_compiler maps {on_cpu} op(s) to the CPU (pass --allow-cpu-ops to accept)"
    report["passed"] = problem is None
    contract.write_json_atomic(report_path, report)
    if problem is not None:
        exc = edgetpu_mod.EdgeTpuIncompatible(f"{model_path.name}: {problem}; details in {report_path.name}")
        exc.report = report
        raise exc
    return report


# --------------------------------------------------------------------------- calibration (temperature)
def parse_temperature(value: str | float | None) -> str | float | None:
    """--temperature: "auto" (fit on PublicTest), "none"/"off" (no calibration) or a number > 0."""
    if value is None or isinstance(value, float):
        return value
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    if text in ("none", "off", "1", "1.0"):
        return None
    try:
        t = float(text)
    except ValueError:
        raise DataError(f"--temperature must be auto, none or a number > 0, got {value!r}") from None
    if not (np.isfinite(t) and calibrate.T_RANGE[0] <= t <= calibrate.T_RANGE[1]):
        raise DataError(f"--temperature {t} is outside {calibrate.T_RANGE[0]}..{calibrate.T_RANGE[1]}")
    return t


def _softmax_dense(model):
    """The model's last layer when it is a Dense with a softmax activation (what every fer-train
    architecture ends in); ModelError otherwise: the temperature has nowhere exact to go."""
    import keras

    last = model.layers[-1]
    act = getattr(getattr(last, "activation", None), "__name__", "")
    if not isinstance(last, keras.layers.Dense) or act != "softmax":
        raise ModelError(f"the model does not end in Dense(activation='softmax') (it ends in {type(last).__name__}): "
                         "cannot fold a temperature into it; pass --temperature none")
    return last


def fold_temperature(model, temperature: float) -> None:
    """softmax(x W + b) -> softmax((x W + b) / T), exactly, by scaling the last Dense layer's kernel and
    bias in place. The argmax, hence every top-1 figure, is unchanged."""
    dense = _softmax_dense(model)
    weights = dense.get_weights()
    dense.set_weights([np.asarray(w, np.float32) / np.float32(temperature) for w in weights])


def calibrate_model(keras_model, temperature: str | float, dataset, input_size, say) -> dict[str, Any]:
    """Fit (or take) T, measure NLL/ECE on PublicTest before and after, fold 1/T into the model
    (a model that gives no probabilities is refused for that first, then one without a softmax Dense)."""
    fitted = temperature == "auto"
    before = after = None
    if dataset is not None and np.any(dataset.usage == 1):
        pub = gate_mod.gate_split(dataset, "public", None, 0, input_size)
        probs = float_predict(keras_model, pub.x)
        check_probabilities(probs, "the float model")
        logits = calibrate.logits_from_probs(probs)
        if fitted:
            temperature = calibrate.fit_temperature(logits, pub.y)
        before = calibrate.calibration_summary(probs, pub.y)
        after = calibrate.calibration_summary(calibrate.softmax(logits, temperature), pub.y)
    elif fitted:
        raise DataError("--temperature auto fits T on PublicTest, and the data has no PublicTest rows: "
                        "pass --temperature none or a number")
    t = float(temperature)
    at_bound = fitted and min(abs(t - b) / b for b in calibrate.T_RANGE) < 1e-3
    fold_temperature(keras_model, t)
    out = {"temperature": round(t, 4), "fitted_on": "PublicTest" if fitted else None,
           "method": "minimum NLL of the float model on PublicTest" if fitted else "given (--temperature)",
           "folded": contract.TEMPERATURE_IN_DENSE,
           "PublicTest": {"before": before, "after": after}}
    if at_bound:
        out["warning"] = f"T reached the end of its search range {calibrate.T_RANGE}: the model is near-certain on PublicTest"
        say(f"warning: {out['warning']}")
    say(f"temperature: T = {t:.4f}" + (f" (PublicTest NLL {before['nll']:.4f} -> {after['nll']:.4f}, "
                                       f"ECE {before['ece']:.4f} -> {after['ece']:.4f})" if before else ""))
    return out


def _converted_file(model_path, data: Path | None, ferplus_votes: Path | None):
    """A converted .tflite beside its card, and the labelled data to measure it on:
    (path, card, card path, variant name, labels, input size, data path, dataset); ModelError when unusable."""
    path = Path(model_path)
    if not path.is_file():
        raise ModelError(f"model not found: {path}")
    card = contract.load_card_for(path)
    if card is None:
        raise ModelError(f"{path}: no model card beside it: its labels and data are unknown")
    card_path = contract.card_path_for(path)
    variant = next((k for k, v in card.files.items() if v == path.name), None)
    if variant is None:
        raise ModelError(f"{path.name} is not one of the files its card {card_path.name} lists")
    labels, input_size = list(card.labels), tuple(card.input_size)
    data_path = calibrate.resolve_data_path(data)
    dataset = calibrate.load_data(data_path, calibrate.resolve_votes(ferplus_votes, None, data_path, labels))
    _check_data_labels(dataset, labels)
    return path, card, card_path, variant, labels, input_size, data_path, dataset


def calibrate_tflite(model_path: str | os.PathLike, temperature: str | float = "auto", *, data: Path | None = None,
                     ferplus_votes: Path | None = None, say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Fold a temperature into an already converted .tflite, in place: its final SOFTMAX gets
    beta = 1 / T (weights and quantisation untouched, so the argmax cannot move except on exact ties).

    For a model whose Keras source is gone (models/ ships .tflite files and cards only). T is fitted on
    PublicTest by minimum NLL of the logits of the card's float32 variant when it ships one (the float
    model's logits), else of this file's own softmax input (for int8: the dequantised int8 logits,
    far finer than its 1/256 output steps). Re-running it re-fits from the raw logits (beta 1), so it
    never compounds. Measures top-1, NLL and ECE on PublicTest and PrivateTest without the temperature
    and with it, and records them and T in the model card.
    """
    from fer_edge.classifier import EmotionClassifier

    from .tflite_graph import set_softmax_beta, softmax_beta

    say = say or log.info
    path, card, card_path, variant, labels, input_size, data_path, dataset = _converted_file(model_path, data,
                                                                                             ferplus_votes)
    sets = {}
    for split in ("public", "private"):
        try:
            g = gate_mod.gate_split(dataset, split, None, 0, input_size)
        except DataError:
            continue
        sets[g.split] = g
    if "PublicTest" not in sets:
        raise DataError(f"{data_path} has no PublicTest rows to fit a temperature on")
    pub = sets["PublicTest"]
    ref = path
    ref_name = card.files.get("float32")
    if ref_name and (path.parent / ref_name).is_file() and variant != "float32":
        ref = path.parent / ref_name
    if temperature == "auto":
        logits = calibrate.tflite_logits(ref, pub.x) / softmax_beta(ref)
        t = calibrate.fit_temperature(logits, pub.y)
        method = f"minimum NLL on PublicTest of the logits of {ref.name}"
    else:
        t, method = float(temperature), "given (--temperature)"
    say(f"temperature: T = {t:.4f} ({method})")
    with tempfile.TemporaryDirectory(prefix=".fer-calibrate-", dir=path.parent) as work:
        work = Path(work)
        raw = set_softmax_beta(path, 1.0, work / path.name)
        (work / card_path.name).write_text(card_path.read_text())
        scaled = set_softmax_beta(path, 1.0 / t, work / ("T_" + path.name))
        measured: dict[str, Any] = {}
        agreement: dict[str, float] = {}
        for split, g in sets.items():
            p0 = EmotionClassifier(raw, threads=1, labels=labels).predict_pixels(g.x)
            p1 = EmotionClassifier(scaled, threads=1, labels=labels).predict_pixels(g.x)
            measured[split] = {"before": calibrate.calibration_summary(p0, g.y),
                               "after": calibrate.calibration_summary(p1, g.y)}
            agreement[split] = round(100.0 * float(np.mean(p0.argmax(1) == p1.argmax(1))), 3)
            say(f"{split}: ECE {measured[split]['before']['ece']:.4f} -> {measured[split]['after']['ece']:.4f}, "
                f"top score {measured[split]['before']['top_score_min']:.3f}..{measured[split]['before']['top_score_max']:.3f} "
                f"-> {measured[split]['after']['top_score_min']:.3f}..{measured[split]['after']['top_score_max']:.3f}, "
                f"top-1 {measured[split]['before']['top1']:.3f}% -> {measured[split]['after']['top1']:.3f}%")
        os.replace(scaled, path)
    calibration = {"temperature": round(t, 4), "fitted_on": "PublicTest" if temperature == "auto" else None,
                   "method": method, "folded": "softmax beta = 1/T in the converted file (fer-convert FILE --temperature)",
                   "variants": [variant], "argmax_agreement_pct": agreement, **measured}
    card.metrics["calibration"] = calibration
    for split, m in measured.items():  # re-measured through the runtime's classifier: the card stays true
        entry = card.metrics.setdefault(variant, {}).get(split)
        if isinstance(entry, dict):
            entry["top1"] = m["after"]["top1"]
    card.sizes[path.name] = path.stat().st_size
    card.save(card_path)
    say(f"card: {card_path}")
    return calibration


def measure_tflite(model_path: str | os.PathLike, *, data: Path | None = None, ferplus_votes: Path | None = None,
                   say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Re-measure an already converted .tflite (`fer-convert FILE --measure`): top-1 on PublicTest and
    PrivateTest through the runtime's classifier (EmotionClassifier, batch-1 invokes, 1 thread) and, for a
    FER+ model, also on Microsoft's majority protocol; records them under the card's metrics[variant][split]
    ("top1", "n", and "top1_ferplus_majority", "n_ferplus_majority"). For files whose Keras source is gone
    (models/ ships .tflite files and cards only). The file itself is not touched."""
    from fer_edge.classifier import EmotionClassifier

    say = say or log.info
    path, card, card_path, variant, labels, input_size, data_path, dataset = _converted_file(model_path, data,
                                                                                             ferplus_votes)
    measured: dict[str, Any] = {}
    for split in ("public", "private"):
        try:
            g = gate_mod.gate_split(dataset, split, None, 0, input_size)
        except DataError:
            continue
        probs = EmotionClassifier(path, threads=1, labels=labels).predict_pixels(g.x)
        entry: dict[str, Any] = {"top1": round(gate_mod.top1(g.y, probs), 3), "n": int(len(g.y))}
        fm = gate_mod.ferplus_majority_figures(g.y, g.ferplus_majority, top1=probs)
        if fm is not None:
            entry.update(card_mod.ferplus_majority_entry(fm["top1"], fm["n"]))
        previous = (card.metrics.get(variant) or {}).get(g.split)
        if isinstance(previous, dict) and previous.get("top1") is not None and abs(previous["top1"] - entry["top1"]) > 1e-3:
            say(f"warning: {g.split}: the card said top-1 {previous['top1']:.3f}%, measured {entry['top1']:.3f}%")
        card.metrics.setdefault(variant, {}).setdefault(g.split, {}).update(entry)
        measured[g.split] = entry
        say(f"{path.name} on {g.split}: top-1 {entry['top1']:.2f}% ({entry['n']} faces)"
            + (f"; FER+ majority protocol {fm['top1']:.2f}% ({fm['n']} faces)" if fm else ""))
    if not measured:
        raise DataError(f"{data_path} has no PublicTest or PrivateTest rows to measure on")
    card.save(card_path)
    say(f"card: {card_path}")
    return measured


def _record_calibration(card_path: Path, calibration: dict[str, Any] | None, variants: Sequence[str]) -> None:
    """The card says which temperature its files carry (and drops a stale one: --temperature none)."""
    card = contract.ModelCard.load(card_path)
    if calibration is None:
        card.metrics.pop("calibration", None)
    else:
        kept = card.metrics.get("calibration") or {}
        same = all(kept.get(k) == calibration.get(k) for k in ("temperature", "folded", "method"))
        # converting more variants of the same model later (--split private, --int8 only) keeps the others'
        carried = [v for v in kept.get("variants", []) if v not in variants and v in card.files] if same else []
        card.metrics["calibration"] = {**calibration, "variants": carried + list(variants)}
    card.save(card_path)


# --------------------------------------------------------------------------- helpers
def _check_formats(formats: Sequence[str], edgetpu: bool) -> tuple[str, ...]:
    out = []
    for f in formats or ("int8",):
        if f not in VARIANTS:
            raise ModelError(f"unknown format {f!r} (use {', '.join(VARIANTS)})")
        if f not in out:
            out.append(f)
    if edgetpu and "int8" not in out:
        out.insert(0, "int8")  # the Edge TPU runs int8 only
    return tuple(sorted(out, key=VARIANTS.index))


def _check_data_labels(dataset, labels: Sequence[str]) -> None:
    data_labels = list(getattr(dataset, "labels", contract.EMOTIONS))
    if list(labels[: len(data_labels)]) != data_labels:
        raise ContractError(f"the data's labels ({', '.join(data_labels)}) do not match the model's ({', '.join(labels)})")


def _data_info(dataset, data_path: Path | None) -> dict[str, Any]:
    if dataset is None:
        return {}
    if hasattr(dataset, "data_info"):
        return dataset.data_info()
    return {"path": str(data_path)}


def _macs(path: Path) -> int | None:
    from .tflite_graph import count_macs, read_graph

    try:
        return count_macs(read_graph(path))
    except ModelError:
        return None


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for mod in ("tensorflow", "keras", "ai_edge_litert", "numpy"):
        try:
            out[mod] = getattr(__import__(mod), "__version__", "?")
        except ImportError:
            pass
    return out


def write_convert_report(src: Source, opts: ExportOptions, formats, results, tpu, data_path, dataset,
                         calib_idx, labels, info: ModelInfo) -> Path:
    """`<base>_convert.json`: everything this conversion did, machine-readable."""
    calibration = None
    if calib_idx is not None:
        calibration = {"data": str(data_path), "sha256": getattr(dataset, "sha256", ""), "split": "Training",
                       "size": int(len(calib_idx)), "seed": opts.seed,
                       "classes": calibrate.class_balance(dataset, calib_idx)}
    report = {
        "model": str(src.model_path), "run": str(src.run_dir) if src.run_dir else None, "base": src.base,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "labels": list(labels), "input_size": list(info.input_size), "params": info.params,
        "formats": list(formats), "calibration": calibration,
        "gate": ({"split": opts.split, "rows": opts.gate_rows, "max_drop_pp": opts.max_drop,
                  "min_agreement_pct": opts.min_agreement, "allow_weak": opts.allow_weak} if opts.gate else "skipped (--no-gate)"),
        "rejected_files": f"a variant failing the gate is written as <file>{REJECTED_SUFFIX}, never under its final name",
        "variants": {v: r.summary() for v, r in results.items()},
        "edgetpu": tpu, "versions": _versions(),
    }
    return contract.write_json_atomic(src.out_dir / f"{src.base}_convert.json", report)

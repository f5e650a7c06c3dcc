"""Edge TPU readiness: a static check of an int8 .tflite, then `edgetpu_compiler` when installed.

The check reads the flatbuffer (tflite_graph) and asks what the last released Edge TPU compiler
(16.0) asks: every tensor quantised (int8/uint8; int32 only for constant biases and shape
arguments), static shapes, batch 1, and every operator — at its version — in the Edge TPU's list.

Exit codes (`fer-convert --edgetpu`, see cli.py):
  3  incompatible: a tensor is not quantised / has a dynamic shape (the compiler would refuse the
     whole model), or an operator would fall back to the CPU (waived by --allow-cpu-ops)
  0  compatible; when `edgetpu_compiler` is not on PATH this is said, with the install commands,
     and the exit stays 0 (the check itself passed) unless --require-compiler is given:
  6  --require-compiler and no `edgetpu_compiler` on PATH (DeviceError)
"""
from __future__ import annotations

import collections
import dataclasses
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from fer_edge.errors import ContractError, DeviceError, ModelError

from .tflite_graph import Graph, read_graph

COMPILER = "edgetpu_compiler"
COMPILER_VERSION = "16.0"

# Operators the Edge TPU runs, with the highest operator version the check accepts.
#
# Which operators: Coral, "TensorFlow models on the Edge TPU", section "Supported operations"
#   https://coral.ai/docs/edgetpu/models-intro/#supported-operations
# Which versions: compiler 16.0 (the last release, 16.0.384591198) parses models with a TFLite
# op resolver of its time and stops at newer op versions ("Didn't find op for builtin opcode
# 'CONV_2D' version '6'": google-coral/edgetpu#631, CONV_2D v6 is TF 2.9). The caps below are the
# highest version of each op whose minimum runtime is <= TF 2.5.0 in TensorFlow's
# tensorflow/lite/tools/versioning/runtime_version.cc. FULLY_CONNECTED is capped lower (4, the
# plain int8 kernel): Coral lists "only default format supported for fully-connected weights;
# output tensor is one-dimensional", which rules out v5 (keep_num_dims) and later variants.
# A pre-check, not the compiler: `edgetpu_compiler -s` has the last word when installed.
EDGETPU_OPS: dict[str, tuple[int, str]] = {
    "ADD": (3, ""),
    "AVERAGE_POOL_2D": (3, "no fused activation"),
    "CONCATENATION": (3, "no fused activation"),
    "CONV_2D": (5, ""),
    "DEPTHWISE_CONV_2D": (6, ""),
    "EXPAND_DIMS": (1, ""),
    "FULLY_CONNECTED": (4, "default weights format, 1-D output"),
    "L2_NORMALIZATION": (2, ""),
    "LOGISTIC": (3, ""),
    "MAX_POOL_2D": (3, "no fused activation"),
    "MAXIMUM": (4, ""),
    "MEAN": (3, "reduction over x/y only"),
    "MINIMUM": (4, ""),
    "MUL": (4, ""),
    "PACK": (3, ""),
    "PAD": (3, "padding over x/y only"),
    "PRELU": (1, ""),
    "QUANTIZE": (2, ""),
    "REDUCE_MAX": (3, ""),
    "REDUCE_MIN": (3, ""),
    "RELU": (3, ""),
    "RELU6": (3, ""),
    "RELU_N1_TO_1": (1, ""),
    "RESHAPE": (1, ""),
    "RESIZE_BILINEAR": (4, "3-D input/output; may stay on CPU for precision"),
    "RESIZE_NEAREST_NEIGHBOR": (4, "3-D input/output; may stay on CPU for precision"),
    "RSQRT": (2, ""),
    "SLICE": (5, ""),
    "SOFTMAX": (3, "1-D input, at most 16,000 elements"),
    "SPACE_TO_DEPTH": (2, ""),
    "SPLIT": (4, ""),
    "SQUARED_DIFFERENCE": (2, ""),
    "SQUEEZE": (2, "leading 1s only"),
    "STRIDED_SLICE": (5, "strides of 1 only"),
    "SUB": (5, ""),
    "SUM": (2, ""),
    "TANH": (3, ""),
    "TRANSPOSE": (5, ""),
    "TRANSPOSE_CONV": (3, ""),
}

QUANTISED_TYPES = ("INT8", "UINT8")

INSTALL_COMMANDS = (
    "curl https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo apt-key add -",
    'echo "deb https://packages.cloud.google.com/apt coral-edgetpu-stable main"'
    " | sudo tee /etc/apt/sources.list.d/coral-edgetpu.list",
    "sudo apt-get update",
    "sudo apt-get install edgetpu-compiler",
)


class EdgeTpuIncompatible(ContractError):
    """The model cannot run (wholly) on the Edge TPU; exit code 3."""


@dataclasses.dataclass
class OpRow:
    op: str
    version: int
    count: int
    supported: bool
    reason: str


@dataclasses.dataclass
class EdgeTpuCheck:
    model: str
    ops: list[OpRow]
    tensor_problems: list[str]  # whole-model blockers: float tensors, dynamic shapes, batch > 1
    compiler: dict[str, Any] | None = None  # what edgetpu_compiler said, None when not run

    @property
    def ops_ok(self) -> bool:
        return all(r.supported for r in self.ops)

    @property
    def ok(self) -> bool:
        return not self.tensor_problems and self.ops_ok

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "compiler_target": COMPILER_VERSION,
            "ok": self.ok,
            "quantised_static": not self.tensor_problems,
            "all_ops_supported": self.ops_ok,
            "tensor_problems": self.tensor_problems,
            "ops": [dataclasses.asdict(r) for r in self.ops],
            "compiler": self.compiler,
        }

    def table(self) -> str:
        """Per-op table: op, version, count, supported y/n, reason."""
        head = ("op", "version", "count", "edgetpu", "reason")
        rows = [(r.op, str(r.version), str(r.count), "y" if r.supported else "n", r.reason) for r in self.ops]
        widths = [max(len(x) for x in col) for col in zip(head, *rows)]
        fmt = "  ".join("{:<%d}" % w for w in widths)
        lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
        lines += [fmt.format(*r) for r in rows]
        return "\n".join(line.rstrip() for line in lines)

    def summary(self) -> str:
        n_ops = sum(r.count for r in self.ops)
        n_bad = sum(r.count for r in self.ops if not r.supported)
        if self.tensor_problems:
            return f"NOT Edge TPU compatible: {self.tensor_problems[0]}" + (
                f" (+{len(self.tensor_problems) - 1} more)" if len(self.tensor_problems) > 1 else "")
        if n_bad:
            bad = sorted({r.op for r in self.ops if not r.supported})
            return f"{n_bad} of {n_ops} ops would run on the CPU ({', '.join(bad)})"
        return f"all {n_ops} ops supported by the Edge TPU (compiler {COMPILER_VERSION} rules)"


def check_model(path: str | os.PathLike) -> EdgeTpuCheck:
    """Static Edge TPU compatibility check of a .tflite file."""
    return check_graph(read_graph(path))


def check_graph(graph: Graph) -> EdgeTpuCheck:
    problems: list[str] = []
    float_tensors = [t.name for t in graph.tensors if t.type not in QUANTISED_TYPES + ("INT32",)]
    if float_tensors:
        types = sorted({t.type for t in graph.tensors if t.name in set(float_tensors)})
        problems.append(
            f"not fully quantised: {len(float_tensors)} tensor(s) of type {'/'.join(types)}"
            f" (e.g. {float_tensors[0]!r}); the Edge TPU needs int8 weights and activations"
        )
    for t in graph.tensors:
        if t.type in QUANTISED_TYPES and not t.quantized:
            problems.append(f"tensor {t.name!r} is {t.type} without quantisation parameters")
        if t.type == "INT32" and not t.is_constant:
            problems.append(f"tensor {t.name!r} is a computed int32 tensor (only constant biases/shapes may be int32)")
    dynamic = [t.name for t in graph.tensors if t.dynamic]
    if dynamic:
        problems.append(f"dynamic shape (-1 in shape_signature) in {len(dynamic)} tensor(s), e.g. {dynamic[0]!r}")
    for i in graph.inputs:
        t = graph.tensors[i]
        if len(t.shape) == 4 and t.shape[0] != 1:
            problems.append(f"input {t.name!r} has batch {t.shape[0]}; the Edge TPU needs batch 1")

    counts: collections.Counter = collections.Counter()
    for op in graph.operators:
        counts[(op.name, op.version, *_op_verdict(graph, op))] += 1
    rows = [OpRow(name, version, n, ok, reason) for (name, version, ok, reason), n in counts.items()]
    rows.sort(key=lambda r: (r.supported, r.op, r.version))
    return EdgeTpuCheck(model=str(graph.path), ops=rows, tensor_problems=problems)


def _op_verdict(graph: Graph, op) -> tuple[bool, str]:
    entry = EDGETPU_OPS.get(op.name)
    if entry is None:
        return False, "not an Edge TPU operation"
    max_version, note = entry
    if op.version > max_version:
        return False, f"version {op.version} > {max_version}, newer than compiler {COMPILER_VERSION} accepts"
    types = {graph.tensors[i].type for i in op.inputs + op.outputs if i >= 0}
    if types - set(QUANTISED_TYPES) - {"INT32"}:
        return False, "works on " + "/".join(sorted(types - set(QUANTISED_TYPES) - {"INT32"})) + " data"
    return True, note


# --------------------------------------------------------------------------- the compiler
def compiler_path() -> str | None:
    return shutil.which(COMPILER)


def compile_command(model_path: str | os.PathLike, out_dir: str | os.PathLike) -> list[str]:
    return [COMPILER, "-s", "-o", str(out_dir), str(model_path)]


def missing_compiler_message(model_path: str | os.PathLike, out_dir: str | os.PathLike) -> str:
    """What to print when `edgetpu_compiler` is not on PATH: how to install it, how to compile."""
    cmd = " ".join(compile_command(model_path, out_dir))
    return "\n".join([
        f"{COMPILER} is not on PATH: the model was checked but not compiled.",
        "Install it (x86-64 Debian/Ubuntu; Coral's apt repository):",
        *("  " + c for c in INSTALL_COMMANDS),
        "then compile with:",
        f"  {cmd}",
    ])


_NUM = {
    "version": re.compile(r"Edge TPU Compiler version\s+(\S+)"),
    "total_ops": re.compile(r"Total number of operations:\s*(\d+)"),
    "ops_on_tpu": re.compile(r"Number of operations that will run on Edge TPU:\s*(\d+)"),
    "ops_on_cpu": re.compile(r"Number of operations that will run on CPU:\s*(\d+)"),
    "subgraphs": re.compile(r"Number of Edge TPU subgraphs:\s*(\d+)"),
    "on_chip_memory": re.compile(r"On-chip memory used for caching model parameters:\s*(\S+)"),
    "off_chip_memory": re.compile(r"Off-chip memory used for streaming uncached model parameters:\s*(\S+)"),
}
_OP_LINE = re.compile(r"^([A-Z][A-Z0-9_]*)\s+(\d+)\s+(\S.*?)\s*$")


def parse_compiler_output(text: str) -> dict[str, Any]:
    """`edgetpu_compiler -s` stdout -> counts and the per-operator table."""
    out: dict[str, Any] = {}
    for key, rx in _NUM.items():
        m = rx.search(text)
        if m:
            out[key] = int(m.group(1)) if m.group(1).isdigit() else m.group(1)
    ops = []
    in_table = False
    for line in text.splitlines():
        if line.strip().startswith("Operator") and "Status" in line:
            in_table = True
            continue
        if in_table:
            m = _OP_LINE.match(line.strip())
            if m:
                ops.append({"op": m.group(1), "count": int(m.group(2)), "status": m.group(3)})
    out["ops"] = ops
    if "ops_on_tpu" not in out and ops:
        out["ops_on_tpu"] = sum(o["count"] for o in ops if o["status"].startswith("Mapped to Edge TPU"))
        out["ops_on_cpu"] = sum(o["count"] for o in ops if not o["status"].startswith("Mapped to Edge TPU"))
    if "ops_on_tpu" not in out and "total_ops" in out:  # no CPU lines printed: everything mapped
        out["ops_on_tpu"], out["ops_on_cpu"] = out["total_ops"], 0
    return out


def run_compiler(model_path: str | os.PathLike, out_dir: str | os.PathLike, timeout_s: float = 600) -> dict[str, Any]:
    """Compile `model_path` into `out_dir`; returns the parsed report plus the output files.

    The compiler writes into a temporary folder; its `_edgetpu.tflite` and `.log` move into
    `out_dir` only when it succeeded, so a failed compile leaves no file behind.
    """
    exe = compiler_path()
    if exe is None:
        raise DeviceError(f"{COMPILER} is not on PATH")
    model_path, out_dir = Path(model_path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".edgetpu-", dir=out_dir) as tmp:
        cmd = [exe, "-s", "-o", tmp, str(model_path)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise ModelError(f"{COMPILER} did not finish within {timeout_s:.0f} s") from None
        text = (proc.stdout or "") + (proc.stderr or "")
        if proc.returncode != 0:
            last = [ln for ln in text.splitlines() if ln.strip()][-1:] or ["(no output)"]
            raise EdgeTpuIncompatible(f"{COMPILER} failed on {model_path.name} (exit {proc.returncode}): {last[0]}")
        report = parse_compiler_output(text)
        report["command"] = " ".join(compile_command(model_path, out_dir))
        report["stdout"] = text
        files = {}
        for produced in sorted(Path(tmp).iterdir()):
            target = out_dir / produced.name
            os.replace(produced, target)
            files[produced.suffix.lstrip(".")] = target.name
        if "tflite" not in files:
            raise ModelError(f"{COMPILER} reported success but wrote no .tflite into {out_dir}")
        report["files"] = files
    return report

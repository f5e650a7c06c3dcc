"""Edge TPU readiness: the static check, the missing-compiler path, and a fake compiler's output."""
from __future__ import annotations

import json
import os
import stat
import textwrap
from pathlib import Path

import pytest

from fer_convert import edgetpu
from fer_convert.tflite_graph import count_macs, read_graph
from fer_edge.errors import ModelError
from tests.convert.conftest import run_convert

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tflite_pair(tmp_path_factory, trained_keras, tiny_data) -> dict[str, Path]:
    """int8 and float32 conversions of the trained model (gate off: these tests are about the files)."""
    out = tmp_path_factory.mktemp("tpu")
    code = run_convert([trained_keras, "--int8", "--float32", "--no-gate", "--bench", "0", "--data", tiny_data,
                        "--out-dir", out, "--name", "m"])
    assert code == 0
    return {"int8": out / "m_int8.tflite", "float32": out / "m_float32.tflite"}


def test_int8_conv_net_is_fully_supported(tflite_pair):
    check = edgetpu.check_model(tflite_pair["int8"])
    assert check.ok and check.tensor_problems == []
    names = {r.op for r in check.ops}
    assert {"CONV_2D", "FULLY_CONNECTED", "SOFTMAX"} <= names
    assert all(r.supported for r in check.ops)
    table = check.table()
    assert table.splitlines()[0].split() == ["op", "version", "count", "edgetpu", "reason"]
    conv = [line.split() for line in table.splitlines() if line.startswith("CONV_2D")]
    assert conv and conv[0][2] == "2" and conv[0][3] == "y"  # op, version, count, supported
    assert all(line == line.rstrip() for line in table.splitlines())


def test_float32_model_is_not_quantised(tflite_pair):
    check = edgetpu.check_model(tflite_pair["float32"])
    assert not check.ok
    assert "not fully quantised" in check.tensor_problems[0] and "FLOAT32" in check.tensor_problems[0]
    assert any(not r.supported and "FLOAT32" in r.reason for r in check.ops)


def test_cli_float32_tflite_exits_3(tflite_pair, capsys):
    code = run_convert([tflite_pair["float32"], "--edgetpu"])
    captured = capsys.readouterr()
    assert code == 3
    assert "not fully quantised" in captured.err
    assert "op" in captured.out and "CONV_2D" in captured.out  # the table is printed before the verdict


def test_compiler_missing_prints_install_commands(tflite_pair, capsys, monkeypatch):
    monkeypatch.setattr(edgetpu.shutil, "which", lambda name: None)
    code = run_convert([tflite_pair["int8"], "--edgetpu"])
    out = capsys.readouterr().out
    assert code == 0  # the check passed; only the compiler is missing
    assert "edgetpu_compiler is not on PATH" in out
    assert 'echo "deb https://packages.cloud.google.com/apt coral-edgetpu-stable main"' in out
    assert "sudo apt-get install edgetpu-compiler" in out
    assert f"edgetpu_compiler -s -o {tflite_pair['int8'].parent} {tflite_pair['int8']}" in out
    report = json.loads((tflite_pair["int8"].parent / "m_int8_edgetpu_check.json").read_text())
    assert report["ok"] is True and report["compiler"]["available"] is False

    code = run_convert([tflite_pair["int8"], "--edgetpu", "--require-compiler"])
    assert code == 6
    assert "error:" in capsys.readouterr().err


FAKE_COMPILER = r"""#!/usr/bin/env python3
# Mimics `edgetpu_compiler -s -o OUT MODEL` (compiler 16.0 output format) for the tests.
import os, sys
args = sys.argv[1:]
out = args[args.index("-o") + 1]
model = args[-1]
stem = os.path.splitext(os.path.basename(model))[0]
cpu = int(os.environ.get("FAKE_CPU_OPS", "0"))
with open(os.path.join(out, stem + "_edgetpu.tflite"), "wb") as fh:
    fh.write(open(model, "rb").read())
with open(os.path.join(out, stem + "_edgetpu.log"), "w") as fh:
    fh.write("Edge TPU Compiler version 16.0.384591198\n")
print("Edge TPU Compiler version 16.0.384591198")
print("Started a compilation timeout timer of 180 seconds.")
print()
print("Model compiled successfully in 12 ms.")
print()
print("Input model: " + model)
print("Input size: 7.63KiB")
print("Output model: " + os.path.join(out, stem + "_edgetpu.tflite"))
print("Output size: 62.75KiB")
print("On-chip memory used for caching model parameters: 9.25KiB")
print("On-chip memory remaining for caching model parameters: 8.08MiB")
print("Off-chip memory used for streaming uncached model parameters: 0.00B")
print("Number of Edge TPU subgraphs: 1")
print("Total number of operations: 6")
print("Operation log: " + os.path.join(out, stem + "_edgetpu.log"))
print()
if cpu:
    print("Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of "
          "the model will instead run on the CPU, which is slower.")
print("Number of operations that will run on Edge TPU: %d" % (6 - cpu))
print("Number of operations that will run on CPU: %d" % cpu)
print()
print("Operator                       Count      Status")
print()
print("CONV_2D                        2          Mapped to Edge TPU")
print("MAX_POOL_2D                    1          Mapped to Edge TPU")
print("MEAN                           1          Mapped to Edge TPU")
print("FULLY_CONNECTED                1          Mapped to Edge TPU")
if cpu:
    print("SOFTMAX                        1          Operation is otherwise supported, but not mapped due to some unspecified limitation")
else:
    print("SOFTMAX                        1          Mapped to Edge TPU")
print("Compilation child process completed within timeout period.")
print("Compilation succeeded! ")
"""


@pytest.fixture
def fake_compiler(tmp_path, monkeypatch) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "edgetpu_compiler"
    exe.write_text(FAKE_COMPILER)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    return exe


def test_parse_compiler_output():
    text = textwrap.dedent("""\
        Edge TPU Compiler version 16.0.384591198
        Number of Edge TPU subgraphs: 1
        Total number of operations: 141
        Number of operations that will run on Edge TPU: 138
        Number of operations that will run on CPU: 3

        Operator                       Count      Status

        RESHAPE                        1          Operation is otherwise supported, but not mapped due to some unspecified limitation
        CONV_2D                        120        Mapped to Edge TPU
        """)
    r = edgetpu.parse_compiler_output(text)
    assert r["version"] == "16.0.384591198" and r["total_ops"] == 141
    assert (r["ops_on_tpu"], r["ops_on_cpu"], r["subgraphs"]) == (138, 3, 1)
    assert r["ops"][0] == {"op": "RESHAPE", "count": 1,
                           "status": "Operation is otherwise supported, but not mapped due to some unspecified limitation"}
    # all-mapped output without the per-device lines
    r = edgetpu.parse_compiler_output("Total number of operations: 6\n")
    assert (r["ops_on_tpu"], r["ops_on_cpu"]) == (6, 0)


def test_fake_compiler_all_mapped(tflite_pair, fake_compiler, tmp_path, capsys):
    out = tmp_path / "compiled"
    code = run_convert([tflite_pair["int8"], "--edgetpu", "--out-dir", out])
    assert code == 0, capsys.readouterr().err
    assert (out / "m_int8_edgetpu.tflite").is_file() and (out / "m_int8_edgetpu.log").is_file()
    assert "6 ops on the Edge TPU, 0 on the CPU" in capsys.readouterr().out
    report = json.loads((out / "m_int8_edgetpu_check.json").read_text())
    assert report["compiler"]["ops_on_tpu"] == 6 and report["compiler"]["version"] == "16.0.384591198"
    assert not any(p.name.startswith(".edgetpu-") for p in out.iterdir())


def test_fake_compiler_cpu_ops(tflite_pair, fake_compiler, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_CPU_OPS", "1")
    out = tmp_path / "compiled"
    assert run_convert([tflite_pair["int8"], "--edgetpu", "--out-dir", out]) == 3
    assert "1 op(s) to the CPU" in capsys.readouterr().err
    assert run_convert([tflite_pair["int8"], "--edgetpu", "--out-dir", out, "--allow-cpu-ops"]) == 0


def test_unsupported_op_version_is_reported():
    from fer_convert.tflite_graph import Graph, Operator, Tensor

    t = Tensor("x", "INT8", (1, 4, 4, 8), None, True, False)
    graph = Graph(Path("g.tflite"), (t, t), (Operator("CONV_2D", 6, (0,), (1,)), Operator("GELU", 1, (0,), (1,))),
                  (0,), (1,), 1)
    check = edgetpu.check_graph(graph)
    reasons = {r.op: r.reason for r in check.ops}
    assert "newer than compiler 16.0" in reasons["CONV_2D"]
    assert reasons["GELU"] == "not an Edge TPU operation"
    assert check.tensor_problems == [] and not check.ok
    assert "would run on the CPU" in check.summary()


def test_dynamic_shape_is_a_blocker():
    from fer_convert.tflite_graph import Graph, Operator, Tensor

    t = Tensor("x", "INT8", (1, 4, 4, 8), (-1, 4, 4, 8), True, False)
    check = edgetpu.check_graph(Graph(Path("g.tflite"), (t,), (Operator("RELU", 1, (0,), (0,)),), (0,), (0,), 1))
    assert any("dynamic shape" in p for p in check.tensor_problems)


def test_macs_of_the_small_cnn(tflite_pair):
    # conv 5x5/2, 1->16 on 48x48 (valid) -> 22x22x16; maxpool -> 11x11; conv 3x3, 16->16 -> 9x9x16;
    # dense 16 -> 7
    expected = 22 * 22 * 16 * 5 * 5 * 1 + 9 * 9 * 16 * 3 * 3 * 16 + 16 * 7
    assert count_macs(read_graph(tflite_pair["int8"])) == expected
    assert count_macs(read_graph(tflite_pair["float32"])) == expected


def test_not_a_tflite_file(tmp_path):
    bad = tmp_path / "x.tflite"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(ModelError, match="not a TFLite model"):
        read_graph(bad)


def test_require_compiler_in_a_conversion_still_writes_the_card(tmp_path, trained_keras, tiny_data, monkeypatch, capsys):
    monkeypatch.setattr(edgetpu.shutil, "which", lambda name: None)
    out = tmp_path / "out"
    code = run_convert([trained_keras, "--edgetpu", "--require-compiler", "--no-gate", "--bench", "0",
                        "--data", tiny_data, "--out-dir", out])
    assert code == 6  # --edgetpu alone implies the int8 variant
    assert "sudo apt-get install edgetpu-compiler" in capsys.readouterr().out
    from fer_edge.contract import ModelCard

    card = ModelCard.load(out / "tiny_cnn.json")
    assert card.files["int8"] == "tiny_cnn_int8.tflite" and "edgetpu" not in card.files
    assert card.metrics["edgetpu"]["compiler"]["available"] is False

"""CLI polish: `fer-train models` answers from a table cached per version of train/models.py (true to
what building the models gives), and TensorFlow's native start-up noise is filtered unless -v."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fer_edge.clitools import native_stderr_filtered
from fer_train import model_table


def test_models_answers_from_the_cache_without_importing_keras():
    code = ("import sys\nfrom click.testing import CliRunner\nfrom fer_train.cli import cli\n"
            "out = CliRunner().invoke(cli, ['models'])\n"
            "print(out.exit_code, 'keras' in sys.modules, 'tensorflow' in sys.modules)\nprint(out.output)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "XDG_CACHE_HOME": "/nonexistent"})
    first, *table = out.stdout.splitlines()
    assert first == "0 False False", out.stdout + out.stderr
    assert table[0].split() == ["name", "params", "MMACs", "description"]
    assert {line.split()[0] for line in table[1:] if line.strip()} >= {"edgenet", "edgenet_s"}


def test_the_shipped_table_is_for_this_models_py_and_true():
    key = model_table.source_key((48, 48), 7)
    shipped = json.loads(model_table.SHIPPED.read_text())
    assert key in shipped, ("train/model_table.json is not for this train/models.py (or Keras): "
                            "run `python -m fer_train.model_table` to rebuild it")
    from fer_train.models import describe_models

    assert shipped[key] == describe_models((48, 48), 7)


def test_the_cache_follows_the_source(tmp_path, monkeypatch):
    path = tmp_path / "cache.json"
    rows = [{"name": "x", "description": "d", "params": 1, "macs": 2}]
    key = model_table.source_key((48, 48), 7)
    assert model_table.store(key, rows, path)
    assert model_table.lookup(key, (path,)) == rows
    assert model_table.lookup(model_table.source_key((64, 64), 7), (path,)) is None  # another input size
    other = "models.py:" + "0" * 64 + key[key.index("|"):]
    model_table.store(other, rows, path)  # models.py changed: the old source's rows are dropped
    assert json.loads(path.read_text()).keys() == {other}


def test_native_start_up_noise_is_filtered_and_the_rest_kept(capfd):
    noise = (b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
             b"I0000 00:00:1796049848.094440    1527 port.cc:153] oneDNN custom operations are on.\n")
    with native_stderr_filtered():
        os.write(2, noise + b"a real problem\n")
    err = capfd.readouterr().err
    assert err == "a real problem\n"
    with native_stderr_filtered(verbose=True):
        os.write(2, noise)
    assert "oneDNN" in capfd.readouterr().err


@pytest.mark.slow
def test_fer_convert_has_no_tensorflow_noise(tmp_path):
    pytest.importorskip("tensorflow")
    code = ("import os; os.environ['KERAS_BACKEND'] = 'tensorflow'\n"
            "from fer_convert.cli import cli\nfrom click.testing import CliRunner\n"
            "print(CliRunner().invoke(cli, ['--help']).exit_code)\n"
            "from fer_edge.clitools import import_quietly; import_quietly('keras')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert out.returncode == 0 and out.stdout.strip() == "0", out.stderr
    assert "absl::InitializeLog" not in out.stderr and "oneDNN" not in out.stderr, out.stderr

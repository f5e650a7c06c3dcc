"""Mistyped configs, corrupt model cards, damaged .npz files: one clear line and exit 3, never a traceback.

Config values are checked against the config dataclasses' own type hints (edge/typecheck.py), so
the tests below also walk every field of every table: a field added later is covered unasked.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest

from fer_edge import config as config_module
from fer_edge.config import RunConfig, load_config
from fer_edge.contract import ModelCard
from fer_edge.errors import ConfigError, ContractError, DataError
from fer_edge.typecheck import Mismatch, OneOf, Range, check

from .test_cli import fer_edge


def write(tmp_path, text: str | bytes, name: str = "config.toml"):
    path = tmp_path / name
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


# --------------------------------------------------------------------------- config: the cases of issue 21
CASES = [
    ('[detector]\nscale = "half"\n', "[detector] scale: expected a number", "the string 'half'"),
    ('[detector]\nmin_face = "big"\n', "[detector] min_face: expected an integer", "the string 'big'"),
    ('[classifier]\nthreads = "two"\n', "[classifier] threads: expected an integer from 1 to 64", "'two'"),
    ('[log]\nmax_bytes = "big"\n', "[log] max_bytes: expected an integer >= 0", "'big'"),
    ("[log]\njsonl = 42\n", "[log] jsonl: expected a string", "the integer 42"),
    ('[log]\nsummary_every_s = "x"\n', "[log] summary_every_s: expected a number >= 0", "'x'"),
    ('[metrics]\nport = "abc"\n', "[metrics] port: expected an integer from 1 to 65535", "'abc'"),
    ("[metrics]\nport = 99999\n", "[metrics] port: expected an integer from 1 to 65535", "the integer 99999"),
    ('max_frames = "ten"\n', " max_frames: expected an integer >= 1", "'ten'"),
    ("max_frames = 0\n", " max_frames: expected an integer >= 1", "the integer 0"),
    ('[source]\nloop = "false"\n', "[source] loop: expected true or false", "write true or false without quotes"),
    ("[source]\nreconnect = 1\n", "[source] reconnect: expected true or false", "the integer 1"),
    ("[mqtt]\nqos = 3\n", "[mqtt] qos: expected one of 0, 1, 2", "the integer 3"),
    ("[source]\nfps = 0\n", "[source] fps: expected a number from 1 to 240", "the number 0"),
    ("[detector]\nscale = 5\n", "[detector] scale: expected a number from 0.05 to 1", "the number 5"),  # was a traceback
    ("[tracker]\nema_alpha = 0\n", "[tracker] ema_alpha: expected a number > 0 and <= 1", "the number 0"),
]


@pytest.mark.parametrize("text, where, found", CASES, ids=[c[1].strip() for c in CASES])
def test_a_mistyped_value_names_file_table_and_key(tmp_path, text, where, found):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(str(path)) and where in message and found in message, message
    assert "\n" not in message


def test_good_values_are_kept_with_their_types(tmp_path):
    cfg = load_config(write(tmp_path, "max_frames = 5\n[source]\nloop = false\nfps = 15\n[detector]\nscale = 1\n"
                                      "[metrics]\nport = 9108\n"))
    assert cfg.source.loop is False and cfg.max_frames == 5 and cfg.metrics.port == 9108
    assert cfg.source.fps == 15.0 and isinstance(cfg.source.fps, float)  # an int where a float goes: widened
    assert isinstance(cfg.detector.scale, float)


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def test_the_defaults_written_out_load_back_unchanged(tmp_path):
    """Every default of every field passes its own type hint: the schema rejects nothing valid."""
    defaults = RunConfig().to_dict()
    lines = [f"{k} = {toml_value(v)}" for k, v in defaults.items() if not isinstance(v, dict) and v is not None]
    for table, values in defaults.items():
        if isinstance(values, dict):
            lines.append(f"[{table}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in values.items() if v is not None]
    assert load_config(write(tmp_path, "\n".join(lines) + "\n")).to_dict() == defaults


def test_every_field_of_every_table_is_type_checked(tmp_path):
    """A table where a value belongs, for every key: each one is refused, naming table and key."""
    for table in dataclasses.fields(RunConfig):
        value = getattr(RunConfig(), table.name)
        keys = [f.name for f in dataclasses.fields(value)] if dataclasses.is_dataclass(value) else [table.name]
        for key in keys:
            text = (f"[{table.name}]\n{key} = {{ a = 1 }}\n" if dataclasses.is_dataclass(value)
                    else f"{key} = {{ a = 1 }}\n")
            with pytest.raises(ConfigError, match=r"expected .*, got a table") as err:
                load_config(write(tmp_path, text))
            assert (f"[{table.name}] {key}:" if dataclasses.is_dataclass(value) else f" {key}:") in str(err.value)


def test_a_config_file_that_is_not_utf8(tmp_path):
    path = write(tmp_path, '[source]\npath = "caf\xe9.mp4"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 20"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path)  # a folder


def test_the_cli_gives_one_line_and_exit_3(tmp_path):
    for text, where, _ in (CASES[10], CASES[9], CASES[7]):
        proc = fer_edge("run", "--config", str(write(tmp_path, text)), "--camera", "0")
        assert proc.returncode == 3, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and where in lines[0], proc.stderr
    proc = fer_edge("run", "--config", str(write(tmp_path, b"max_frames = 1 # \xff\n")), "--camera", "0")
    assert proc.returncode == 3 and "not UTF-8" in proc.stderr and "Traceback" not in proc.stderr


def test_the_checker_itself():
    assert check(3, float) == 3.0 and check(None, int | None) is None
    assert check([1, 2], list[int]) == [1, 2] and check({"a": 1}, dict[str, int]) == {"a": 1}
    assert check(5, typing.Annotated[int, Range(1, 10)]) == 5
    for value, hint in ((True, int), (1, bool), ("1", int), (1.5, int), (float("nan"), float), ([1, "x"], list[int]),
                        (0, typing.Annotated[int, Range(1)]), ("c", typing.Annotated[str, OneOf("a", "b")]),
                        (0.0, typing.Annotated[float, Range(0, lo_open=True)])):
        with pytest.raises(Mismatch):
            check(value, hint)
    assert check("a", typing.Literal["a", "b"]) == "a" and check("x", Path) == Path("x")
    for value, hint in ((True, typing.Literal[1, 2]), ("c", typing.Literal["a", "b"]), (3, Path)):
        with pytest.raises(Mismatch):
            check(value, hint)
    with pytest.raises(TypeError, match="unsupported type hint"):
        check(1, set[int])
    assert config_module.field_hints(config_module.SourceConfig)["loop"] is bool


# --------------------------------------------------------------------------- model cards
@pytest.fixture
def model_with_card(tmp_path, tiny_tflite_model):
    """(model path, card path): a copy of the tiny model whose card the test may spoil."""
    folder = tmp_path / "model"
    folder.mkdir()
    model = folder / tiny_tflite_model.name
    shutil.copy(tiny_tflite_model, model)
    card = folder / "tiny.json"
    shutil.copy(tiny_tflite_model.with_name("tiny.json"), card)
    return model, card


BAD_CARDS = [
    ("null", "expected a JSON object, got null"),
    ("[1, 2]", "expected a JSON object, got list"),
    ('{"name": "tiny", "labels": ["a", "b"], "input_size": "48"}', "input_size: expected a list of (an integer)"),
    ('{"name": "tiny", "labels": ["a", "b"], "input_size": null}', "input_size: expected a list"),
    ('{"name": "tiny", "labels": "happy", "input_size": [48, 48]}', "labels: expected a list of (a string)"),
    ('{"name": "tiny", "labels": ["a", "b"], "input_size": [48, "48"]}', "input_size: [1]: expected an integer"),
    ('{"name": "tiny", "labels": ["a", "b"], "input_size": [48, 48], "params": "many"}', "params: expected an integer"),
]


@pytest.mark.parametrize("text, expected", BAD_CARDS, ids=[c[0][:40] for c in BAD_CARDS])
def test_a_corrupt_model_card_is_one_contract_error(tmp_path, text, expected):
    path = write(tmp_path, text, "card.json")
    with pytest.raises(ContractError) as err:
        ModelCard.load(path)
    assert str(path) in str(err.value) and expected in str(err.value), str(err.value)


def test_the_runtime_with_a_corrupt_card_exits_3_in_one_line(model_with_card, face_clip):
    model, card = model_with_card
    for text in ("null", json.dumps({**json.loads(card.read_text()), "input_size": "48"})):
        card.write_text(text)
        proc = fer_edge("--source", str(face_clip.path), "--model", str(model), "--max-frames", "2")
        assert proc.returncode == 3, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: model card {card}"), proc.stderr


# --------------------------------------------------------------------------- damaged .npz files
@pytest.fixture
def good_npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "fer.npz"
    np.savez_compressed(path, pixels=rng.integers(0, 256, (60, 48, 48), dtype=np.uint8),
                        emotion=rng.integers(0, 7, 60), usage=rng.integers(0, 3, 60))
    return path


def test_a_truncated_or_garbage_npz_is_one_data_error(tmp_path, good_npz):
    from fer_train.data import load_dataset, load_npz

    assert len(load_npz(good_npz)) == 60
    data = good_npz.read_bytes()
    for name, content, expected in (
        ("truncated.npz", data[: len(data) // 2], "truncated or damaged"),
        ("cut_in_a_member.npz", data[:-30], "truncated or damaged"),
        ("garbage.npz", np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
         "not a .npz file"),
        ("empty.npz", b"", "not a .npz file"),
    ):
        path = write(tmp_path, content, name)
        with pytest.raises(DataError) as err:
            load_dataset(path)
        message = str(err.value)
        assert message.startswith(str(path)) and expected in message, message
        assert "pickle" not in message


def test_fer_train_report_on_a_truncated_npz_exits_3(tmp_path, good_npz):
    bad = write(tmp_path, good_npz.read_bytes()[:2000], "bad.npz")
    fer_train = Path(sys.executable).with_name("fer-train")
    if not fer_train.exists():
        pytest.skip(f"{fer_train} is not installed")
    proc = subprocess.run([str(fer_train), "report", str(bad), "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr and "truncated or damaged" in proc.stderr

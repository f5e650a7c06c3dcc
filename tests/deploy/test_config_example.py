"""deploy/config.example.toml agrees with edge/config.py: it loads, and it names every key."""
from __future__ import annotations

import dataclasses
import re

from fer_edge.config import RunConfig, load_config

from .conftest import DEPLOY

EXAMPLE = DEPLOY / "config.example.toml"

# Keys the example sets on purpose to something other than the built-in default (the Pi service).
DELIBERATE = {
    ("source", "picamera"): True,
    ("classifier", "threads"): 2,
    ("log", "jsonl"): "/var/log/fer-edge/events.jsonl",
}


def example_keys() -> dict[str, set[str]]:
    """Keys per table, set or commented out (`# key = value` shows an unset default)."""
    keys: dict[str, set[str]] = {"": set()}
    table = ""
    for line in EXAMPLE.read_text().splitlines():
        header = re.match(r"^\[(\w+)\]\s*$", line)
        if header:
            table = header.group(1)
            keys.setdefault(table, set())
            continue
        entry = re.match(r"^#?\s?([a-z_][a-z0-9_]*) = \S", line)
        if entry:
            keys[table].add(entry.group(1))
    return keys


def test_example_loads_with_load_config():
    cfg = load_config(EXAMPLE)
    assert cfg.classifier.model is None  # unset = the model shipped in fer_edge_models
    assert cfg.source.picamera and cfg.source.camera is None and cfg.source.path is None
    assert cfg.display.enabled is False  # the service is headless
    assert cfg.log.jsonl.startswith("/var/log/fer-edge/")  # LogsDirectory=, writable by the service
    assert cfg.mqtt.host is None and cfg.metrics.port is None
    assert cfg.max_frames is None


def test_example_lists_every_key_of_the_code():
    keys = example_keys()
    defaults = RunConfig()
    missing = []
    for field in dataclasses.fields(RunConfig):
        value = getattr(defaults, field.name)
        if dataclasses.is_dataclass(value):
            for sub in dataclasses.fields(value):
                if sub.name not in keys.get(field.name, set()):
                    missing.append(f"[{field.name}] {sub.name}")
        elif field.name not in keys[""]:
            missing.append(field.name)
    assert not missing, f"config.example.toml lacks keys that edge/config.py has: {missing}"


def test_example_values_are_the_defaults_unless_deliberate():
    cfg, defaults = load_config(EXAMPLE).to_dict(), RunConfig().to_dict()
    differ = {}
    for table, values in cfg.items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            if value != defaults[table][key]:
                differ[(table, key)] = value
    assert differ == DELIBERATE


def test_example_names_no_key_the_code_lacks():
    """Commented-out keys are not checked by load_config: check them here."""
    defaults = RunConfig()
    unknown = []
    for table, names in example_keys().items():
        target = defaults if table == "" else getattr(defaults, table, None)
        if target is None:
            unknown.append(f"[{table}]")
            continue
        known = {f.name for f in dataclasses.fields(target)}
        unknown += [f"[{table}] {name}" for name in sorted(names - known)]
    assert not unknown, f"config.example.toml names keys edge/config.py does not know: {unknown}"

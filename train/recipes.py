"""Recipes: a whole training schedule in one versioned TOML file (`fer-train fit --recipe NAME`).

`NAME` is a recipe shipped in `train/recipes/NAME.toml` (package data: `fer-train recipes` lists
them) or a path to a .toml file. A recipe holds `FitConfig` settings; tables are only headings for
the reader (`[optimizer] lr = 0.1` is the setting `lr`), and `version` / `description` describe the
recipe itself. Unknown keys, wrong types and bad values are `ConfigError`s naming the file, the table
and the key. Command-line flags override the recipe; the run's config.json records the recipe's
name and the sha256 of its bytes (`recipe`, `recipe_sha256`), so a run says exactly what it followed.

Relative teacher / init paths in a recipe (e.g. the shipped `models/fer_default_float32.tflite`) are
looked up from the current folder, then from the repository root.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import tomllib
import typing
from pathlib import Path
from typing import Any

from fer_edge.errors import ConfigError

RECIPE_DIR = Path(__file__).resolve().parent / "recipes"
#: keys that describe the recipe itself, not a training setting
META_KEYS = ("version", "description")
#: settings a recipe may not hold: they belong to one invocation, not to a schedule
NOT_IN_RECIPES = ("data", "out", "name", "verbose", "recipe", "recipe_sha256", "eval_private")


def available() -> dict[str, Path]:
    return {p.stem: p for p in sorted(RECIPE_DIR.glob("*.toml"))}


def recipe_path(name: str | os.PathLike) -> Path:
    shipped = available()
    if str(name) in shipped:
        return shipped[str(name)]
    p = Path(name)
    if p.suffix == ".toml" and p.is_file():
        return p
    raise ConfigError(f"unknown recipe {str(name)!r}: choose one of {', '.join(shipped) or '(none shipped)'} "
                      "or give a .toml file")


def _fields(config_cls) -> dict[str, Any]:
    """The settings a recipe may hold: the config dataclass's fields (fit.FitConfig), with their types."""
    hints = typing.get_type_hints(config_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_cls) if f.name not in NOT_IN_RECIPES}


def _check_type(value: Any, hint: Any) -> bool:
    allowed = typing.get_args(hint) or (hint,)
    for t in allowed:
        origin = typing.get_origin(t) or t
        if t is type(None) and value is None:
            return True
        if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if origin in (str, bool) and type(value) is origin:
            return True
        if origin is list and isinstance(value, list) and all(isinstance(v, str) for v in value):
            return True
        if origin is dict and isinstance(value, dict):
            return True
    return False


def _type_name(hint: Any) -> str:
    """'int', 'float or none', 'list of str or str or none' (a recipe author reads this)."""
    names = []
    for t in typing.get_args(hint) or (hint,):
        origin = typing.get_origin(t) or t
        name = "none" if t is type(None) else getattr(origin, "__name__", str(t))
        names.append(f"{name} of str" if origin is list else name)
    return " or ".join(names)


def load_recipe(name: str | os.PathLike, config_cls) -> tuple[dict[str, Any], dict[str, Any]]:
    """-> (settings: config field -> value, info: name, path, sha256, version, description).
    `config_cls` is fit.FitConfig (passed in: this module sits below fit)."""
    path = recipe_path(name)
    raw = path.read_bytes()
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"recipe {path}: not valid TOML ({exc})") from None
    fields = _fields(config_cls)
    settings: dict[str, Any] = {}
    info = {"name": path.stem, "path": str(path), "sha256": hashlib.sha256(raw).hexdigest(),
            "version": doc.get("version"), "description": doc.get("description", "")}
    if not isinstance(info["version"], int):
        raise ConfigError(f"recipe {path}: needs an integer 'version' at the top")

    def take(table: str, key: str, value: Any) -> None:
        where = f"recipe {path}, " + (f"table [{table}], " if table else "") + f"key {key!r}"
        if key in NOT_IN_RECIPES:
            raise ConfigError(f"{where}: belongs on the command line, not in a recipe")
        if key not in fields:
            raise ConfigError(f"{where}: not a fit setting")
        if key in settings:
            raise ConfigError(f"{where}: set twice")
        if key == "teacher" and isinstance(value, str):
            value = [value]
        if not _check_type(value, fields[key]):
            raise ConfigError(f"{where}: {value!r} is not {_type_name(fields[key])}")
        if key in ("teacher", "init_from", "ferplus_votes") and value:
            value = [_locate(v) for v in value] if isinstance(value, list) else _locate(value)
        settings[key] = value

    for key, value in doc.items():
        if key in META_KEYS:
            continue
        if isinstance(value, dict) and key != "model_opts":
            for k, v in value.items():
                take(key, k, v)
        else:
            take("", key, value)
    return settings, info


def _locate(p: str) -> str:
    """A recipe's relative file path: from the current folder, else from the repository root."""
    path = Path(p)
    if path.is_absolute() or path.exists():
        return p
    repo = RECIPE_DIR.parents[1] / p
    return str(repo) if repo.exists() else p


def apply_recipe(cfg, name: str | os.PathLike, explicit: set[str]):
    """A FitConfig with the recipe's settings, except those the user gave on the command line (`explicit`)."""
    settings, info = load_recipe(name, type(cfg))
    values = {k: v for k, v in settings.items() if k not in explicit}
    if "teacher" in values and isinstance(values["teacher"], list) and len(values["teacher"]) == 1:
        values["teacher"] = values["teacher"][0]
    new = dataclasses.replace(cfg, **values, recipe=info["name"], recipe_sha256=info["sha256"])
    new.validate()
    return new, info

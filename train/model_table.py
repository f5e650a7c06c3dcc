"""`fer-train models` without building every model each time: the table, cached by the source it came from.

Building the five architectures takes Keras (TensorFlow's import alone takes seconds), so the rows
`describe_models` computes are kept in a JSON file keyed by the sha256 of train/models.py and the
Keras version. A lookup reads the file shipped beside this module (train/model_table.json, written
by `python -m fer_train.model_table`), then the user's cache (~/.cache/fer-edge/model_table.json);
a miss (models.py changed, another input size, another Keras) builds the models, prints the same
table, and stores it in the user's cache. The numbers always come from building the models: the
cache only remembers them for as long as the code that defines the models is unchanged.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SHIPPED = HERE / "model_table.json"


def user_cache() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "fer-edge" / "model_table.json"


def source_key(input_size: tuple[int, int], num_classes: int) -> str:
    """What the rows depend on: the models' source, the Keras version, the input size and classes."""
    digest = hashlib.sha256((HERE / "models.py").read_bytes()).hexdigest()
    try:
        keras_version = metadata.version("keras")
    except metadata.PackageNotFoundError:
        keras_version = "?"
    return f"models.py:{digest}|keras:{keras_version}|input:{input_size[0]}x{input_size[1]}|classes:{num_classes}"


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def lookup(key: str, paths: tuple[Path, ...] | None = None) -> list[dict] | None:
    for path in paths or (SHIPPED, user_cache()):
        rows = _read(path).get(key)
        if isinstance(rows, list) and rows:
            return rows
    return None


def store(key: str, rows: list[dict], path: Path) -> bool:
    """Add `rows` under `key` to the JSON file at `path` (keys of other sources are dropped when the
    models' source changed, so the file never grows stale); False when it cannot be written."""
    digest = key.split("|", 1)[0]
    data = {k: v for k, v in _read(path).items() if k.split("|", 1)[0] == digest}
    data[key] = rows
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)
        return True
    except OSError:
        return False


def models_table(input_size: tuple[int, int] = (48, 48), num_classes: int = 7, refresh: bool = False,
                 verbose: bool = False) -> tuple[list[dict], str]:
    """(rows, where they came from: "cache" or "built")."""
    key = source_key(input_size, num_classes)
    if not refresh:
        rows = lookup(key)
        if rows is not None:
            return rows, "cache"
    from fer_edge.clitools import import_quietly

    import_quietly("keras", verbose=verbose)
    from .models import describe_models

    rows = describe_models(input_size, num_classes)
    store(key, rows, user_cache())
    return rows, "built"


def main(argv: list[str] | None = None) -> None:
    """`python -m fer_train.model_table`: build the default table and write train/model_table.json."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        print(__doc__)
        return
    rows, _ = models_table(refresh=True)
    key = source_key((48, 48), 7)
    if not store(key, rows, SHIPPED):
        raise SystemExit(f"cannot write {SHIPPED}")
    print(f"wrote {SHIPPED} ({len(rows)} architectures; {key.split('|')[0][:22]}...)")


if __name__ == "__main__":
    main()

"""Typed values from untyped input (TOML config tables, JSON model cards), checked against type hints.

One checker, driven by the dataclasses' own type hints, so the types written on a field ARE its
schema: a field added to a config dataclass is validated without a line of new code.

    port: Annotated[int, Range(1, 65535)] | None = None

Supported hints: bool, int, float, str, pathlib.Path (from a string), `X | None`, unions,
Literal[...], list[X], tuple[X, ...], dict[K, V], Any, and `Annotated[X, marker, ...]` with the
markers below (Range, OneOf). Any other hint is a TypeError: a bug in the dataclass, found by the
tests that load every field. Strict where TOML and JSON are
strict: a bool is never an int (`true` is not 1), a string is never a bool (`"false"` is not false),
an int is accepted where a float is expected (and becomes a float).

`check(value, hint)` returns the value (ints widened to float where a float is asked for) or raises
`Mismatch` whose message says what was expected and what was found; callers add where (file, table,
key) and turn it into their own error (ConfigError, ContractError).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
import types
import typing
from typing import Any

__all__ = ["Mismatch", "Range", "OneOf", "check", "describe", "field_hints"]


class Mismatch(ValueError):
    """A value does not fit its type hint; the message reads 'expected ..., got ...'."""


@dataclasses.dataclass(frozen=True)
class Range:
    """A number from `lo` to `hi` (either may be None: unbounded); `lo_open` excludes `lo` itself."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False

    def fits(self, value: float) -> bool:
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return self.hi is None or value <= self.hi

    def describe(self) -> str:
        if self.lo is not None and self.hi is not None and not self.lo_open:
            return f"from {self.lo:g} to {self.hi:g}"
        parts = []
        if self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {self.lo:g}")
        if self.hi is not None:
            parts.append(f"<= {self.hi:g}")
        return " and ".join(parts)


@dataclasses.dataclass(frozen=True)
class OneOf:
    """One of a fixed set of values."""

    choices: tuple

    def __init__(self, *choices: Any) -> None:
        object.__setattr__(self, "choices", tuple(choices))

    def describe(self) -> str:
        return "one of " + ", ".join(repr(c) for c in self.choices)


_NONE = type(None)
_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _kind(value: Any) -> str:
    """How a found value is described: "the string 'false'", "the integer 42", "a table", "null"."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value:g}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)}"
    return f"a {type(value).__name__}"


def describe(hint: Any) -> str:
    """'an integer from 1 to 65535 (or nothing)', 'true or false', 'a list of integers', ..."""
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        base, *markers = typing.get_args(hint)
        text = describe(base)
        for marker in markers:
            if isinstance(marker, (Range, OneOf)):
                text = marker.describe() if isinstance(marker, OneOf) else f"{text} {marker.describe()}"
        return text
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not _NONE]
        text = " or ".join(describe(a) for a in args)
        return f"{text} (or nothing)" if len(args) < len(typing.get_args(hint)) else text
    if origin in (list, tuple):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        if origin is tuple and len(args) > 1:
            return f"a list of {len(args)} values ({', '.join(describe(a) for a in args)})"
        return f"a list of ({describe(args[0])})" if args else "a list"
    if origin is dict:
        return "a table"
    if hint is Any:
        return "any value"
    if origin is typing.Literal:
        return OneOf(*typing.get_args(hint)).describe()
    if isinstance(hint, type) and issubclass(hint, pathlib.PurePath):
        return "a path (a string)"
    return _NAMES.get(hint, getattr(hint, "__name__", str(hint)))


def check(value: Any, hint: Any) -> Any:
    """`value` if it fits `hint` (an int widened to float where a float is asked for); else Mismatch."""
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        base, *markers = typing.get_args(hint)
        try:
            value = check(value, base)
        except Mismatch:
            raise Mismatch(f"expected {describe(hint)}, got {_kind(value)}") from None
        for marker in markers:
            if isinstance(marker, Range) and not marker.fits(value):
                raise Mismatch(f"expected {describe(hint)}, got {_kind(value)}")
            if isinstance(marker, OneOf) and value not in marker.choices:
                raise Mismatch(f"expected {marker.describe()}, got {_kind(value)}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and _NONE in args:
            return None
        failures = []
        for arg in args:
            if arg is _NONE:
                continue
            try:
                return check(value, arg)
            except Mismatch as exc:
                failures.append(exc)
        # one alternative besides None: its own message says more (e.g. its range)
        if len(failures) == 1:
            raise failures[0]
        raise Mismatch(f"expected {describe(hint)}, got {_kind(value)}")
    if hint is Any:
        return value
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        if any(c == value and type(c) is type(value) for c in choices):  # True is not 1
            return value
        raise Mismatch(f"expected {describe(hint)}, got {_kind(value)}")
    if isinstance(hint, type) and issubclass(hint, pathlib.PurePath):
        if isinstance(value, str):
            return hint(value)
        raise Mismatch(f"expected a path (a string), got {_kind(value)}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise Mismatch(f"expected {describe(hint)}, got {_kind(value)}")
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        if origin is tuple and len(args) > 1 and Ellipsis not in typing.get_args(hint):
            if len(value) != len(args):
                raise Mismatch(f"expected {describe(hint)}, got {_kind(value)}")
            items = [_item(v, a, i) for i, (v, a) in enumerate(zip(value, args))]
        else:
            items = [_item(v, args[0], i) for i, v in enumerate(value)] if args else list(value)
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise Mismatch(f"expected a table, got {_kind(value)}")
        key_hint, value_hint = typing.get_args(hint) or (Any, Any)
        return {check(k, key_hint): _item(v, value_hint, k) for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        extra = " (write true or false without quotes)" if isinstance(value, str) and value.lower() in (
            "true", "false", "yes", "no", "on", "off", "0", "1") else ""
        raise Mismatch(f"expected true or false, got {_kind(value)}{extra}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise Mismatch(f"expected an integer, got {_kind(value)}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, float) and math.isnan(value):
                raise Mismatch("expected a number, got nan")
            return float(value)
        raise Mismatch(f"expected a number, got {_kind(value)}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise Mismatch(f"expected a string, got {_kind(value)}")
    if isinstance(hint, type):
        if isinstance(value, hint):
            return value
        raise Mismatch(f"expected {describe(hint)}, got {_kind(value)}")
    raise TypeError(f"typecheck: unsupported type hint {hint!r}")  # a bug in a dataclass, not in the input


def _item(value: Any, hint: Any, where: Any) -> Any:
    try:
        return check(value, hint)
    except Mismatch as exc:
        raise Mismatch(f"[{where!r}]: {exc}") from None


@functools.lru_cache(maxsize=None)
def field_hints(cls: type) -> dict[str, Any]:
    """A dataclass's field name -> resolved type hint (Annotated markers kept)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}

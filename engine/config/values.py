"""Turning raw values (from TOML or a `--set` string) into a field's declared type.

Nothing is silently changed: a value of the wrong type is refused with a sentence; the only
conversions are lossless ones (an integer where a float is expected, a list where a tuple is).
"""

from __future__ import annotations

import difflib
import tomllib
import typing
from functools import cache
from typing import Any

from engine.config.schema import SECTIONS, section_fields


@cache
def field_type(section: str, name: str) -> Any:
    """The resolved type annotation of `section.name` (e.g. int, tuple[float, float])."""
    return typing.get_type_hints(SECTIONS[section])[name]


def type_name(tp: Any) -> str:
    """A user-facing name for a field type."""
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    args = typing.get_args(tp)
    if typing.get_origin(tp) is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {type_name(args[0]).removeprefix('a ').removeprefix('an ')}s"
        return f"a list of {len(args)} {type_name(args[0]).removeprefix('a ').removeprefix('an ')}s"
    return str(tp)


def coerce(tp: Any, value: Any) -> Any:
    """`value` as type `tp`, or raise ValueError with a sentence saying what was expected."""
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            # 1e6 in TOML is a float; as an integer field it is still exactly one million.
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif typing.get_origin(tp) is tuple and isinstance(value, (list, tuple)):
        args = typing.get_args(tp)
        item_types = [args[0]] * len(value) if args[-1] is Ellipsis else list(args)
        if len(item_types) == len(value):
            return tuple(coerce(t, v) for t, v in zip(item_types, value))
    raise ValueError(f"expected {type_name(tp)}, got {value!r}")


def parse_text_value(tp: Any, text: str) -> Any:
    """Parse a command-line value for a field of type `tp`.

    TOML syntax is tried first (so `3e-4`, `true`, `[0.9, 0.95]` work); a bare word is taken
    as a string, and for list fields a comma-separated list is accepted.
    """
    text = text.strip()
    try:
        raw = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        raw = text
    if tp is bool and isinstance(raw, str) and raw.lower() in {"yes", "on", "1", "no", "off", "0"}:
        raw = raw.lower() in {"yes", "on", "1"}
    if typing.get_origin(tp) is tuple and isinstance(raw, (str, int, float)):
        parts = [p.strip() for p in str(text).split(",") if p.strip()]
        args = typing.get_args(tp)
        raw = [parse_text_value(args[0], p) for p in parts]
    if tp is str and not isinstance(raw, str):
        raw = text  # "--set name=123" names a run "123", it does not mean the integer.
    return coerce(tp, raw)


def all_keys() -> list[str]:
    """Every dotted key a config accepts ("model.num_dims", ...)."""
    return [f"{s}.{n}" for s in SECTIONS for n in section_fields(s)]


def suggest_key(section: str | None, key: str) -> str:
    """A ' (did you mean ...?)' hint for a key nobody declared, or ''.

    A right key in the wrong section ("batch_size" under [model]) is the likeliest slip, so an
    exact name elsewhere wins over a near spelling here; then near spellings in this section,
    then anywhere.
    """
    names = {k: k.split(".", 1)[1] for k in all_keys()}
    exact = [k for k, name in names.items() if name == key and not k.startswith(f"{section}.")]
    if exact:
        return f" (did you mean {exact[0]}?)"
    if section in SECTIONS:
        near = difflib.get_close_matches(key, list(section_fields(section)), n=1, cutoff=0.6)
        if near:
            return f" (did you mean {section}.{near[0]}?)"
    near = difflib.get_close_matches(key, list(names.values()), n=1, cutoff=0.6)
    if near:
        return f" (did you mean {next(k for k, name in names.items() if name == near[0])}?)"
    return ""

"""The TOML schema of ``optembed run``: one pydantic model per configuration dataclass.

A section's keys are the fields of the dataclass it fills (:func:`table_model`, derived from the
fields' annotations, so a new field is a new key). Values are checked as TOML gives them: an
integer stands for a float (``lr = 1``) but not the other way round (``epochs = 2.5`` fails), a
bool is no number, a list stands for a tuple; TOML has no null, so an optional field takes its
other type. The first problem is one line naming
the file, the section and the key (:func:`build`), e.g.
``run.toml: [supernet] epochs = 2.5 should be of type int (like 50)``.
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
import tomllib
from collections.abc import Iterator
from dataclasses import MISSING, Field, fields, is_dataclass
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

from pydantic import BaseModel, ConfigDict, Strict, StrictBool, StrictInt, StrictStr, ValidationError, create_model

from optembed.errors import ConfigError, OptembedError

MAX_CONFIG_BYTES = 1 << 20
_StrictFloat = Annotated[float, Strict()]  # an int is accepted (TOML writes 1 for 1.0), a str or bool is not


def read_toml(path: Path) -> dict[str, Any]:
    """The parsed TOML file; a missing, unreadable, binary or malformed file is one line."""
    try:
        size = Path(path).stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path} holds {size:,} bytes, too many for a TOML configuration (at most {MAX_CONFIG_BYTES:,})")
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"configuration {path} is a folder, not a TOML file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a TOML text file (not UTF-8 at byte {exc.start})") from None
    if "\x00" in text:
        raise ConfigError(f"{path}: not a TOML text file (it holds NUL bytes)")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def toml_type(tp: Any) -> Any:
    """The pydantic annotation that accepts what TOML may write for a field annotated ``tp``."""
    origin = get_origin(tp)
    if tp is Any or tp is type(None):
        return tp
    if origin in (Union, UnionType):
        return Union[tuple(toml_type(a) for a in get_args(tp))]  # noqa: UP007 (built from a tuple)
    if tp is bool:
        return StrictBool
    if tp is int:
        return StrictInt
    if tp is float:
        return _StrictFloat
    if tp in (str, Path):
        return StrictStr
    args = get_args(tp)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple[toml_type(args[0]), ...]  # type: ignore[misc]
        return tuple[tuple(toml_type(a) for a in args)]  # type: ignore[misc]
    if origin is list:
        return list[toml_type(args[0])] if args else list  # type: ignore[misc]
    if origin is dict or tp is dict:
        return dict
    return tp


def type_name(tp: Any) -> str:
    """``tp`` in words, as a TOML user would write it."""
    origin = get_origin(tp)
    if origin in (Union, UnionType):
        return " or ".join(type_name(a) for a in get_args(tp) if a is not type(None))
    if origin in (list, tuple):
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"list of {len(args)} {type_name(args[0])}"
        return f"list of {type_name(args[0])}" if args else "list"
    if tp is Path:
        return "str"
    return getattr(tp, "__name__", str(tp))


def _keys(cls: type, only: tuple[str, ...] | None) -> dict[str, tuple[Field[Any], Any]]:
    """The fields of ``cls`` a TOML table may set, with their annotations (nested configurations
    are built by the loader, never given as values)."""
    hints = get_type_hints(cls)
    out = {}
    for f in fields(cls):
        tp = hints[f.name]
        if (only is None or f.name in only) and not (isinstance(tp, type) and is_dataclass(tp)):
            out[f.name] = (f, tp)
    return out


@functools.cache
def table_model(cls: type, only: tuple[str, ...] | None = None) -> type[BaseModel]:
    """The pydantic model of a TOML table of ``cls``'s fields (``only``: just those); every key
    is optional (the dataclass holds the defaults), unknown keys are refused."""
    spec: dict[str, Any] = {name: (Union[toml_type(tp), None], None) for name, (_, tp) in _keys(cls, only).items()}  # noqa: UP007
    return create_model(f"{cls.__name__}Table", __config__=ConfigDict(extra="forbid"), **spec)


def check_table(
    cls: type, data: Any, section: str, where: str = "", prefix: str = "", only: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """``data`` (a TOML table of ``cls``'s fields) checked: its keys with their validated values.
    ``where``: the file, for the messages; ``prefix``: what the file writes before each key."""
    head = f"{where}: " if where else ""
    if not isinstance(data, dict):
        raise ConfigError(f"{head}[{section}] must be a table of keys, got {type(data).__name__} {short(data)}")
    try:
        checked = table_model(cls, only).model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden")
        if unknown:
            raise ConfigError(f"{head}unknown key(s) in [{section}]: {', '.join(prefix + k for k in unknown)}") from None
        key = str(errors[0]["loc"][0])
        f, tp = _keys(cls, only)[key]
        default = f.default_factory() if f.default_factory is not MISSING else f.default  # type: ignore[misc]
        like = f" (like {default!r})" if default is not MISSING and default is not None else ""
        raise ConfigError(
            f"{head}[{section}] {prefix}{key} = {short(data[key])} should be of type {type_name(tp)}{like}"
        ) from None
    return {k: getattr(checked, k) for k in data}


def build(cls: type, data: Any, section: str, where: str = "", prefix: str = "", **fixed: Any) -> Any:
    """An instance of ``cls`` from a checked TOML table, with ``fixed`` fields set by the caller."""
    return cls(**{**check_table(cls, data, section, where, prefix), **fixed})


def section(raw: dict[str, Any], name: str, where: str = "") -> dict[str, Any]:
    """The ``[name]`` table of the file (empty when absent)."""
    value = raw.get(name, {})
    if not isinstance(value, dict):
        head = f"{where}: " if where else ""
        raise ConfigError(f"{head}'{name}' must be a [{name}] table, got {type(value).__name__} {value!r}")
    return dict(value)


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# a flag as the core's messages write it, with what may follow it there: a placeholder
# (COLUMN), a format name or a number (the value, said again from the configuration)
_FLAG = re.compile(
    r"(?P<flags>--[a-z][a-z0-9-]*(?:/--[a-z][a-z0-9-]*)*)"
    r"(?P<value> (?:[A-Z][A-Z_]+\b|(?:criteo|avazu|kdd12|csv|parquet)\b|-?[0-9][0-9,]*(?:\.[0-9]+)?(?:e-?[0-9]+)?\b))?"
)


def toml_value(value: Any) -> str:
    """``value`` as a TOML file writes it (``...`` when it is not set)."""
    if value is None:
        return "..."
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if value != value else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


def as_keys(message: str, section: str, *sources: Any, aliases: dict[str, str] | None = None) -> str:
    """``message`` with every flag that is a key of ``[section]`` said as that key with its value
    (read from ``sources``, the section's configuration objects): ``--lr must be ...`` ->
    ``[supernet] lr = nan must be ...``; other flags are left alone."""
    renamed = {v: k for k, v in (aliases or {}).items()}  # the file's key -> the field

    def field_of(flag: str) -> str | None:
        key = flag[2:].replace("-", "_")
        name = renamed.get(key, key)
        return name if any(hasattr(s, name) for s in sources) else None

    def value_of(name: str) -> Any:
        return next(getattr(s, name) for s in sources if hasattr(s, name))

    def said(match: re.Match[str]) -> str:
        flags = match.group("flags").split("/")
        names = [field_of(f) for f in flags]
        if any(n is None for n in names):
            return match.group(0)
        keys = [(aliases or {}).get(n, n) for n in names if n is not None]
        placeholder = (match.group("value") or "").strip()
        if len(keys) > 1:
            return f"[{section}] " + "/".join(keys)
        value = value_of(names[0]) if names[0] is not None else None
        if value is None and placeholder:
            shown = placeholder if placeholder.isupper() else f'"{placeholder}"'
        else:
            shown = toml_value(value)
        return f"[{section}] {keys[0]} = {shown}"

    return _FLAG.sub(said, message)


@contextlib.contextmanager
def said_as_keys(where: str, section: str, *sources: Any, aliases: dict[str, str] | None = None) -> Iterator[None]:
    """Errors raised inside name the keys of ``[section]`` of the configuration file ``where``
    instead of flags (see :func:`as_keys`); with no file (``where`` empty) they pass unchanged."""
    try:
        yield
    except OptembedError as exc:
        if not where:
            raise
        text = as_keys(str(exc), section, *sources, aliases=aliases)
        if text == str(exc):
            raise
        raise type(exc)(text if text.startswith(where) else f"{where}: {text}") from None

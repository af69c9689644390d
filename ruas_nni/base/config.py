"""Typed YAML configs: dataclasses filled from a YAML file and command-line flags, validated up
front with errors that name the file, the key and the allowed values.

A config class is a plain dataclass. Field types drive the checks (``int``, ``float``, ``bool``,
``str``, ``list[str]``, ``float | None`` ...); ``field(metadata={"choices": (...)})`` restricts a
value, ``metadata={"min": x}`` / ``{"max": x}`` bound a number. ``__post_init__`` may add checks of
its own and raise ``ValueError``.

    @dataclass
    class SearchConfig:
        epochs: int = field(default=20, metadata={"min": 1, "help": "search epochs"})
        strategy: str = field(default="cooperative", metadata={"choices": STRATEGIES})

    config = load_config(SearchConfig, yaml_path, overrides={"epochs": args.epochs})
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

from .errors import UsageError

__all__ = ["ConfigError", "read_yaml", "from_mapping", "load_config", "to_yaml_dict"]

T = TypeVar("T")


class ConfigError(UsageError):
    """A config file or flag with a bad key or value; nothing was started."""


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML mapping; empty files give ``{}``. Errors (:class:`ConfigError`) name the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values, found {type(data).__name__}")
    return data


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if tp is type(None):
        return "null"
    if tp is float:
        return "a number"
    if tp is int:
        return "an integer"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any) -> Any:
    """Return ``value`` as type ``tp`` or raise ``TypeError``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option)
            except TypeError:
                continue
        raise TypeError
    if tp is Any:
        return value
    if tp is type(None):
        if value is None:
            return None
        raise TypeError
    if origin in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise TypeError
        (item_type, *_rest) = typing.get_args(tp) or (Any,)
        items = [_coerce(v, item_type) for v in value]
        return items if origin is list else tuple(items)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise TypeError
    if tp is str:
        if isinstance(value, str):
            return value
        raise TypeError
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise TypeError


def from_mapping(cls: type[T], data: Mapping[str, Any], source: str = "config") -> T:
    """Build the dataclass ``cls`` from ``data``; every problem names ``source`` and the key."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(str(k) for k in data if k not in fields)
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r}; allowed keys: {', '.join(sorted(fields))}")
    values: dict[str, Any] = {}
    for key, value in data.items():
        field = fields[key]
        tp = hints[key]
        try:
            value = _coerce(value, tp)
        except TypeError:
            raise ConfigError(f"{source}: {key!r} must be {_type_name(tp)}, got {value!r}") from None
        choices = field.metadata.get("choices")
        if choices is not None:
            bad = [v for v in (value if isinstance(value, list) else [value]) if v not in choices]
            if bad:
                raise ConfigError(f"{source}: {key!r} must be one of {', '.join(map(str, choices))}; got {bad[0]!r}")
        low, high = field.metadata.get("min"), field.metadata.get("max")
        if value is not None and not isinstance(value, (list, tuple, str, bool)):
            if low is not None and value < low:
                raise ConfigError(f"{source}: {key!r} must be at least {low}, got {value!r}")
            if high is not None and value > high:
                raise ConfigError(f"{source}: {key!r} must be at most {high}, got {value!r}")
        values[key] = value
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_config(cls: type[T], path: str | os.PathLike[str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> T:
    """Defaults of ``cls``, then the YAML file at ``path``, then ``overrides`` (``None`` values mean
    "not given" and are skipped).

    Errors (:class:`ConfigError`) name what was wrong as a key (see :mod:`ruas_nni.base.errors`):
    a problem of the file reads `` `config` PATH: ...``, a bad override `` `crop` must be ...``."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data.update(read_yaml(path))
            from_mapping(cls, data, str(path))  # report file errors as file errors
        except ConfigError as exc:
            raise ConfigError(f"`config` {exc}", keys=("config", *exc.keys)) from None
    source = "config" if path is None else f"`config` {path}"
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    for key, value in flags.items():
        probe = dict(data)
        probe[key] = value
        try:
            from_mapping(cls, probe, source)
        except ConfigError as exc:
            if key in str(exc):
                message = str(exc).split(": ", 1)[1].replace(repr(key), f"`{key}`", 1)
                raise ConfigError(message, keys=(key,)) from None
            raise ConfigError(str(exc), keys=("config",) if path is not None else ()) from None
        data[key] = value
    try:
        return from_mapping(cls, data, source)
    except ConfigError as exc:  # settings that clash only together (``__post_init__``)
        raise ConfigError(str(exc), keys=("config",) if path is not None else ()) from None


def to_yaml_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as plain data (for writing next to results)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()}

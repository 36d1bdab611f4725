"""Typed, ranged stage parameters.

Every stage module (``rlsft.stages.<name>``) declares a frozen ``Params`` dataclass whose defaults
are the organism profile's values; each field is made with :func:`param`, which records its
documentation and its allowed range or choices. :func:`build` turns the values a profile or a
notebook gives into a ``Params`` instance, checking names, types and ranges, and raises
:class:`~rlsft.errors.ConfigError` with the parameter's full path on any problem.

>>> import dataclasses
>>> @dataclasses.dataclass(frozen=True)
... class P:
...     k: int = param(40, "clusters", ge=1)
...     rule: str = param("sentence", "how to split", choices=("sentence", "line"))
>>> build(P, {"k": 8}, "stages.graphs")
P(k=8, rule='sentence')
>>> build(P, {"k": "8"}, "stages.graphs")
Traceback (most recent call last):
...
rlsft.errors.ConfigError: stages.graphs.k: expected an integer, got '8' (a string); write it without quotes: k: 8
"""
from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from typing import Any, Literal, Mapping, Union

from rlsft.errors import ConfigError

_RANGE_KEYS = ("ge", "gt", "le", "lt", "choices")


def param(default: Any, doc: str, *, ge=None, gt=None, le=None, lt=None, choices=None):
    """A ``Params`` field: its default, one line of documentation, and its range or choices.

    Mutable defaults (dicts, lists) are copied for each instance.

    >>> f = param(0.6, "sampling temperature", gt=0)
    >>> f.metadata["doc"], f.metadata["gt"]
    ('sampling temperature', 0)
    """
    meta = {"doc": doc, "ge": ge, "gt": gt, "le": le, "lt": lt,
            "choices": tuple(choices) if choices is not None else None}
    if isinstance(default, (dict, list, set)):
        return dataclasses.field(default_factory=lambda d=default: copy.deepcopy(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def defaults(cls) -> dict:
    """``{name: default}`` of a ``Params`` class.

    >>> @dataclasses.dataclass(frozen=True)
    ... class P:
    ...     n: int = param(3, "n")
    >>> defaults(P)
    {'n': 3}
    """
    return dataclasses.asdict(cls())


def docs(cls) -> dict:
    """``{name: documentation line}`` of a ``Params`` class."""
    return {f.name: f.metadata.get("doc", "") for f in dataclasses.fields(cls)}


def as_dict(params) -> dict:
    """A ``Params`` instance as a plain dict (what papermill injects and the cache key hashes)."""
    return dataclasses.asdict(params)


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (dict, Mapping):
        return "a mapping"
    if origin in (list, tuple):
        return "a list"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            dict: "a mapping", list: "a list"}.get(tp, getattr(tp, "__name__", str(tp)))


def _describe(value) -> str:
    kind = {str: "a string", bool: "a boolean", int: "an integer", float: "a number", list: "a list",
            dict: "a mapping", type(None): "null"}.get(type(value), type(value).__name__)
    return f"{value!r} ({kind})"


def _coerce(value, tp, where: str):
    """``value`` checked against the annotation ``tp`` (ints are accepted where floats are)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        errors = []
        for alt in typing.get_args(tp):
            try:
                return _coerce(value, alt, where)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {_describe(value)}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {_describe(value)}")
    if origin is Literal:
        if value in typing.get_args(tp) and type(value) in {type(a) for a in typing.get_args(tp)}:
            return value
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {_describe(value)}")
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {_describe(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        hint = ""
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            hint = f"; write it without quotes: {where.rsplit('.', 1)[-1]}: {int(value)}"
        raise ConfigError(f"{where}: expected an integer, got {_describe(value)}{hint}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, float) and math.isnan(value):
                raise ConfigError(f"{where}: expected a number, got nan")
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {_describe(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {_describe(value)}")
    if tp is dict or origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {_describe(value)}")
        args = typing.get_args(tp)
        if args:
            return {_coerce(k, args[0], f"{where} (key)"): _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()}
        return dict(value)
    if tp is list or origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {_describe(value)}")
        args = typing.get_args(tp)
        if args:
            return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
        return list(value)
    return value


def _check_range(value, meta: Mapping, where: str) -> None:
    if value is None or isinstance(value, bool):
        return
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{where}: {value!r} is not one of {list(choices)}")
    if not isinstance(value, (int, float)):
        return
    for key, ok, word in (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
                          ("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<")):
        bound = meta.get(key)
        if bound is not None and not ok(value, bound):
            raise ConfigError(f"{where}: must be {word} {bound}, got {value!r}")


def build(cls, values: Mapping | None, where: str):
    """A ``cls`` instance from the defaults overridden by ``values``, each checked.

    ``where`` is the path the message names (``profile 'ci', stages.samples``).

    >>> @dataclasses.dataclass(frozen=True)
    ... class P:
    ...     t: float = param(0.6, "temperature", gt=0, le=2)
    >>> build(P, {"t": 1}, "s").t
    1.0
    >>> build(P, {"t": 5}, "s")
    Traceback (most recent call last):
    ...
    rlsft.errors.ConfigError: s.t: must be <= 2, got 5.0
    >>> build(P, {"T": 1}, "s")
    Traceback (most recent call last):
    ...
    rlsft.errors.ConfigError: s: unknown parameter(s) ['T']; declared parameters: ['t']
    """
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: must be a mapping of parameter: value, got {_describe(values)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    bad = sorted(set(values) - set(fields))
    if bad:
        raise ConfigError(f"{where}: unknown parameter(s) {bad}; declared parameters: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    out = {}
    for name, value in values.items():
        v = _coerce(value, hints[name], f"{where}.{name}")
        _check_range(v, fields[name].metadata, f"{where}.{name}")
        out[name] = v
    return cls(**out)

"""Typed configs: the one coercion and validation path of every command (floor 1).

Each command's parameters are a dataclass with a default and a one-line comment per field
(`TrainConfig`, `ProbeConfig`, `EvalConfig`, `FuseConfig`, `GrowConfig`, `PipelineConfig`).
Whatever surface sets them goes through `build` (the trainer's `make_config` through `coerce`):
the command line's strings, a notebook's `parameters` cell as papermill injects it (`-p steps abc`
gives the string "abc", `-p steps 1.5` a float), the pipeline's `--set` JSON values, a config
file or a Python call. Every value is coerced to its field's type and the config's `validate()`
runs, so the same wrong value gives the same one-line ValueError on every surface:

    steps='abc': expected an integer
    folds=1: must be >= 2 (cross-validation folds of the probes)
    unknown config key 'stepz'; valid keys: ...

A ValueError (not a BVVError) because that is what a notebook shows as the error's name, as it
always did; the command line prints either as one line.

A config may record which keys it was given explicitly (`_explicit`, not a field: never saved or
compared; the trainer's resume applies only those). `dataclasses.replace` drops it; `replace`
here keeps it, the changed keys joining it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from typing import Any, TypeVar

C = TypeVar("C")

# what "expected ..." says for a type
_KIND = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def field_types(cls: type) -> dict[str, Any]:
    """{field name: type hint} of a config dataclass, in field order."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _members(hint: Any) -> tuple[list[Any], bool]:
    """(the types of `hint` but None, whether None is allowed): `int | None` -> ([int], True)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        members = [a for a in args if a is not type(None)]
        return members, len(members) < len(args)
    return [hint], False


def _kind(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is list:
        (elem,) = typing.get_args(hint) or (str,)
        return {int: "a comma-separated list of integers", float: "a comma-separated list of numbers"}.get(
            elem, "a comma-separated list of strings")
    if origin is dict:
        return "a JSON object"
    return _KIND.get(hint, getattr(hint, "__name__", str(hint)))


def _scalar(name: str, value: Any, t: Any, fix: str) -> Any:
    """`value` as the scalar type `t` (bool, int, float, str), or one line naming `name`."""
    wrong = ValueError(f"{name}={value!r}: expected {_kind(t)}{fix}")
    if isinstance(value, str):
        text = value.strip()
        if t is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise wrong
        if t is int:
            try:
                return int(text)
            except ValueError:
                try:
                    as_float = float(text)  # 1e6
                except ValueError:
                    raise wrong from None
                if as_float.is_integer():
                    return int(as_float)
                raise wrong from None
        if t is float:
            try:
                return float(text)
            except ValueError:
                raise wrong from None
        return value
    if t is bool:
        if isinstance(value, bool):
            return value
        raise wrong
    if t is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise wrong
    if t is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise wrong
    if t is str:
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        raise wrong
    return value


def _one(name: str, value: Any, t: Any, fix: str) -> Any:
    origin = typing.get_origin(t)
    if origin is dict:
        if isinstance(value, str) and value.strip().startswith("{"):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{name}={value!r} is not valid JSON ({exc.msg} at character {exc.pos}): "
                                 f"write it as {name}='{{\"key\": 1.0}}'") from None
        if not isinstance(value, dict):
            raise ValueError(f"{name}={value!r}: expected a JSON object")
        return value
    if origin is list:
        (elem,) = typing.get_args(t) or (str,)
        items = value
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    items = json.loads(text)
                except json.JSONDecodeError:
                    raise ValueError(f"{name}={value!r}: expected {_kind(t)}{fix}") from None
            else:  # the command line's comma list ("0,2,4"); empty parts are dropped
                items = [p.strip() for p in text.split(",") if p.strip()]
        if not isinstance(items, (list, tuple)):
            raise ValueError(f"{name}={value!r}: expected {_kind(t)}{fix}")
        try:
            return [_scalar(name, v, elem, fix) for v in items]
        except ValueError:
            raise ValueError(f"{name}={value!r}: expected {_kind(t)}{fix}") from None
    return _scalar(name, value, t, fix)


def coerce(name: str, value: Any, hint: Any, fix: str = "") -> Any:
    """`value` (a command-line string, a file value, a notebook literal, a JSON value) as the type
    `hint` of the field `name`: bool, int, float, str, `list[...]`, `dict[...]` and unions of them
    with None ("none" / "null" / None give None where None is allowed). Anything that does not fit
    is one ValueError line naming the key; `fix` is added to it (e.g. " >= 0 (0 = no LoRA)")."""
    members, optional = _members(hint)
    if value is None:
        if optional:
            return None
        raise ValueError(f"{name}=None: {name} needs a value")
    if optional and isinstance(value, str) and value.strip().lower() in ("none", "null"):
        return None
    if len(members) == 1:
        return _one(name, value, members[0], fix)
    for t in members:  # a union: the first type that takes the value (bool before str: "false" is False)
        try:
            return _one(name, value, t, fix)
        except ValueError:
            continue
    raise ValueError(f"{name}={value!r}: expected {' or '.join(_kind(t) for t in members)}{fix}")


def build(cls: type[C], base: C | dict[str, Any] | None = None, /, **values: Any) -> C:
    """A `cls` config from `base` (a config, a dict of its fields, or None: the defaults) with
    `values` over it: every value coerced to its field's type (`coerce`), an unknown key refused
    with the valid keys (a class attribute `HINTS` adds the fix to a field's type error), then the
    config's `validate()`."""
    types_ = field_types(cls)
    start = {f.name: getattr(base, f.name) for f in dataclasses.fields(cls)} if isinstance(base, cls) \
        else dict(base or {})
    given = {**start, **values}
    unknown = [k for k in given if k not in types_]
    if unknown:
        raise ValueError(f"unknown config key {unknown[0]!r}; valid keys: {', '.join(types_)}")
    cfg = cls(**{k: coerce(k, v, types_[k], getattr(cls, "HINTS", {}).get(k, "")) for k, v in given.items()})
    if hasattr(cfg, "validate"):
        cfg.validate()
    return cfg


def explicit(cfg: Any) -> frozenset[str] | None:
    """The keys `cfg` was given explicitly; None: unknown (a config built by hand: all of them)."""
    return getattr(cfg, "_explicit", None)


def replace(cfg: C, **changes: Any) -> C:
    """`dataclasses.replace` that keeps the record of explicit keys (`dataclasses.replace` builds
    a fresh object and drops it): the changed keys join it, as keys given explicitly."""
    new = dataclasses.replace(cfg, **changes)
    before = explicit(cfg)
    if before is not None:
        new._explicit = frozenset(before | set(changes))
    return new


def at_least(name: str, value: Any, low: int | float, what: str = "") -> None:
    """One line when the count `name` is below `low` (None passes: "not set"); `what` says what
    the number counts, so the line names the problem and the fix."""
    if value is not None and not (isinstance(value, (int, float)) and not math.isnan(value) and value >= low):
        raise ValueError(f"{name}={value!r}: must be >= {low}" + (f" ({what})" if what else ""))


def one_of(name: str, value: Any, choices: typing.Iterable[Any]) -> None:
    """One line when `value` is not one of `choices`."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{name}={value!r}: use one of {', '.join(map(str, choices))}")


def check_count(name: str, value: Any, low: int = 1, what: str = "", optional: bool = False) -> int | None:
    """A lone integer parameter (a notebook's own, with no config around it) through the same
    coercion and the same message as a config field: the integer, or one ValueError line."""
    value = coerce(name, value, int | None if optional else int)
    at_least(name, value, low, what)
    return value

"""Typed settings: dataclasses whose fields are checked against their annotations.

Every configuration section (a model kind's config, ``data``, ``train``) is a dataclass deriving
from :class:`Settings`. Construction validates every field against its annotation (``int``,
``float``, ``bool``, ``str``, ``Literal[...]``, ``X | None``, ``list[X]``, nested settings) and the
bounds declared with :func:`setting` (``ge``, ``gt``, ``le``), so a wrong value is refused where it
is set (``--set train.grad_clip=abc``) rather than failing later. Integers are accepted for float
fields and converted; YAML's ``1e-3`` string spelling is read as a number.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from .errors import ConfigError

__all__ = ["Settings", "setting", "check_value", "field_names", "suggest"]

S = TypeVar("S", bound="Settings")


def suggest(key: str, options: Iterable[str], prefix: str | None = None) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``options``, else the list of valid names: the end
    of every "unknown name" message (config fields, sections, presets, model kinds)."""
    options = list(options)
    close = difflib.get_close_matches(key, options, n=1, cutoff=0.5)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; valid: {', '.join(sorted(options))}"


def setting(default: Any = dataclasses.MISSING, *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, help: str = "", factory: Any = dataclasses.MISSING, local: bool = False) -> Any:
    """A dataclass field with bounds checked on construction (``ge``: at least, ``gt``: above,
    ``le``: at most; for lists, every number in them) and a one-line ``help``. ``local``: the value
    is a path on this machine, left out of configs that are shared (:meth:`Settings.without_local`)."""
    meta = {"ge": ge, "gt": gt, "le": le, "help": help, "local": local}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        args = get_args(tp)
        if not args:
            return "list"
        inner = _type_name(args[0])
        return f"list of ({inner})" if " or " in inner else f"list of {inner}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


class _Mismatch(Exception):
    pass


def _convert(value: Any, tp: Any) -> Any:
    """``value`` checked against (and, for floats, lists and nested settings, converted to) ``tp``."""
    if tp is Any:
        return value
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        for arg in get_args(tp):
            try:
                return _convert(value, arg)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is Literal:
        if isinstance(value, bool) or value not in get_args(tp):
            raise _Mismatch
        return value
    if origin is list or tp is list:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        args = get_args(tp)
        return [_convert(v, args[0]) for v in value] if args else list(value)
    if tp is type(None):
        if value is not None:
            raise _Mismatch
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise _Mismatch
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Mismatch
        return value
    if tp is float:
        if isinstance(value, str):
            try:  # YAML 1.1 reads "2e-3" (no dot) as a string; a number is meant
                value = float(value)
            except ValueError:
                raise _Mismatch from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Mismatch
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _Mismatch
        return value
    if isinstance(tp, type) and issubclass(tp, Settings):
        if isinstance(value, tp):
            return value
        if isinstance(value, dict):
            return tp.from_dict(value)
        raise _Mismatch
    raise TypeError(f"unsupported settings annotation {tp!r}")


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    return []


def check_value(owner: str, name: str, value: Any, tp: Any, meta: typing.Mapping[str, Any] | None = None) -> Any:
    """``value`` for the field ``owner.name`` of annotation ``tp``, converted; bounds from ``meta``.

    Raises:
        ConfigError: wrong type, a choice not among the ``Literal`` ones, a non-finite float, or a
            number outside the bounds; the message names the field and what it accepts.
    """
    try:
        out = _convert(value, tp)
    except _Mismatch:
        raise ConfigError(f"{owner}.{name} must be {_type_name(tp)}, got {value!r}") from None
    except ConfigError as e:  # a nested section names its own field
        raise ConfigError(f"{owner}.{name}: {e}") from None
    meta = meta or {}
    for n in _numbers(out):
        if isinstance(n, float) and not math.isfinite(n):
            raise ConfigError(f"{owner}.{name} must be a finite number, got {value!r}")
        if meta.get("ge") is not None and not n >= meta["ge"]:
            raise ConfigError(f"{owner}.{name} must be at least {meta['ge']:g}, got {value!r}")
        if meta.get("gt") is not None and not n > meta["gt"]:
            raise ConfigError(f"{owner}.{name} must be greater than {meta['gt']:g}, got {value!r}")
        if meta.get("le") is not None and not n <= meta["le"]:
            raise ConfigError(f"{owner}.{name} must be at most {meta['le']:g}, got {value!r}")
    return out


def field_names(cls: type) -> list[str]:
    """Names of a settings class's fields, in declaration order."""
    return [f.name for f in fields(cls)]


@dataclass
class Settings:
    """Base of every configuration section: fields are type- and range-checked on construction.

    Subclasses set ``section`` (the name used in messages and in ``config.yaml``) and may override
    :meth:`validate` for checks across fields. Instances are plain dataclasses: ``asdict`` gives
    the YAML form, :meth:`from_dict` reads it back (unknown keys refused), :meth:`replace` returns
    a checked copy with some fields changed.
    """

    section: typing.ClassVar[str] = "settings"

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            setattr(self, f.name, check_value(self.section, f.name, getattr(self, f.name), hints[f.name], f.metadata))
        self.validate()

    def validate(self) -> None:
        """Checks that involve several fields; raise :class:`~flowvae.errors.ConfigError`."""

    @classmethod
    def from_dict(cls: type[S], d: typing.Mapping[str, Any]) -> S:
        """An instance from a mapping of field values (missing fields take their defaults).

        Raises:
            ConfigError: not a mapping, an unknown field (with the nearest name), or a bad value.
        """
        if not isinstance(d, typing.Mapping):
            raise ConfigError(f"section {cls.section!r} must be a mapping of fields, got {type(d).__name__}")
        names = field_names(cls)
        for key in d:
            if key not in names:
                raise ConfigError(f"unknown config field {cls.section}.{key}"
                                  f"{suggest(str(key), [f'{cls.section}.{n}' for n in names], prefix=cls.section)}")
        return cls(**dict(d))

    def replace(self: S, **changes: Any) -> S:
        """A validated copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (nested settings as mappings), as written to ``config.yaml``."""
        return dataclasses.asdict(self)

    def without_local(self: S) -> S:
        """A copy with every field declared ``local`` (a path on this machine: ``data.root``, the
        multi-stage model's ``stage1_run``) set to ``None``, in nested settings too: what an
        exported or published config keeps, so sharing a model never shares a file-system layout."""
        changes: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("local") and value is not None:
                changes[f.name] = None
            elif isinstance(value, Settings):
                changes[f.name] = value.without_local()
        return self.replace(**changes) if changes else self

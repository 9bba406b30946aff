"""Strict, bounded validation of unpacked data (msgpack, JSON) into frozen dataclasses, without pydantic.

The engine header is validated on every load, and the lean runtime loads no pydantic: its schema is a few frozen
dataclasses (subclasses of :class:`Record`) whose fields are typed with ``int``, ``float``, ``str``, ``bool``,
``bytes``, ``Literal``, ``list[...]``, ``dict[str, ...]``, unions of those and other records, with bounds given as
``Annotated[..., Bounds(ge=, le=, pattern=, max_length=)]``. The rules are pydantic's strict mode, which the header
used before:

- no coercion: a ``bool`` is not an ``int``, a string is not a number, a tuple is not a list (a ``float`` field
  takes an ``int``, as a float); a union takes the first member that fits, in the order written;
- no unknown keys, and an object with more keys than its record has fields is refused with one error before any
  key is looked at; every missing field is named;
- every list and dict stops at its first bad entry, so a document has at most a few errors per field of the
  schema however large it is (see ``reprobuild.core.validation`` for why that matters);
- :meth:`Record.check` holds the checks that span several fields; a ``ValueError`` it raises is an error of the
  record.

Errors are pydantic-shaped dicts (``loc``, ``msg``), so ``textformat.error_lines`` lists them the same way.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, ClassVar, Literal, TypeVar, Union

from reprobuild.core.textformat import error_lines, printable

R = TypeVar("R", bound="Record")
Loc = tuple[Any, ...]
Errors = list[dict[str, Any]]


class Invalid(ValueError):
    """A document that does not fit its record: ``errors()`` as pydantic gives them (``loc``, ``msg``)."""

    def __init__(self, errors: Errors) -> None:
        super().__init__(f"{len(errors)} validation error(s)\n{error_lines(errors, len(errors))}")
        self._errors = errors

    def errors(self) -> Errors:
        return list(self._errors)

    def error_count(self) -> int:
        return len(self._errors)


def invalid_summary(exc: Invalid) -> str:
    """The first errors of ``exc`` as ``location: message`` lines and a count of the rest; no input values."""
    return error_lines(exc.errors(), exc.error_count())


@dataclasses.dataclass(frozen=True)
class Bounds:
    """Bounds of a field, given as ``Annotated[type, Bounds(...)]``: a number's ``ge``/``le``, a string's
    ``pattern`` (matched from its start), a list's or dict's ``max_length`` (checked after its entries)."""

    ge: int | None = None
    le: int | None = None
    pattern: str | None = None
    max_length: int | None = None


_NONE = Bounds()


@dataclasses.dataclass(frozen=True)
class Record:
    """Base of the strict records: subclasses are ``@dataclass(frozen=True)``."""

    strict_record: ClassVar[bool] = True

    @classmethod
    def model_validate(cls: type[R], data: Any) -> R:
        """The record ``data`` describes, or :class:`Invalid` listing what does not fit."""
        errors: Errors = []
        value = _record(cls, data, (), errors)
        if errors or value is None:
            raise Invalid(errors)
        return value

    def model_dump(self) -> dict[str, Any]:
        """The record as plain data, fields in declaration order."""
        return {f.name: _dump(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def check(self) -> None:
        """Checks that span several fields: raise ValueError saying what is wrong."""


def _dump(value: Any) -> Any:
    if isinstance(value, Record):
        return value.model_dump()
    if isinstance(value, list):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value


_SCHEMAS: dict[type, tuple[tuple[dataclasses.Field[Any], Any], ...]] = {}


def _schema(cls: type) -> tuple[tuple[dataclasses.Field[Any], Any], ...]:
    """A record's fields with their resolved type hints (read once per class)."""
    found = _SCHEMAS.get(cls)
    if found is None:
        hints = typing.get_type_hints(cls, include_extras=True)
        found = _SCHEMAS[cls] = tuple((f, hints[f.name]) for f in dataclasses.fields(cls))
    return found


def _error(errors: Errors, loc: Loc, msg: str) -> None:
    errors.append({"loc": loc, "msg": msg})


def _record(cls: type[R], data: Any, loc: Loc, errors: Errors) -> R | None:
    if type(data) is not dict:
        _error(errors, loc, f"Input should be a valid dictionary or instance of {cls.__name__}")
        return None
    schema = _schema(cls)
    if len(data) > len(schema):
        unknown = [k for k in data if k not in {f.name for f, _ in schema}]
        shown = ", ".join(printable(repr(k))[:40] for k in unknown[:3])
        _error(errors, loc, f"Value error, {len(data)} keys where a {cls.__name__} has at most {len(schema)} "
                            f"fields: {len(unknown)} unknown, such as {shown}")
        return None
    before = len(errors)
    values: dict[str, Any] = {}
    for f, hint in schema:
        if f.name in data:
            values[f.name] = _value(hint, data[f.name], (*loc, f.name), errors)
        elif f.default_factory is not dataclasses.MISSING:
            values[f.name] = f.default_factory()
        else:
            _error(errors, (*loc, f.name), "Field required")
    names = {f.name for f, _ in schema}
    for key in data:
        if key not in names:
            _error(errors, (*loc, key), "Extra inputs are not permitted")
    if len(errors) > before:
        return None
    record = cls(**values)
    try:
        record.check()
    except ValueError as exc:
        _error(errors, loc, f"Value error, {exc}")
        return None
    return record


def _scalar(hint: Any, value: Any, loc: Loc, errors: Errors, bounds: Bounds) -> Any:
    if hint is int:
        if type(value) is not int:
            return _error(errors, loc, "Input should be a valid integer")
        if bounds.ge is not None and value < bounds.ge:
            return _error(errors, loc, f"Input should be greater than or equal to {bounds.ge}")
        if bounds.le is not None and value > bounds.le:
            return _error(errors, loc, f"Input should be less than or equal to {bounds.le}")
        return value
    if hint is float:
        if type(value) not in (int, float):
            return _error(errors, loc, "Input should be a valid number")
        try:
            return float(value)
        except OverflowError:
            return _error(errors, loc, "Input should be a finite number")
    if hint is str:
        if type(value) is not str:
            return _error(errors, loc, "Input should be a valid string")
        if bounds.pattern is not None and re.match(bounds.pattern, value) is None:
            return _error(errors, loc, f"String should match pattern '{bounds.pattern}'")
        return value
    if hint is bool:
        return value if type(value) is bool else _error(errors, loc, "Input should be a valid boolean")
    if hint is bytes:
        return value if type(value) is bytes else _error(errors, loc, "Input should be a valid bytes")
    raise TypeError(f"reprobuild.core.strict has no rule for {hint!r}")  # a schema bug, not a document's



def _value(hint: Any, value: Any, loc: Loc, errors: Errors, bounds: Bounds = _NONE) -> Any:
    """``value`` validated as ``hint``; on a mismatch, an error is added (the return value is then meaningless)."""
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        inner, *extras = typing.get_args(hint)
        return _value(inner, value, loc, errors, next((b for b in extras if isinstance(b, Bounds)), _NONE))
    if origin is Literal:
        allowed = typing.get_args(hint)
        if not any(type(value) is type(a) and value == a for a in allowed):
            _error(errors, loc, f"Input should be {' or '.join(repr(a) for a in allowed)}")
        return value
    if origin in (Union, types.UnionType):
        for member in typing.get_args(hint):
            trial: Errors = []
            result = _value(member, value, loc, trial)
            if not trial:
                return result
        return _error(errors, loc, f"Input should be one of: {', '.join(_describe(m) for m in typing.get_args(hint))}")
    if origin is list:
        if type(value) is not list:
            return _error(errors, loc, "Input should be a valid list")
        (item,) = typing.get_args(hint)
        out = []
        for i, x in enumerate(value):
            before = len(errors)
            out.append(_value(item, x, (*loc, i), errors))
            if len(errors) > before:  # fail fast: the first bad entry is enough
                return None
        if bounds.max_length is not None and len(out) > bounds.max_length:
            return _error(errors, loc, f"List should have at most {bounds.max_length} items after validation, "
                                       f"not {len(out)}")
        return out
    if origin is dict:
        if type(value) is not dict:
            return _error(errors, loc, "Input should be a valid dictionary")
        key_hint, item = typing.get_args(hint)
        mapping = {}
        for k, x in value.items():
            before = len(errors)
            key = _value(key_hint, k, (*loc, f"[key {printable(repr(k))[:40]}]"), errors)
            if len(errors) == before:
                mapping[key] = _value(item, x, (*loc, k), errors)
            if len(errors) > before:
                return None
        if bounds.max_length is not None and len(mapping) > bounds.max_length:
            return _error(errors, loc, f"Dictionary should have at most {bounds.max_length} items after "
                                       f"validation, not {len(mapping)}")
        return mapping
    if isinstance(hint, type) and issubclass(hint, Record):
        return _record(hint, value, loc, errors)
    return _scalar(hint, value, loc, errors, bounds)


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        return _describe(typing.get_args(hint)[0])
    if origin is list:
        return f"a list of {_describe(typing.get_args(hint)[0])}"
    return {int: "an integer", float: "a number", str: "a string", bool: "a boolean", bytes: "bytes"}.get(
        hint, getattr(hint, "__name__", repr(hint)))

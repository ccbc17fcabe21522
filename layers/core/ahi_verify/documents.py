"""Strict readers for the JSON documents the verifier writes and reads back (report, part, plan).

Each takes the object, the member's key and where the object is in its document, and raises
:class:`ReportFormatError` naming that place (``report.imageSets[2].frames[7].status``) when the member is
missing or of the wrong type; nothing is coerced.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from .ids import is_int

_E = TypeVar("_E", bound=enum.Enum)
_T = TypeVar("_T")


class ReportFormatError(ValueError):
    """A report (or part, or plan) document that does not follow the schema; names the field."""


def mapping(doc: Any, where: str) -> Mapping[str, Any]:
    """A JSON object (the document, or one of its members)."""
    if not isinstance(doc, Mapping):
        raise ReportFormatError(f"{where} is not an object")
    return doc


def _checked(obj: Mapping[str, Any], key: str, where: str, accepts: Callable[[Any], bool], kind: str) -> Any:
    """The member's value when ``accepts`` it, else an error naming the member and the ``kind`` expected."""
    value = obj.get(key)
    if not accepts(value):
        raise ReportFormatError(f"{where}.{key} is not {kind}")
    return value


def _optional(
    obj: Mapping[str, Any], key: str, read: Callable[[Mapping[str, Any], str, str], _T], where: str
) -> _T | None:
    return None if obj.get(key) is None else read(obj, key, where)


def text(obj: Mapping[str, Any], key: str, where: str) -> str:
    """A string member."""
    return str(_checked(obj, key, where, lambda v: isinstance(v, str), "a string"))


def integer(obj: Mapping[str, Any], key: str, where: str) -> int:
    """An integer member (a JSON ``true`` is not one)."""
    return int(_checked(obj, key, where, is_int, "an integer"))


def number(obj: Mapping[str, Any], key: str, where: str) -> float:
    """A number member."""
    return float(_checked(obj, key, where, lambda v: is_int(v) or isinstance(v, float), "a number"))


def boolean(obj: Mapping[str, Any], key: str, where: str) -> bool:
    """A boolean member."""
    return bool(_checked(obj, key, where, lambda v: isinstance(v, bool), "a boolean"))


def optional_text(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    """A string member, or null."""
    return _optional(obj, key, text, where)


def optional_integer(obj: Mapping[str, Any], key: str, where: str) -> int | None:
    """An integer member, or null."""
    return _optional(obj, key, integer, where)


def optional_bool(obj: Mapping[str, Any], key: str, where: str) -> bool | None:
    """A boolean member, or null."""
    return _optional(obj, key, boolean, where)


def member(kind: type[_E], obj: Mapping[str, Any], key: str, where: str) -> _E:
    """A member whose value is one of the enumeration's."""
    try:
        return kind(obj.get(key))
    except ValueError:
        raise ReportFormatError(f"{where}.{key} is not one of {', '.join(str(m.value) for m in kind)}") from None


def items(obj: Mapping[str, Any], key: str, where: str, parse: Callable[[Any, str], _T]) -> tuple[_T, ...]:
    """A list member, each entry parsed by ``parse(entry, where_it_is)``."""
    values = obj.get(key)
    if not isinstance(values, list):
        raise ReportFormatError(f"{where}.{key} is not a list")
    return tuple(parse(v, f"{where}.{key}[{i}]") for i, v in enumerate(values))


def texts(obj: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    """A list of strings."""
    accepts: Callable[[Any], bool] = lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)  # noqa: E731
    return tuple(_checked(obj, key, where, accepts, "a list of strings"))


def same(stored: Any, computed: Any, where: str) -> None:
    """A stored value that must equal the one computed from the document (summary, verdict)."""
    if stored != computed:
        raise ReportFormatError(f"{where} is {stored!r}, but the document's own values give {computed!r}")

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
    if not isinstance(doc, Mapping):
        raise ReportFormatError(f"{where} is not an object")
    return doc


def text(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise ReportFormatError(f"{where}.{key} is not a string")
    return value


def optional_text(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    return None if obj.get(key) is None else text(obj, key, where)


def integer(obj: Mapping[str, Any], key: str, where: str) -> int:
    value = obj.get(key)
    if not is_int(value):
        raise ReportFormatError(f"{where}.{key} is not an integer")
    return value


def optional_integer(obj: Mapping[str, Any], key: str, where: str) -> int | None:
    return None if obj.get(key) is None else integer(obj, key, where)


def number(obj: Mapping[str, Any], key: str, where: str) -> float:
    value = obj.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ReportFormatError(f"{where}.{key} is not a number")
    return float(value)


def optional_bool(obj: Mapping[str, Any], key: str, where: str) -> bool | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, bool):
        raise ReportFormatError(f"{where}.{key} is not a boolean")
    return value


def member(kind: type[_E], obj: Mapping[str, Any], key: str, where: str) -> _E:
    try:
        return kind(obj.get(key))
    except ValueError:
        raise ReportFormatError(f"{where}.{key} is not one of {', '.join(str(m.value) for m in kind)}") from None


def items(obj: Mapping[str, Any], key: str, where: str, parse: Callable[[Any, str], _T]) -> tuple[_T, ...]:
    values = obj.get(key)
    if not isinstance(values, list):
        raise ReportFormatError(f"{where}.{key} is not a list")
    return tuple(parse(v, f"{where}.{key}[{i}]") for i, v in enumerate(values))


def texts(obj: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    values = obj.get(key)
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ReportFormatError(f"{where}.{key} is not a list of strings")
    return tuple(values)


def same(stored: Any, computed: Any, where: str) -> None:
    if stored != computed:
        raise ReportFormatError(f"{where} is {stored!r}, but the document's own values give {computed!r}")

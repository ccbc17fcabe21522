"""EventBridge event patterns, matched as EventBridge matches them.

Used for the template's rules (``EventBridgeRule`` events, ``AWS::Events::Rule``) and for the SQS event
source mapping's ``FilterCriteria``, which use the same pattern language.

Supported: exact values (strings, numbers, booleans, null; a list in the event matches when any element
does), nested objects, ``prefix``, ``suffix`` (each also with ``equals-ignore-case`` inside), ``wildcard``,
``equals-ignore-case``, ``anything-but`` (a value, a list, or a ``prefix``/``suffix``/``wildcard``),
``numeric``, ``exists`` and ``$or``. ``cidr`` raises :class:`PatternError` rather than guessing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any


class PatternError(ValueError):
    """The pattern uses something EventBridge rejects or this matcher does not implement."""


_MISSING = object()
_NUMERIC_OPS = {
    "=": lambda a, b: a == b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def parse_pattern(pattern: str | Mapping[str, Any]) -> dict[str, Any]:
    """Return a pattern as a mapping (templates may give ``EventPattern`` as a JSON string).

    Raises
    ------
    PatternError
        When it is not a JSON object.
    """
    doc: Any = json.loads(pattern) if isinstance(pattern, str) else dict(pattern)
    if not isinstance(doc, dict):
        raise PatternError("an event pattern must be a JSON object")
    return doc


def matches(pattern: str | Mapping[str, Any], event: Any) -> bool:
    """Whether ``event`` matches ``pattern``.

    Parameters
    ----------
    pattern
        An EventBridge event pattern (mapping or JSON text).
    event
        The event (for FilterCriteria: the SQS record with ``body`` already parsed when it is JSON).

    Returns
    -------
    bool

    Raises
    ------
    PatternError
        For a malformed pattern or an unsupported matcher.

    Examples
    --------
    >>> matches({"source": ["aws.s3"], "detail": {"object": {"key": [{"suffix": ".json"}]}}},
    ...         {"source": "aws.s3", "detail": {"object": {"key": "a/job-output-manifest.json"}}})
    True
    """
    return _match_object(parse_pattern(pattern), event)


def _match_object(pattern: Mapping[str, Any], event: Any) -> bool:
    for key, expected in pattern.items():
        if key == "$or":
            if not isinstance(expected, list) or len(expected) < 2:
                raise PatternError("$or needs a list of at least two patterns")
            if not any(_match_object(_as_mapping(alternative), event) for alternative in expected):
                return False
            continue
        value = event.get(key, _MISSING) if isinstance(event, Mapping) else _MISSING
        if isinstance(expected, Mapping):
            # A nested pattern: the field must be an object that matches it.
            if not isinstance(value, Mapping) or not _match_object(expected, value):
                return False
            continue
        if not isinstance(expected, list):
            raise PatternError(f"pattern field {key!r} must be a list of values or an object, got {expected!r}")
        if not _match_field(expected, value):
            return False
    return True


def _as_mapping(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise PatternError("every $or alternative must be an object")
    return value


def _match_field(matchers: list[Any], value: Any) -> bool:
    """One field: any matcher must accept the value (for an array value: any element of it)."""
    for matcher in matchers:
        if isinstance(matcher, Mapping) and "exists" in matcher:
            if len(matcher) != 1 or not isinstance(matcher["exists"], bool):
                raise PatternError('"exists" takes true or false and nothing else')
            # EventBridge applies "exists" to leaf fields only: an object value does not count as present.
            present = value is not _MISSING and not isinstance(value, Mapping)
            if matcher["exists"] == present:
                return True
            continue
        if isinstance(matcher, Mapping) and "anything-but" in matcher:
            # anything-but needs a present value; for an array value, every element must avoid the excluded ones.
            if value is _MISSING:
                continue
            values = value if isinstance(value, list) else [value]
            if values and all(_anything_but(matcher, v) for v in values):
                return True
            continue
        if value is _MISSING:
            continue
        values = value if isinstance(value, list) else [value]
        if any(_match_value(matcher, v) for v in values):
            return True
    return False


def _match_value(matcher: Any, value: Any) -> bool:  # noqa: PLR0911 - one return per matcher kind
    if matcher is None or isinstance(matcher, str | bool):
        return type(matcher) is type(value) and matcher == value
    if isinstance(matcher, int | float):
        # Numbers match numerically (5 and 5.0); booleans are not numbers here.
        return isinstance(value, int | float) and not isinstance(value, bool) and float(matcher) == float(value)
    if not isinstance(matcher, Mapping) or len(matcher) != 1:
        raise PatternError(f"unsupported matcher {matcher!r}")
    ((kind, arg),) = matcher.items()
    if kind == "prefix":
        return _affix(arg, value, str.startswith)
    if kind == "suffix":
        return _affix(arg, value, str.endswith)
    if kind == "equals-ignore-case":
        return isinstance(value, str) and isinstance(arg, str) and value.casefold() == arg.casefold()
    if kind == "wildcard":
        return isinstance(value, str) and _wildcard(arg).fullmatch(value) is not None
    if kind == "numeric":
        return _numeric(arg, value)
    raise PatternError(f"matcher {kind!r} is not supported by the local run")


def _affix(arg: Any, value: Any, test: Any) -> bool:
    if not isinstance(value, str):
        return False
    if isinstance(arg, Mapping) and set(arg) == {"equals-ignore-case"}:
        return bool(test(value.casefold(), str(arg["equals-ignore-case"]).casefold()))
    if not isinstance(arg, str):
        raise PatternError(f"prefix/suffix takes a string, got {arg!r}")
    return bool(test(value, arg))


def _wildcard(arg: Any) -> re.Pattern[str]:
    if not isinstance(arg, str):
        raise PatternError(f"wildcard takes a string, got {arg!r}")
    if "**" in arg:
        raise PatternError("wildcard patterns may not contain consecutive '*'")
    # '\*' is a literal star; every other character is literal.
    parts, i = [], 0
    while i < len(arg):
        char = arg[i]
        if char == "\\" and i + 1 < len(arg) and arg[i + 1] in "*\\":
            parts.append(re.escape(arg[i + 1]))
            i += 2
            continue
        parts.append(".*" if char == "*" else re.escape(char))
        i += 1
    return re.compile("".join(parts), re.DOTALL)


def _numeric(arg: Any, value: Any) -> bool:
    if not isinstance(arg, list) or len(arg) not in (2, 4):
        raise PatternError(f"numeric takes [op, n] or [op, n, op, n], got {arg!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    for op, bound in zip(arg[::2], arg[1::2], strict=True):
        if op not in _NUMERIC_OPS or isinstance(bound, bool) or not isinstance(bound, int | float):
            raise PatternError(f"numeric comparison {op!r} {bound!r} is not valid")
        if not _NUMERIC_OPS[op](float(value), float(bound)):
            return False
    return True


def _anything_but(matcher: Mapping[str, Any], value: Any) -> bool:
    """True when ``value`` is none of the excluded values."""
    excluded = matcher["anything-but"]
    if len(matcher) != 1:
        raise PatternError("anything-but must be the only key of its matcher")
    if isinstance(excluded, Mapping):
        ((kind, arg),) = excluded.items()
        if kind in ("prefix", "suffix", "wildcard", "equals-ignore-case"):
            if kind == "equals-ignore-case" and isinstance(arg, list):
                return not any(_match_value({kind: a}, value) for a in arg)
            return not _match_value({kind: arg}, value)
        raise PatternError(f"anything-but {kind!r} is not supported by the local run")
    candidates = excluded if isinstance(excluded, list) else [excluded]
    return not any(_match_value(candidate, value) for candidate in candidates)

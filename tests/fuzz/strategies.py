"""Hypothesis strategies: JSON values, mutations of realistic documents, and the shared settings."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.fuzz.targets import FUZZ_EXAMPLES, FUZZ_RANDOM

#: Derandomized (reproducible) with the default budget; random search when AHI_FUZZ_EXAMPLES is set.
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=not FUZZ_RANDOM,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

_ints = st.one_of(
    st.integers(-(2**33), 2**33),
    st.sampled_from([0, 1, -1, 2**31, 2**32 - 1, 2**32, 2**63, -(2**63), 10**30]),
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    _ints,
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(["", "a" * 32, "0" * 33, "1.2.840.10008.1.2.4.202", "DECOMPRESSED", "aws:s3", "ObjectCreated:Put"]),
)
json_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out += _paths(value, (*prefix, i))
    return out


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        doc = doc[step]
    return doc


@st.composite
def mutated(draw: st.DrawFn, seeds: list[Any], max_edits: int = 4) -> Any:
    """A deep copy of one seed document with 0..max_edits edits: replace a value, delete a key or item,
    add a key, or swap a value for a same-kind oddity (empty container, wrong-type scalar)."""
    doc = copy.deepcopy(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, max_edits))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["replace", "delete", "add", "empty", "replace"]))
        if not path:
            if op == "replace":
                doc = draw(json_values)
            continue
        parent = _get(doc, path[:-1])
        key = path[-1]
        if op == "delete":
            del parent[key]
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=12))] = draw(json_values)
        elif op == "add" and isinstance(parent, list):
            parent.insert(draw(st.integers(0, len(parent))), copy.deepcopy(draw(st.sampled_from([*parent, None]))))
        elif op == "empty":
            parent[key] = draw(st.sampled_from([{}, [], "", 0, None, True]))
        else:
            parent[key] = draw(json_values)
    return doc


@st.composite
def byte_mutated(draw: st.DrawFn, data: bytes, max_edits: int = 4) -> bytes:
    """The bytes with a few flips, insertions, deletions or a truncation."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, max_edits))):
        pos = draw(st.integers(0, len(out)))
        op = draw(st.integers(0, 3))
        if op == 0 and pos < len(out):
            out[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == 1:
            out[pos:pos] = draw(st.binary(min_size=1, max_size=4) | st.sampled_from([b'"', b"{", b"[", b"]", b"}"]))
        elif op == 2:
            del out[pos : pos + draw(st.integers(1, 8))]
        else:
            del out[pos:]
    return bytes(out)


def dumps(doc: Any) -> bytes:
    return json.dumps(doc).encode()

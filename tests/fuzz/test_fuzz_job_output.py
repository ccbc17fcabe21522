"""Import job output parsing never fails with anything but its own error type."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from ahi_verify.job_output import LineKind
from tests.fuzz.strategies import FUZZ, byte_mutated, dumps, json_values, mutated
from tests.fuzz.targets import LINE_SEEDS, MANIFEST_SEED, guarded, line_target, manifest_target

MANIFEST_BYTES = dumps(MANIFEST_SEED)
LINE_DOCS = [json.loads(line) for _, line in LINE_SEEDS]


@FUZZ
@given(mutated([MANIFEST_SEED], max_edits=5))
def test_mutated_manifest_documents(doc: object) -> None:
    guarded(manifest_target, dumps(doc))


@FUZZ
@given(byte_mutated(MANIFEST_BYTES) | st.binary(max_size=200) | json_values.map(dumps))
def test_manifest_bytes(raw: bytes) -> None:
    guarded(manifest_target, raw)


@FUZZ
@given(st.sampled_from(list(LineKind)), mutated(LINE_DOCS, max_edits=4))
def test_mutated_ndjson_lines(kind: LineKind, doc: object) -> None:
    guarded(line_target, kind, dumps(doc))


@FUZZ
@given(
    st.sampled_from(list(LineKind)),
    st.sampled_from([line for _, line in LINE_SEEDS]).flatmap(byte_mutated) | st.binary(max_size=120),
)
def test_ndjson_line_bytes(kind: LineKind, line: bytes) -> None:
    guarded(line_target, kind, line)

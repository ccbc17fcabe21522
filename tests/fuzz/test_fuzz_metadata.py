"""Image set metadata: a MetadataError or exactly one FrameRef per listed frame, for mutated real documents."""

from __future__ import annotations

import gzip
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.strategies import FUZZ, byte_mutated, dumps, mutated
from tests.fuzz.targets import (
    guarded,
    metadata_blob_target,
    metadata_doc_target,
    metadata_seeds,
    shared_fixtures_present,
)

pytestmark = pytest.mark.skipif(not shared_fixtures_present(), reason="shared fixtures are not beside the checkout")
SEEDS: list[dict[str, Any]] = metadata_seeds(max_instances=2) if shared_fixtures_present() else [{}]


@FUZZ
@given(mutated(SEEDS, max_edits=6))
def test_mutated_metadata_documents(doc: Any) -> None:
    if isinstance(doc, dict):
        guarded(metadata_doc_target, doc)
    guarded(metadata_blob_target, dumps(doc))


@FUZZ
@given(st.sampled_from([dumps(d) for d in SEEDS]).flatmap(byte_mutated), st.booleans())
def test_metadata_blob_bytes(blob: bytes, compress: bool) -> None:
    guarded(metadata_blob_target, gzip.compress(blob) if compress else blob)


@FUZZ
@given(st.sampled_from([gzip.compress(dumps(d)) for d in SEEDS]).flatmap(byte_mutated))
def test_corrupt_gzip(blob: bytes) -> None:
    guarded(metadata_blob_target, blob)

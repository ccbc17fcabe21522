"""SQS work item bodies: a WorkItem that round-trips, or WorkItemError."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.strategies import FUZZ, byte_mutated, json_values, mutated
from tests.fuzz.targets import WORK_ITEM_SEEDS, guarded, work_item_target

SEED_DOCS = [json.loads(body) for body in WORK_ITEM_SEEDS]


@FUZZ
@given(mutated(SEED_DOCS, max_edits=3))
def test_mutated_work_items(doc: Any) -> None:
    guarded(work_item_target, json.dumps(doc))


@FUZZ
@given(
    st.sampled_from([b.encode() for b in WORK_ITEM_SEEDS]).flatmap(byte_mutated).map(lambda b: b.decode("latin-1"))
    | st.text(max_size=80)
    | json_values.map(json.dumps)
)
def test_work_item_text(body: str) -> None:
    guarded(work_item_target, body)

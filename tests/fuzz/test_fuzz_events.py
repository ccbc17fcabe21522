"""Trigger events: list[JobRef] | Reconcile, or EventError, for mutated sample events."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.strategies import FUZZ, json_values, mutated
from tests.fuzz.targets import event_seeds, event_target, guarded

SEEDS = event_seeds()


@FUZZ
@given(mutated(SEEDS, max_edits=4))
def test_mutated_events(event: Any) -> None:
    if isinstance(event, dict):
        guarded(event_target, event)


@FUZZ
@given(st.dictionaries(st.sampled_from(["Records", "source", "detail-type", "detail", "Event"]), json_values))
def test_event_shaped_dicts(event: dict[str, Any]) -> None:
    guarded(event_target, event)

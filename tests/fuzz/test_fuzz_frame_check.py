"""check_frame on mutated lossless frames: always a FrameResult, MATCH only for the original pixels."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tests.fuzz.strategies import FUZZ
from tests.fuzz.targets import ENCODINGS, EXAMPLE_SECONDS, encode_case, frame_target, guarded, mutate

DTYPES = [np.uint8, np.int8, np.uint16, np.int16]


@st.composite
def pixels(draw: st.DrawFn) -> Any:
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    rows, cols = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    shape = (rows, cols) if draw(st.booleans()) else (rows, cols, 3)
    return draw(hnp.arrays(dtype, shape, elements=hnp.from_dtype(dtype)))


edits = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 2**16), st.integers(0, 255)), min_size=0, max_size=5)


@pytest.mark.timeout(120)
@FUZZ
@given(pixels(), st.sampled_from(ENCODINGS), edits)
def test_mutated_frames(original: Any, encoding: str, ops: list[tuple[int, int, int]]) -> None:
    case = encode_case(original, encoding)
    started = time.monotonic()
    outcome = guarded(frame_target, case, mutate(case.blob, ops))
    assert time.monotonic() - started < EXAMPLE_SECONDS, f"one frame took {time.monotonic() - started:.1f} s"
    if not ops:
        assert outcome.startswith("ok:MATCH"), outcome  # the unmutated frame verifies

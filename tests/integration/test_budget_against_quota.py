"""The request-rate budget against the emulator's quota: real boto3, real HTTP, real 429s.

Counts only, never times: the rates themselves are measured by ``python -m bench.budget``.
"""

from __future__ import annotations

import numpy as np
import pytest

from ahi_emulator import Emulator, InstanceSpec
from ahi_emulator.quotas import Quota
from ahi_verify.budget import FRAMES, MAX_FETCH_THREADS, MemoryBoard, Rates, RequestBudget
from ahi_verify.healthimaging import HealthImagingSource, make_client
from ahi_verify.image_set import VerifyOptions, verify_image_set

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def datastore(emulator: Emulator) -> str:
    return emulator.create_datastore()


@pytest.mark.usefixtures("emulator_env")
def test_a_budget_above_the_quota_is_throttled_backs_off_and_still_verifies_every_frame(
    emulator: Emulator, datastore: str
) -> None:
    # GIVEN an account whose GetImageFrame quota (60/s, burst 5) is far below the budget (300/s)
    rng = np.random.default_rng(3)
    frames = [rng.integers(-1024, 3000, size=(32, 32)).astype(np.int16) for _ in range(120)]
    info = emulator.add_image_set(datastore, [InstanceSpec(frames=frames)], resolution_levels=False)
    emulator.set_quota("GetImageFrame", Quota(rate=60.0, burst=5))
    budget_rates = Rates(frames=300.0, metadata=10.0)
    board = MemoryBoard(budget_rates)
    budget = RequestBudget(budget_rates, board, "worker", static_share=budget_rates.divided(5))
    client = make_client(max_pool_connections=MAX_FETCH_THREADS, max_attempts=10, budget=budget)
    try:
        # WHEN the image set is verified with the budget's claim held
        with budget.running():
            result = verify_image_set(
                HealthImagingSource(client), datastore, info.image_set_id, options=VerifyOptions.budgeted(budget)
            )
            assert board.state is not None
            ceiling = board.state.ceiling.frames
    finally:
        emulator.reset_quotas()
    # THEN every frame matched: the 429s were retried, none became an error
    assert result.counts.match == 120
    assert result.all_match
    # AND the service's 429s were counted, and the deployment's ceiling came down from the budget
    sent, throttled = budget.counters()
    assert throttled > 0
    assert sent >= 121 + throttled  # 120 frames and the metadata, plus one attempt per 429
    assert ceiling < budget_rates.frames
    assert budget.rate(FRAMES) == budget_rates.frames / 5  # the claim withdrawn: back to the static share

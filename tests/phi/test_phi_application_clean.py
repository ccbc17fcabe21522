"""NotifyOnCleanJobs=true: a clean import of sentinel files (one under the name-bearing key) gives a short
summary alert; nothing the application emits carries the sentinel. (Its own module: one LocalStack at a
time per process.)"""

from __future__ import annotations

import json

import pytest

from local.stack import LocalStack
from tests.phi.conftest import Emitted
from tests.phi.sentinel import assert_clean, scrub_key_in_sdk_logs
from tests.phi.test_phi_application import DS, capture_stack, run_import

pytestmark = pytest.mark.integration


def test_clean_job_summary_never_emits_patient_data(emitted: Emitted) -> None:
    # GIVEN NotifyOnCleanJobs=true and a clean import of sentinel files (one under the name-bearing key)
    with LocalStack(parameters={"DatastoreId": DS, "NotifyOnCleanJobs": "true"}) as stack:
        stack.emulator.create_datastore(DS)
        emitted.start()
        run_import(stack, "good")
        stack.run_until_idle(timeout=120)
        reports = capture_stack(stack, emitted, "clean")
        (report,) = reports.values()
        assert report["verdict"] == "CLEAN", json.dumps(
            {k: report[k] for k in ("summary", "failures", "warnings", "notes")}
        )
        (alert,) = stack.alerts()
        assert alert.subject is not None
        assert alert.subject.startswith("[ahi-verify] OK:")
    # THEN neither an attribute value nor the key (no file failed or warned) appears anywhere
    assert_clean(scrub_key_in_sdk_logs(emitted.texts))

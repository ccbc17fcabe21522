"""Verify a whole import job in one process (the CLI's way): plan -> every work item -> merge.

The application runs the same three steps across its functions: the trigger plans (``plan``), each worker
verifies one work item (``work``), the last one merges (``merge``). Both therefore produce the same
:class:`~ahi_verify.report.JobReport` for the same job, apart from its timings.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .image_set import VerifyOptions
from .locations import S3Location
from .merge import merge_parts
from .plan import plan_job
from .ports import FrameSource, ImportJobs, JobOutputStore
from .report import JobReport, iso_time
from .work import OnResult, source_inputs, verify_work_item


def verify_job(
    reader: JobOutputStore,
    source: FrameSource,
    folder: S3Location,
    *,
    options: VerifyOptions | None = None,
    manifest_wait_s: float = 10.0,
    with_sources: bool = False,
    on_result: OnResult | None = None,
    on_image_set: Callable[[int, int], None] | None = None,
    clock: Callable[[], float] = time.time,
    jobs: ImportJobs | None = None,
) -> JobReport:
    """Verify every image set of one import job.

    Parameters
    ----------
    reader : JobOutputStore
        The job output folder (and, with ``with_sources``, the input bucket).
    source : FrameSource
    folder : S3Location
        The job output folder.
    options : VerifyOptions, optional
    manifest_wait_s : float
        How long to wait for a manifest that lags the job's completion.
    with_sources : bool
        Also compare every frame with the original P10 file (the three-way check).
    on_result : callable, optional
        Progress callback: each frame's result and its image set's frame count.
    on_image_set : callable, optional
        Progress callback: ``(index, count)`` as image set ``index`` (from 1) of ``count`` begins.
    clock : callable
        Seconds since the epoch, for the report's timings.
    jobs : ImportJobs, optional
        Confirm the job with GetDICOMImportJob (see :func:`ahi_verify.plan.plan_job`).

    Raises
    ------
    JobOutputError, ManifestError
        The manifest cannot be read or parsed: nothing can be verified.
    """
    plan = plan_job(
        reader,
        folder,
        started_at=iso_time(clock()),
        manifest_wait_s=manifest_wait_s,
        with_sources=with_sources,
        jobs=jobs,
    )
    items = plan.work_items()
    parts = []
    for index, item in enumerate(items, start=1):
        if on_image_set is not None:
            on_image_set(index, len(items))
        sources = source_inputs(plan, item.image_set_id, reader)
        parts.append(verify_work_item(source, item, options, sources=sources, on_result=on_result))
    return merge_parts(plan, parts, finished_at=iso_time(clock()))

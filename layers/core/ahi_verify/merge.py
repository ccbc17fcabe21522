"""The job's last step: the plan and every work item's part -> the :class:`~ahi_verify.report.JobReport`.

Each image set is assembled from its parts in metadata order, each frame once (a redelivered item's
duplicate part changes nothing); an image set with no part, or with frames no part recorded, says so
as its error, so a gap can never pass as a clean image set. Its metadata's SOP instances are compared with
what the import says it put there (the SUCCESS/WARNING lines naming it, the manifest's matched SOP
instances): fewer instances than either, or two counts of the import that disagree, is a discrepancy.
"""

from __future__ import annotations

from collections.abc import Iterable

from .plan import JobPlan, PlannedImageSet
from .report import FrameResult, ImageSetReport, JobReport, Part, Timings


def merge_parts(plan: JobPlan, parts: Iterable[Part], *, finished_at: str) -> JobReport:
    """Build the job's report.

    Parameters
    ----------
    plan : JobPlan
        The job as planned: header, findings, notes, image sets.
    parts : iterable of Part
        Every completed work item's part, in any order, duplicates allowed.
    finished_at : str
        ISO 8601 time of the merge.
    """
    collected = list(parts)
    by_set: dict[str, list[Part]] = {}
    for part in collected:
        by_set.setdefault(part.image_set_id, []).append(part)
    image_sets = tuple(_image_set(planned, by_set.get(planned.image_set_id, [])) for planned in plan.image_sets)
    return JobReport(
        job=plan.job,
        findings=plan.findings,
        notes=plan.notes,
        discrepancies=plan.discrepancies + tuple(d for s in image_sets for d in count_discrepancies(s)),
        evidence=plan.evidence,
        image_sets=image_sets,
        timings=Timings(
            started_at=plan.started_at,
            finished_at=finished_at,
            work_items=len(collected),
            verification_seconds=round(sum(p.seconds for p in collected), 3),
        ),
    )


def _image_set(planned: PlannedImageSet, parts: list[Part]) -> ImageSetReport:
    frames: dict[int, FrameResult] = {}
    errors = sorted({p.error for p in parts if p.error})
    total = max((p.total_frames for p in parts), default=0)
    for part in parts:
        for frame in part.frames:
            frames.setdefault(frame.index, frame)
    if not parts:
        errors.append("no work item of this image set completed")
    elif len(frames) != total and not errors:
        errors.append(f"{total - len(frames)} of {total} frames have no recorded result")
    problems = dict.fromkeys(problem for part in parts for problem in part.source_errors)
    orphans = dict.fromkeys(orphan for part in parts for orphan in part.orphan_source_frames)
    instances = [p.instances for p in parts if p.instances is not None]
    return ImageSetReport(
        image_set_id=planned.image_set_id,
        version=planned.version,
        is_primary=planned.is_primary,
        in_manifest=planned.in_manifest,
        imported_files=planned.imported_files,
        matched_sop_instances=planned.matched_sop_instances,
        instances=max(instances) if instances else None,
        error="; ".join(errors) or None,
        frames=tuple(frames[i] for i in sorted(frames)),
        source_errors=tuple(problems),
        orphan_source_frames=tuple(orphans),
    )


def count_discrepancies(image_set: ImageSetReport) -> list[str]:
    """What the import says it put in the image set against what its metadata holds, in words.

    The metadata may hold more instances than this job imported, and the manifest may match more than the
    lines name (a primary image set that other imports had filled before: AWS does not document whether
    ``numberOfMatchedSOPInstances`` counts those); neither may ever be fewer.
    """
    found = []
    files, matched, held = image_set.imported_files, image_set.matched_sop_instances, image_set.instances
    where = f"image set {image_set.image_set_id}"
    if matched is not None and matched < files:
        found.append(f"{where}: {files} SUCCESS/WARNING line(s) name it, the manifest matched {matched}")
    if held is not None:
        claimed = max(files, matched or 0)
        if held < claimed:
            found.append(f"{where}: its metadata holds {held} SOP instance(s), the import put {claimed} there")
    return found

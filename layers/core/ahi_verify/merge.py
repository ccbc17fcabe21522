"""The job's last step: the plan and every work item's part -> the :class:`~ahi_verify.report.JobReport`.

Each image set is assembled from its parts in metadata order, each frame once (a redelivered item's
duplicate part changes nothing); an image set with no part, or with frames no part recorded, says so
as its error, so a gap can never pass as a clean image set. Its metadata's SOP instances are compared with
what the import says it put there (the SUCCESS/WARNING lines naming it, the manifest's matched SOP
instances): fewer instances than either, or two counts of the import that disagree, is a discrepancy.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from .plan import JobPlan, PlannedImageSet
from .report import FrameResult, ImageSetReport, JobOutcome, JobReport, JobTally, Part, Timings


class StreamingMerge:
    """The merge, one image set at a time: the job's report without holding more than one image set's frames.

    :meth:`image_sets` assembles the image sets in plan order as their parts arrive and keeps running totals
    (:class:`~ahi_verify.report.JobTally`), the discrepancies and the timings; :meth:`outcome` then gives the
    :class:`~ahi_verify.report.JobOutcome` the verdict, the alert and the HTML page are made from.
    :func:`merge_parts` is this merge with every image set kept.

    Parameters
    ----------
    plan : JobPlan
        The job as planned: header, findings, notes, image sets.
    finished_at : str
        ISO 8601 time of the merge.
    """

    def __init__(self, plan: JobPlan, *, finished_at: str) -> None:
        self._plan = plan
        self._finished_at = finished_at
        self._tally = JobTally(plan.findings)
        # Discrepancies are bounded by the image sets (at most two each), not by their frames.
        self._discrepancies: list[str] = list(plan.discrepancies)
        self._work_items = 0
        self._seconds = 0.0
        self._done = False

    def image_sets(self, grouped: Iterable[tuple[str, Sequence[Part]]]) -> Iterator[ImageSetReport]:
        """Assemble each planned image set from its parts, in plan order.

        Parameters
        ----------
        grouped : iterable of (str, sequence of Part)
            ``(image set ID, its parts)``: every planned image set once, in plan order (an empty sequence for
            one no work item completed), then any other image set's parts, which count in the timings only
            (as a part of no planned image set always has).

        Yields
        ------
        ImageSetReport
            Each planned image set, already counted in the totals.

        Raises
        ------
        ValueError
            ``grouped`` skips a planned image set or gives one out of plan order.
        """
        planned = iter(self._plan.image_sets)
        planned_ids = {s.image_set_id for s in self._plan.image_sets}
        counted: set[str] = set()  # a plan listing an image set twice gets its parts twice, counted once
        expected = next(planned, None)
        for image_set_id, parts in grouped:
            if image_set_id not in counted:
                counted.add(image_set_id)
                self._work_items += len(parts)
                self._seconds += sum(p.seconds for p in parts)
            if expected is not None and image_set_id == expected.image_set_id:
                image_set = _image_set(expected, parts)
                self._tally.add(image_set)
                self._discrepancies += count_discrepancies(image_set)
                yield image_set
                expected = next(planned, None)
            elif image_set_id in planned_ids:
                raise ValueError(f"parts of image set {image_set_id} arrived out of plan order")
            elif self._plan.listed:  # an audit: the parts name the image sets (see JobPlan.listed)
                image_set = _image_set(PlannedImageSet(image_set_id, None, None), parts)
                self._tally.add(image_set)
                self._discrepancies += count_discrepancies(image_set)
                yield image_set
        if expected is not None:
            raise ValueError(f"no parts (not even none) were given for planned image set {expected.image_set_id}")
        self._done = True

    def outcome(self) -> JobOutcome:
        """The merged job without its frames (once :meth:`image_sets` has been consumed)."""
        if not self._done:
            raise RuntimeError("the merge has not seen every image set yet")
        plan = self._plan
        return JobOutcome(
            job=plan.job,
            findings=plan.findings,
            notes=plan.notes,
            discrepancies=tuple(self._discrepancies),
            totals=self._tally.totals(),
            timings=Timings(
                started_at=plan.started_at,
                finished_at=self._finished_at,
                work_items=self._work_items,
                # Summed in plan order, which merge_parts follows too: the same total from either path.
                verification_seconds=round(self._seconds, 3),
            ),
        )


def merge_parts(plan: JobPlan, parts: Iterable[Part], *, finished_at: str) -> JobReport:
    """Build the job's whole report in memory (the CLI's way; the application streams with :class:`StreamingMerge`).

    Parameters
    ----------
    plan : JobPlan
        The job as planned: header, findings, notes, image sets.
    parts : iterable of Part
        Every completed work item's part, in any order, duplicates allowed.
    finished_at : str
        ISO 8601 time of the merge.
    """
    by_set: dict[str, list[Part]] = {}
    for part in parts:
        by_set.setdefault(part.image_set_id, []).append(part)
    merge = StreamingMerge(plan, finished_at=finished_at)
    image_sets = tuple(merge.image_sets(group_in_plan_order(plan, by_set)))
    outcome = merge.outcome()
    return JobReport(
        job=plan.job,
        findings=plan.findings,
        notes=plan.notes,
        discrepancies=outcome.discrepancies,
        evidence=plan.evidence,
        image_sets=image_sets,
        timings=outcome.timings,
    )


def group_in_plan_order(plan: JobPlan, by_set: dict[str, list[Part]]) -> Iterator[tuple[str, list[Part]]]:
    """``(image set ID, parts)`` as :meth:`StreamingMerge.image_sets` takes them, from parts grouped by image set."""
    planned = {s.image_set_id for s in plan.image_sets}
    for image_set in plan.image_sets:
        yield image_set.image_set_id, by_set.get(image_set.image_set_id, [])
    for image_set_id, parts in by_set.items():
        if image_set_id not in planned:
            yield image_set_id, parts


def _image_set(planned: PlannedImageSet, parts: Sequence[Part]) -> ImageSetReport:
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

"""Image-set work: the unit of fan-out. One message per image set, split into frame ranges when an image
set is too large to verify well inside one function timeout."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .ids import is_int, is_job_id, is_service_id

SCHEMA_VERSION = 1


class WorkItemError(ValueError):
    """A work message that cannot be processed (not JSON, wrong schema); names the field."""


def image_set_of(item_id: str) -> str:
    """The image set a work item ID (:attr:`WorkItem.item_id`) names.

    Item IDs are ``<imageSetId>`` or ``<imageSetId>-<start>-<end>``, and image set IDs have no hyphen.
    """
    return item_id.partition("-")[0]


@dataclass(frozen=True)
class WorkItem:
    """Verify one image set, or the frames ``[start, end)`` of it (metadata order)."""

    job_id: str
    datastore_id: str
    image_set_id: str
    version: int | None = None
    frames: tuple[int, int] | None = None

    @property
    def item_id(self) -> str:
        """Deterministic: a redelivered or re-sent message has the same ID, so completion is idempotent."""
        if self.frames is None:
            return self.image_set_id
        return f"{self.image_set_id}-{self.frames[0]}-{self.frames[1]}"

    def to_json(self) -> str:
        """The SQS message body."""
        return json.dumps(
            {
                "v": SCHEMA_VERSION,
                "jobId": self.job_id,
                "datastoreId": self.datastore_id,
                "imageSetId": self.image_set_id,
                "version": self.version,
                "frames": list(self.frames) if self.frames else None,
                "itemId": self.item_id,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, body: str) -> WorkItem:
        """Parse and validate a message body.

        Raises
        ------
        WorkItemError
            Naming what is wrong; such a message can never succeed, so it belongs in the DLQ.
        """
        try:
            doc: Any = json.loads(body)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, huge integers, deep nesting
            raise WorkItemError(f"work item is not JSON ({type(exc).__name__})") from exc
        schema = doc.get("v") if isinstance(doc, dict) else None
        if type(schema) is not int or schema != SCHEMA_VERSION:
            raise WorkItemError(f"work item is not a version-{SCHEMA_VERSION} object")
        job_id, datastore_id, image_set_id = doc.get("jobId"), doc.get("datastoreId"), doc.get("imageSetId")
        if not is_job_id(job_id):
            raise WorkItemError("work item jobId is missing or malformed")
        for name, value in (("datastoreId", datastore_id), ("imageSetId", image_set_id)):
            if not is_service_id(value):
                raise WorkItemError(f"work item {name} is missing or malformed")
        version = doc.get("version")
        if version is not None and (not is_int(version) or version < 1):
            raise WorkItemError("work item version must be a positive integer or null")
        frames = doc.get("frames")
        if frames is not None and not (
            isinstance(frames, list)
            and len(frames) == 2
            and all(is_int(f) for f in frames)
            and 0 <= frames[0] < frames[1]
        ):
            raise WorkItemError("work item frames must be [start, end) with 0 <= start < end, or null")
        return cls(job_id, str(datastore_id), str(image_set_id), version, (frames[0], frames[1]) if frames else None)

    def with_frames(self, start: int, end: int) -> WorkItem:
        """The same image set, restricted to frames ``[start, end)``."""
        return WorkItem(self.job_id, self.datastore_id, self.image_set_id, self.version, (start, end))


def frame_ranges(total: int, per_item: int) -> list[tuple[int, int]]:
    """Cut ``total`` frames into ranges of at most ``per_item``, covering ``[0, total)`` exactly once.

    Zero frames give no range: an image set without frames stays one whole-set item (``frames=None``).
    """
    if per_item < 1:
        raise ValueError("per_item must be at least 1")
    return [(start, min(start + per_item, total)) for start in range(0, total, per_item)]

"""``SearchImageSets``' criteria, as botocore's ``medical-imaging`` 2023-07-19 model defines them.

Pure functions, no state: checking a ``searchCriteria`` body, matching one image set against it, its sort key,
its summary (``ImageSetsMetadataSummary``) and the page tokens. The models hold the image sets and call these.

The model's shapes: ``searchCriteria = {filters?: [SearchFilter] (1..2), sort?: Sort}``; ``SearchFilter =
{values: [SearchByAttributeValue] (1..2), operator: EQUAL | BETWEEN}``; ``SearchByAttributeValue`` is a union
of ``DICOMPatientId``, ``DICOMAccessionNumber``, ``DICOMStudyId``, ``DICOMStudyInstanceUID``,
``DICOMSeriesInstanceUID``, ``createdAt``, ``updatedAt`` (timestamps: epoch seconds in rest-json),
``DICOMStudyDateAndTime`` (``{DICOMStudyDate, DICOMStudyTime?}``) and ``isPrimary``; ``Sort = {sortOrder:
ASC | DESC, sortField: updatedAt | createdAt | DICOMStudyDateAndTime}``. The operation's documentation says that
date ranges are ``(lowerBound, upperBound)`` and that the default order is ``updatedAt`` descending.

Not documented, so chosen here: two filters must both match (AND); ``BETWEEN`` is inclusive at both ends and
allowed for the three date attributes only; ``EQUAL`` takes one value.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ATTRIBUTES: tuple[str, ...] = (
    "DICOMPatientId",
    "DICOMAccessionNumber",
    "DICOMStudyId",
    "DICOMStudyInstanceUID",
    "DICOMSeriesInstanceUID",
    "createdAt",
    "updatedAt",
    "DICOMStudyDateAndTime",
    "isPrimary",
)
RANGE_ATTRIBUTES = frozenset({"createdAt", "updatedAt", "DICOMStudyDateAndTime"})
SORT_FIELDS: tuple[str, ...] = ("updatedAt", "createdAt", "DICOMStudyDateAndTime")
SORT_ORDERS: tuple[str, ...] = ("ASC", "DESC")
MAX_RESULTS = 50
"""The model's ``SearchImageSetsRequestMaxResultsInteger`` maximum (and the emulator's page size by default)."""


@dataclass(frozen=True)
class Criterion:
    """One checked ``SearchFilter``: the attribute, the operator and one (EQUAL) or two (BETWEEN) values."""

    attribute: str
    operator: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Criteria:
    """A checked ``searchCriteria``: filters (ANDed) and the sort."""

    filters: tuple[Criterion, ...]
    sort_field: str
    sort_order: str
    sort_given: bool

    def cache_key(self) -> str:
        """A canonical string for this search (the models cache one sorted listing per search)."""
        return json.dumps(
            [[(c.attribute, c.operator, c.values) for c in self.filters], self.sort_field, self.sort_order],
            sort_keys=True,
            default=str,
        )


@dataclass(frozen=True)
class Candidate:
    """What a search reads of one image set (its latest version): the values its filters and sort look at."""

    image_set_id: str
    created_at: float
    updated_at: float
    is_primary: bool
    doc: Mapping[str, Any]


def parse_criteria(body: Any) -> Criteria:
    """Check a ``searchCriteria`` request body (``None``: no filters, the default sort).

    Raises
    ------
    ValueError
        For anything the model does not allow (the API's ValidationException).
    """
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise ValueError("searchCriteria must be a JSON object")
    unknown = set(body) - {"filters", "sort"}
    if unknown:
        raise ValueError(f"unknown searchCriteria fields: {sorted(unknown)}")
    raw_filters = body.get("filters")
    filters: tuple[Criterion, ...] = ()
    if raw_filters is not None:
        if not isinstance(raw_filters, list) or not 1 <= len(raw_filters) <= 2:
            raise ValueError("searchCriteria.filters must hold 1 or 2 filters")
        filters = tuple(_criterion(item) for item in raw_filters)
    sort = body.get("sort")
    if sort is None:
        return Criteria(filters, "updatedAt", "DESC", sort_given=False)
    if not isinstance(sort, dict) or sort.get("sortField") not in SORT_FIELDS:
        raise ValueError(f"sort.sortField must be one of {', '.join(SORT_FIELDS)}")
    if sort.get("sortOrder") not in SORT_ORDERS:
        raise ValueError("sort.sortOrder must be ASC or DESC")
    return Criteria(filters, sort["sortField"], sort["sortOrder"], sort_given=True)


def _criterion(item: Any) -> Criterion:
    if not isinstance(item, dict) or item.get("operator") not in ("EQUAL", "BETWEEN"):
        raise ValueError("each filter needs operator EQUAL or BETWEEN")
    values = item.get("values")
    if not isinstance(values, list) or not 1 <= len(values) <= 2:
        raise ValueError("each filter needs 1 or 2 values")
    attributes = set()
    parsed = []
    for value in values:
        # SearchByAttributeValue is a union: exactly one member set.
        if not isinstance(value, dict) or len(value) != 1:
            raise ValueError("each filter value must set exactly one attribute")
        ((attribute, raw),) = value.items()
        if attribute not in ATTRIBUTES:
            raise ValueError(f"unknown search attribute {attribute!r}")
        attributes.add(attribute)
        parsed.append(_value(attribute, raw))
    if len(attributes) != 1:
        raise ValueError("the values of one filter must name the same attribute")
    (attribute,) = attributes
    operator = item["operator"]
    if operator == "EQUAL" and len(parsed) != 1:
        raise ValueError("EQUAL takes one value")
    if operator == "BETWEEN":
        if attribute not in RANGE_ATTRIBUTES:
            raise ValueError(f"BETWEEN is for {', '.join(sorted(RANGE_ATTRIBUTES))}")
        if len(parsed) != 2:
            raise ValueError("BETWEEN takes two values: (lowerBound, upperBound)")
    return Criterion(attribute, operator, tuple(parsed))


def _value(attribute: str, raw: Any) -> Any:
    if attribute in ("createdAt", "updatedAt"):
        if not isinstance(raw, int | float) or isinstance(raw, bool):
            raise ValueError(f"{attribute} must be a timestamp (epoch seconds)")
        return float(raw)
    if attribute == "isPrimary":
        if not isinstance(raw, bool):
            raise ValueError("isPrimary must be a boolean")
        return raw
    if attribute == "DICOMStudyDateAndTime":
        if not isinstance(raw, dict) or not isinstance(raw.get("DICOMStudyDate"), str):
            raise ValueError("DICOMStudyDateAndTime needs a DICOMStudyDate")
        return study_date_time(raw["DICOMStudyDate"], raw.get("DICOMStudyTime"))
    if not isinstance(raw, str):
        raise ValueError(f"{attribute} must be a string")
    return raw


def study_date_time(date: str, time: Any) -> str:
    """One comparable string for a DICOM ``StudyDate`` (YYYYMMDD) and optional ``StudyTime`` (HHMMSS...)."""
    return date + (time if isinstance(time, str) else "")


def _study(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    study = doc.get("Study")
    return study if isinstance(study, Mapping) else {}


def _dicom(level: Mapping[str, Any]) -> Mapping[str, Any]:
    dicom = level.get("DICOM")
    return dicom if isinstance(dicom, Mapping) else {}


_TIMES_AND_FLAGS = ("createdAt", "updatedAt", "isPrimary")
# Search attribute -> (metadata level, DICOM keyword) for the attributes that are one DICOM value.
_DICOM_VALUES = {
    "DICOMPatientId": ("Patient", "PatientID"),
    "DICOMAccessionNumber": ("Study", "AccessionNumber"),
    "DICOMStudyId": ("Study", "StudyID"),
    "DICOMStudyInstanceUID": ("Study", "StudyInstanceUID"),
}


def attribute_values(candidate: Candidate, attribute: str) -> list[Any]:
    """The values an image set has for a search attribute (several for ``DICOMSeriesInstanceUID``)."""
    doc = candidate.doc
    if attribute in _TIMES_AND_FLAGS:
        own = {"createdAt": candidate.created_at, "updatedAt": candidate.updated_at, "isPrimary": candidate.is_primary}
        return [own[attribute]]
    if attribute == "DICOMSeriesInstanceUID":
        series = _study(doc).get("Series")
        return list(series) if isinstance(series, Mapping) else []
    if attribute == "DICOMStudyDateAndTime":
        study = _dicom(_study(doc))
        date = study.get("StudyDate")
        return [study_date_time(date, study.get("StudyTime"))] if isinstance(date, str) else []
    level, keyword = _DICOM_VALUES[attribute]
    section = doc.get(level)
    return [_dicom(section).get(keyword)] if isinstance(section, Mapping) else []


def matches(criteria: Criteria, candidate: Candidate) -> bool:
    """Whether an image set satisfies every filter."""
    for criterion in criteria.filters:
        values = attribute_values(candidate, criterion.attribute)
        if criterion.operator == "EQUAL":
            if criterion.values[0] not in values:
                return False
        else:
            low, high = criterion.values
            if not any(v is not None and low <= v <= high for v in values):
                return False
    return True


def sort_key(criteria: Criteria, candidate: Candidate) -> tuple[Any, str]:
    """The image set's place in the search's order: ``(sort field value, image set ID)``, compared ascending.

    The ID breaks ties so that the order, and so the page cursors, are total.
    """
    if criteria.sort_field == "DICOMStudyDateAndTime":
        values = attribute_values(candidate, "DICOMStudyDateAndTime")
        return (values[0] if values else "", candidate.image_set_id)
    value = candidate.created_at if criteria.sort_field == "createdAt" else candidate.updated_at
    return (value, candidate.image_set_id)


_DICOM_TAGS = (
    ("Patient", "DICOMPatientId", "PatientID"),
    ("Patient", "DICOMPatientName", "PatientName"),
    ("Patient", "DICOMPatientBirthDate", "PatientBirthDate"),
    ("Patient", "DICOMPatientSex", "PatientSex"),
    ("Study", "DICOMStudyInstanceUID", "StudyInstanceUID"),
    ("Study", "DICOMStudyId", "StudyID"),
    ("Study", "DICOMStudyDescription", "StudyDescription"),
    ("Study", "DICOMAccessionNumber", "AccessionNumber"),
    ("Study", "DICOMStudyDate", "StudyDate"),
    ("Study", "DICOMStudyTime", "StudyTime"),
)


def summary(candidate: Candidate, version: str) -> dict[str, Any]:
    """The image set's ``ImageSetsMetadataSummary`` (its ``DICOMTags`` hold patient data, as the service's do)."""
    doc = candidate.doc
    tags: dict[str, Any] = {}
    for level, tag, keyword in _DICOM_TAGS:
        section = doc.get(level)
        value = _dicom(section).get(keyword) if isinstance(section, Mapping) else None
        if isinstance(value, str):
            tags[tag] = value
    series = _study(doc).get("Series")
    if isinstance(series, Mapping):
        tags["DICOMNumberOfStudyRelatedSeries"] = len(series)
        tags["DICOMNumberOfStudyRelatedInstances"] = sum(
            len(s.get("Instances") or {}) for s in series.values() if isinstance(s, Mapping)
        )
    return {
        "imageSetId": candidate.image_set_id,
        "version": int(version),
        "createdAt": candidate.created_at,
        "updatedAt": candidate.updated_at,
        "storageTier": "FREQUENT_ACCESS",
        "DICOMTags": tags,
        "isPrimary": candidate.is_primary,
    }


def encode_cursor(key: tuple[Any, str]) -> str:
    """A ``nextToken`` naming the last image set of a page by its sort key (opaque to callers)."""
    return base64.urlsafe_b64encode(json.dumps({"after": list(key)}).encode()).decode()


def decode_cursor(token: str) -> tuple[Any, str]:
    """Read a token from :func:`encode_cursor`.

    Raises
    ------
    ValueError
        For a token this emulator did not issue.
    """
    try:
        value, image_set_id = json.loads(base64.urlsafe_b64decode(token.encode()))["after"]
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise ValueError("nextToken is invalid") from exc
    if not isinstance(image_set_id, str) or not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ValueError("nextToken is invalid")
    return (value, image_set_id)

"""The image set operations through boto3 over HTTP: SearchImageSets, GetImageSet, ListImageSetVersions,
UpdateImageSetMetadata, CopyImageSet and DeleteImageSet, and the image set events they send."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import boto3
import numpy as np
import pytest
from botocore.config import Config

from ahi_emulator import Emulator, EmulatorServer
from ahi_emulator.models import ConflictError, _attribute_blob
from ahi_emulator.quotas import NO_QUOTAS
from ahi_emulator.search import parse_criteria
from ahi_emulator.specs import InstanceSpec, PatientSpec


@pytest.fixture
def events() -> list[dict[str, Any]]:
    return []


@pytest.fixture
def emulator(events: list[dict[str, Any]]) -> Emulator:
    # The service's defaults allow one copy/update/delete per 4 s; these tests are about behaviour, not quotas.
    return Emulator(quotas=NO_QUOTAS, on_event=events.append)


def _add(emulator: Emulator, datastore_id: str, study_uid: str | None = None) -> str:
    frame = np.arange(16, dtype=np.uint16).reshape(4, 4)
    info = emulator.add_image_set(datastore_id, [InstanceSpec(frames=[frame])], study_instance_uid=study_uid)
    return info.image_set_id


def _blob(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def _all_ids(client: Any, datastore_id: str, **kwargs: Any) -> list[str]:
    pages = client.get_paginator("search_image_sets").paginate(datastoreId=datastore_id, **kwargs)
    return [item["imageSetId"] for page in pages for item in page["imageSetsMetadataSummaries"]]


def test_search_pages_through_every_image_set_once(client: Any, emulator: Emulator, datastore_id: str) -> None:
    """GIVEN 7 image sets WHEN searched 3 per page THEN the pages carry nextToken until the last and list
    every image set exactly once, newest update first (the documented default order)."""
    ids = [_add(emulator, datastore_id) for _ in range(7)]

    first = client.search_image_sets(datastoreId=datastore_id, maxResults=3)
    listed = _all_ids(client, datastore_id, PaginationConfig={"PageSize": 3})

    assert len(first["imageSetsMetadataSummaries"]) == 3
    assert "nextToken" in first
    assert sorted(listed) == sorted(ids)
    assert listed == list(reversed(ids))  # added in order, so updatedAt descending is the reverse
    summary = first["imageSetsMetadataSummaries"][0]
    assert summary["version"] == 1
    assert isinstance(summary["createdAt"], datetime)


def test_search_created_at_between_and_ascending_sort(client: Any, emulator: Emulator, datastore_id: str) -> None:
    """GIVEN image sets created at distinct times WHEN filtered createdAt BETWEEN two of them, sorted ASC
    THEN only those in the (inclusive) range come back, oldest first, and the response echoes the sort."""
    ids = [_add(emulator, datastore_id) for _ in range(5)]
    # botocore sends timestamps in whole seconds: space the image sets a minute apart.
    for n, image_set_id in enumerate(ids):
        emulator.set_image_set_times(datastore_id, image_set_id, created_at=1_700_000_000 + 60 * n)
    low, high = datetime.fromtimestamp(1_700_000_060, UTC), datetime.fromtimestamp(1_700_000_180, UTC)
    criteria = {
        "filters": [{"values": [{"createdAt": low}, {"createdAt": high}], "operator": "BETWEEN"}],
        "sort": {"sortField": "createdAt", "sortOrder": "ASC"},
    }

    page = client.search_image_sets(datastoreId=datastore_id, searchCriteria=criteria)
    listed = _all_ids(client, datastore_id, searchCriteria=criteria, PaginationConfig={"PageSize": 1})

    assert [s["imageSetId"] for s in page["imageSetsMetadataSummaries"]] == ids[1:4]
    assert listed == ids[1:4]
    assert page["sort"] == {"sortField": "createdAt", "sortOrder": "ASC"}


def test_search_by_series_uid_and_updated_at(client: Any, emulator: Emulator, datastore_id: str) -> None:
    """GIVEN three image sets WHEN filtered on one's series UID, and on updatedAt after an update THEN each
    filter finds exactly the image set it names."""
    ids = [_add(emulator, datastore_id) for _ in range(3)]
    for image_set_id in ids:
        emulator.set_image_set_times(datastore_id, image_set_id, created_at=1_700_000_000, updated_at=1_700_000_000)
    series_uid = next(iter(emulator.metadata(datastore_id, ids[1])["Study"]["Series"]))
    cut = datetime.fromtimestamp(1_700_000_001, UTC)
    client.update_image_set_metadata(
        datastoreId=datastore_id,
        imageSetId=ids[2],
        latestVersionId="1",
        updateImageSetMetadataUpdates={"DICOMUpdates": {"updatableAttributes": _blob({"Study": {"DICOM": {}}})}},
    )
    by_series = {"filters": [{"values": [{"DICOMSeriesInstanceUID": series_uid}], "operator": "EQUAL"}]}
    by_update = {
        "filters": [
            {"values": [{"updatedAt": cut}, {"updatedAt": datetime(2100, 1, 1, tzinfo=UTC)}], "operator": "BETWEEN"}
        ]
    }

    assert _all_ids(client, datastore_id, searchCriteria=by_series) == [ids[1]]
    assert _all_ids(client, datastore_id, searchCriteria=by_update) == [ids[2]]


@pytest.mark.parametrize(
    "criteria",
    [
        pytest.param({"filters": [{"values": [{"DICOMStudyId": "1"}], "operator": "BETWEEN"}]}, id="between-on-id"),
        pytest.param({"filters": [{"values": [{"createdAt": 1}], "operator": "BETWEEN"}]}, id="one-bound"),
        pytest.param(
            {"filters": [{"values": [{"createdAt": 1}, {"updatedAt": 2}], "operator": "BETWEEN"}]}, id="mixed"
        ),
        pytest.param({"sort": {"sortField": "imageSetId", "sortOrder": "ASC"}}, id="unknown-sort-field"),
    ],
)
def test_search_refuses_criteria_the_model_does_not_allow(criteria: dict[str, Any]) -> None:
    """GIVEN criteria outside the model WHEN parsed THEN they are refused (a ValidationException over HTTP)."""
    with pytest.raises(ValueError, match=r"\w"):
        parse_criteria(criteria)


def test_search_validation_and_unknown_datastore_over_http(client: Any, datastore_id: str) -> None:
    """GIVEN a bad token, too large a page and an unknown data store THEN the model's errors come back."""
    with pytest.raises(client.exceptions.ValidationException):
        client.search_image_sets(datastoreId=datastore_id, nextToken="not-a-token")
    with pytest.raises(client.exceptions.ValidationException):
        client.search_image_sets(datastoreId=datastore_id, maxResults=51)
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.search_image_sets(datastoreId="0" * 32)


def test_update_makes_a_new_version_and_checks_the_latest(
    client: Any, emulator: Emulator, datastore_id: str, events: list[dict[str, Any]]
) -> None:
    """GIVEN an image set WHEN its metadata is updated THEN version 2 holds the change, version 1 is intact,
    ListImageSetVersions lists both, a stale latestVersionId is a ConflictException and the Updating/Updated
    events are sent."""
    image_set_id = _add(emulator, datastore_id)
    events.clear()
    patch = {"SchemaVersion": "1.1", "Study": {"DICOM": {"StudyDescription": "renamed"}}}

    answer = client.update_image_set_metadata(
        datastoreId=datastore_id,
        imageSetId=image_set_id,
        latestVersionId="1",
        updateImageSetMetadataUpdates={"DICOMUpdates": {"updatableAttributes": _blob(patch)}},
    )

    assert answer["latestVersionId"] == "2"
    assert emulator.metadata(datastore_id, image_set_id, "2")["Study"]["DICOM"]["StudyDescription"] == "renamed"
    assert emulator.metadata(datastore_id, image_set_id, "1")["Study"]["DICOM"]["StudyDescription"] != "renamed"
    got = client.get_image_set(datastoreId=datastore_id, imageSetId=image_set_id)
    assert (got["versionId"], got["imageSetState"], got["imageSetWorkflowStatus"]) == ("2", "ACTIVE", "UPDATED")
    versions = client.list_image_set_versions(datastoreId=datastore_id, imageSetId=image_set_id)
    assert [v["versionId"] for v in versions["imageSetPropertiesList"]] == ["1", "2"]
    assert [e["detail-type"] for e in events] == ["Image Set Updating", "Image Set Updated"]
    assert events[-1]["detail"] == {
        "imagingVersion": "1.0",
        "datastoreId": datastore_id,
        "imageSetId": image_set_id,
        "imageSetState": "ACTIVE",
        "imageSetWorkflowStatus": "UPDATED",
    }
    with pytest.raises(client.exceptions.ConflictException):
        client.update_image_set_metadata(
            datastoreId=datastore_id,
            imageSetId=image_set_id,
            latestVersionId="1",
            updateImageSetMetadataUpdates={"revertToVersionId": "1"},
        )


def test_update_removes_and_reverts(client: Any, emulator: Emulator, datastore_id: str) -> None:
    """GIVEN an image set WHEN an attribute is removed and then version 1 restored THEN version 2 lacks it
    and version 3 has it again."""
    image_set_id = _add(emulator, datastore_id)
    removable = {"Study": {"DICOM": {"StudyID": ""}}}

    client.update_image_set_metadata(
        datastoreId=datastore_id,
        imageSetId=image_set_id,
        latestVersionId="1",
        updateImageSetMetadataUpdates={"DICOMUpdates": {"removableAttributes": _blob(removable)}},
    )
    reverted = client.update_image_set_metadata(
        datastoreId=datastore_id,
        imageSetId=image_set_id,
        latestVersionId="2",
        updateImageSetMetadataUpdates={"revertToVersionId": "1"},
    )

    assert "StudyID" in emulator.metadata(datastore_id, image_set_id, "1")["Study"]["DICOM"]
    assert "StudyID" not in emulator.metadata(datastore_id, image_set_id, "2")["Study"]["DICOM"]
    assert reverted["latestVersionId"] == "3"
    assert emulator.metadata(datastore_id, image_set_id, "3") == emulator.metadata(datastore_id, image_set_id, "1")


def test_update_refuses_to_touch_image_frames(client: Any, emulator: Emulator, datastore_id: str) -> None:
    """GIVEN an update that names ImageFrames THEN it is a ValidationException and no version is made."""
    image_set_id = _add(emulator, datastore_id)
    doc = emulator.metadata(datastore_id, image_set_id)
    series_uid, series = next(iter(doc["Study"]["Series"].items()))
    sop_uid = next(iter(series["Instances"]))
    patch = {"Study": {"Series": {series_uid: {"Instances": {sop_uid: {"ImageFrames": []}}}}}}

    with pytest.raises(client.exceptions.ValidationException):
        client.update_image_set_metadata(
            datastoreId=datastore_id,
            imageSetId=image_set_id,
            latestVersionId="1",
            updateImageSetMetadataUpdates={"DICOMUpdates": {"updatableAttributes": _blob(patch)}},
        )
    assert client.get_image_set(datastoreId=datastore_id, imageSetId=image_set_id)["versionId"] == "1"


def test_copy_to_a_new_image_set_has_its_own_frames(
    client: Any, emulator: Emulator, datastore_id: str, events: list[dict[str, Any]]
) -> None:
    """GIVEN an image set WHEN copied without a destination THEN a new image set (version 1) has the same
    metadata but its own frame bytes: corrupting the copy's frame leaves the source's as it was."""
    source = _add(emulator, datastore_id)
    events.clear()

    answer = client.copy_image_set(
        datastoreId=datastore_id,
        sourceImageSetId=source,
        copyImageSetInformation={"sourceImageSet": {"latestVersionId": "1"}},
    )
    copy_id = answer["destinationImageSetProperties"]["imageSetId"]
    frame_id = emulator.image_sets()[0].frame_ids[0]
    before = emulator.frame(datastore_id, source, frame_id)[0]
    emulator.corrupt_frame(datastore_id, copy_id, frame_id)

    assert copy_id != source
    assert answer["destinationImageSetProperties"]["latestVersionId"] == "1"
    assert answer["sourceImageSetProperties"]["latestVersionId"] == "1"
    copied = emulator.metadata(datastore_id, copy_id)
    assert copied["ImageSetID"] == copy_id
    assert copied["Study"] == emulator.metadata(datastore_id, source)["Study"]
    assert emulator.frame(datastore_id, source, frame_id)[0] == before
    assert emulator.frame(datastore_id, copy_id, frame_id)[0] != before
    assert [(e["detail-type"], e["detail"]["imageSetId"]) for e in events] == [
        ("Image Set Copying", copy_id),
        ("Image Set Copied", copy_id),
    ]
    assert sorted(_all_ids(client, datastore_id)) == sorted([source, copy_id])


def test_copy_into_an_existing_image_set_makes_a_new_version(
    client: Any, emulator: Emulator, datastore_id: str
) -> None:
    """GIVEN two image sets of one study WHEN one is copied into the other THEN the destination's version 2
    holds both series; a stale destination version is a conflict, and another study needs force."""
    study = "1.2.826.0.1.3680043.8.498.1"
    source, destination = _add(emulator, datastore_id, study), _add(emulator, datastore_id, study)
    other = _add(emulator, datastore_id, "1.2.826.0.1.3680043.8.498.2")
    info = {
        "sourceImageSet": {"latestVersionId": "1"},
        "destinationImageSet": {"imageSetId": destination, "latestVersionId": "1"},
    }

    answer = client.copy_image_set(datastoreId=datastore_id, sourceImageSetId=source, copyImageSetInformation=info)

    assert answer["destinationImageSetProperties"]["latestVersionId"] == "2"
    series = emulator.metadata(datastore_id, destination)["Study"]["Series"]
    assert set(emulator.metadata(datastore_id, source)["Study"]["Series"]) <= set(series)
    assert len(series) == 2
    with pytest.raises(client.exceptions.ConflictException):
        client.copy_image_set(datastoreId=datastore_id, sourceImageSetId=source, copyImageSetInformation=info)
    to_other = {
        "sourceImageSet": {"latestVersionId": "1"},
        "destinationImageSet": {"imageSetId": other, "latestVersionId": "1"},
    }
    with pytest.raises(ConflictError):
        emulator.copy_image_set(datastore_id, source, "1", destination=(other, "1"))
    forced = client.copy_image_set(
        datastoreId=datastore_id, sourceImageSetId=source, copyImageSetInformation=to_other, force=True
    )
    assert forced["destinationImageSetProperties"]["latestVersionId"] == "2"


def test_delete_then_every_read_is_not_found(
    client: Any, emulator: Emulator, datastore_id: str, events: list[dict[str, Any]]
) -> None:
    """GIVEN an image set WHEN deleted THEN GetImageSet, GetImageSetMetadata and ListImageSetVersions answer
    ResourceNotFoundException, a search no longer lists it, and Deleting/Deleted events are sent."""
    keep, gone = _add(emulator, datastore_id), _add(emulator, datastore_id)
    events.clear()

    answer = client.delete_image_set(datastoreId=datastore_id, imageSetId=gone)

    assert (answer["imageSetState"], answer["imageSetWorkflowStatus"]) == ("LOCKED", "DELETING")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_image_set(datastoreId=datastore_id, imageSetId=gone)
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_image_set_metadata(datastoreId=datastore_id, imageSetId=gone)
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.list_image_set_versions(datastoreId=datastore_id, imageSetId=gone)
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.delete_image_set(datastoreId=datastore_id, imageSetId=gone)
    assert _all_ids(client, datastore_id) == [keep]
    assert [e["detail-type"] for e in events] == ["Image Set Deleting", "Image Set Deleted"]
    assert events[-1]["detail"]["imageSetState"] == "DELETED"


def test_search_page_after_a_deletion_neither_repeats_nor_skips(
    client: Any, emulator: Emulator, datastore_id: str
) -> None:
    """GIVEN a walk 2 per page WHEN an image set of a later page is deleted mid-walk THEN the walk lists
    every other image set exactly once (the token is a cursor, not an offset)."""
    ids = [_add(emulator, datastore_id) for _ in range(6)]
    first = client.search_image_sets(datastoreId=datastore_id, maxResults=2)
    client.delete_image_set(datastoreId=datastore_id, imageSetId=ids[0])  # the oldest: on the last page

    seen = [s["imageSetId"] for s in first["imageSetsMetadataSummaries"]]
    token = first.get("nextToken")
    while token:
        page = client.search_image_sets(datastoreId=datastore_id, maxResults=2, nextToken=token)
        seen += [s["imageSetId"] for s in page["imageSetsMetadataSummaries"]]
        token = page.get("nextToken")

    assert seen == list(reversed(ids[1:]))


def test_image_set_created_event_on_publish(
    emulator: Emulator, datastore_id: str, events: list[dict[str, Any]]
) -> None:
    """GIVEN an event sink WHEN an image set is added THEN one 'Image Set Created' event names it, in the
    EventBridge envelope."""
    image_set_id = _add(emulator, datastore_id)

    (event,) = events
    assert event["detail-type"] == "Image Set Created"
    assert event["source"] == "aws.medical-imaging"
    assert event["detail"]["imageSetId"] == image_set_id
    assert event["detail"]["imageSetWorkflowStatus"] == "CREATED"
    assert event["resources"] == [
        f"arn:aws:medical-imaging:{event['region']}:123456789012:datastore/{datastore_id}/imageset/{image_set_id}"
    ]


def test_default_quota_throttles_a_second_delete() -> None:
    """GIVEN the documented DeleteImageSet quota (0.25/s, burst 1) WHEN two deletes arrive at once THEN the
    second is throttled."""
    emulator = Emulator()
    datastore_id = emulator.create_datastore()
    first, second = _add(emulator, datastore_id), _add(emulator, datastore_id)

    with EmulatorServer(emulator) as running:
        client = boto3.client(
            "medical-imaging",
            endpoint_url=running.endpoint_url,
            config=Config(retries={"total_max_attempts": 1}, inject_host_prefix=False),
        )
        client.delete_image_set(datastoreId=datastore_id, imageSetId=first)
        with pytest.raises(client.exceptions.ThrottlingException):
            client.delete_image_set(datastoreId=datastore_id, imageSetId=second)
        client.close()


def test_base64_blob_round_trip_is_what_botocore_sends() -> None:
    """GIVEN the model's blob type THEN botocore base64-encodes it in the JSON body (what the app decodes)."""
    assert _attribute_blob(base64.b64encode(b'{"Study": {}}').decode()) == {"Study": {}}
    with pytest.raises(ValueError, match="base64"):
        _attribute_blob("!!not base64!!")


def test_versions_and_their_states_survive_save_and_load(
    client: Any, emulator: Emulator, datastore_id: str, tmp_path: Any
) -> None:
    """GIVEN an updated image set WHEN the state is saved and loaded THEN both versions, the UPDATED status
    of the second and the image set's times are as they were."""
    image_set_id = _add(emulator, datastore_id)
    client.update_image_set_metadata(
        datastoreId=datastore_id,
        imageSetId=image_set_id,
        latestVersionId="1",
        updateImageSetMetadataUpdates={"revertToVersionId": "1"},
    )
    before = emulator.list_image_set_versions(datastore_id, image_set_id)

    loaded = Emulator.load(emulator.save(tmp_path / "state"))

    assert loaded.list_image_set_versions(datastore_id, image_set_id) == before
    assert [v["ImageSetWorkflowStatus"] for v in before["imageSetPropertiesList"]] == ["CREATED", "UPDATED"]


def test_search_by_patient_id_and_study_uid(client: Any, emulator: Emulator, datastore_id: str) -> None:
    """GIVEN two image sets of different patients and studies WHEN filtered EQUAL on one's patient ID, and
    on the other's study UID THEN each filter finds its image set only."""
    frame = np.arange(16, dtype=np.uint16).reshape(4, 4)
    first = emulator.add_image_set(
        datastore_id, [InstanceSpec(frames=[frame])], patient=PatientSpec(id="PAT-A"), study_instance_uid="1.2.3.1"
    ).image_set_id
    second = emulator.add_image_set(
        datastore_id, [InstanceSpec(frames=[frame])], patient=PatientSpec(id="PAT-B"), study_instance_uid="1.2.3.2"
    ).image_set_id

    by_patient = {"filters": [{"values": [{"DICOMPatientId": "PAT-A"}], "operator": "EQUAL"}]}
    by_study = {"filters": [{"values": [{"DICOMStudyInstanceUID": "1.2.3.2"}], "operator": "EQUAL"}]}

    assert _all_ids(client, datastore_id, searchCriteria=by_patient) == [first]
    assert _all_ids(client, datastore_id, searchCriteria=by_study) == [second]

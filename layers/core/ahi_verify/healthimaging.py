"""The adapter to AWS HealthImaging: frames and metadata (``ports.FrameSource``) and import jobs
(``ports.ImportJobs``), through one boto3 client.

One client per process, shared by every fetch thread. Its retries are botocore's standard mode; the rate is
the request-rate budget's (:func:`attach_budget`): every attempt of a budgeted operation, retries included,
waits for its token. botocore's adaptive mode is not used: its limiter is per process, reacts only after 429s,
and on sustained throttling slowed one worker to 1-2 requests/s (600 frames took 261 s with every 7th request
refused); the budget's deployment-wide ceiling replaces it. The connection pool is sized to the fetch threads
so they never wait for a socket.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, IncompleteReadError, ResponseStreamingError

from .budget import OPERATIONS, RequestBudget, throttle_retry_delay
from .outcomes import Reason
from .ports import (
    DatastoreError,
    FetchedFrame,
    FrameFetchError,
    ImageSetError,
    ImageSetListError,
    ImportJob,
    ImportJobError,
    ListedImageSet,
)

#: Attempts per request, the first included. botocore's default (3) gives up on a frame after two 429s;
#: ten rides out several consecutive throttles with exponential back-off (capped at 20 s per retry).
DEFAULT_MAX_ATTEMPTS = 10

_REASON_BY_CODE = {
    "ResourceNotFoundException": Reason.FRAME_NOT_FOUND,
    "AccessDeniedException": Reason.ACCESS_DENIED,
}


def make_client(
    max_pool_connections: int,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    budget: RequestBudget | None = None,
    *,
    session: Any = None,
    endpoint_url: str | None = None,
) -> Any:
    """Create the ``medical-imaging`` client with the retry and pool settings verification needs.

    Endpoint, region and credentials come from ``session`` (default: boto3's default session, the ordinary
    configuration: profile, environment, ``AWS_ENDPOINT_URL_MEDICAL_IMAGING`` for the local emulator);
    ``endpoint_url`` overrides the endpoint, and requests then go to exactly that host: botocore would
    otherwise prefix GetImageFrame's and GetImageSetMetadata's host with ``runtime-``, which no endpoint but
    AWS's answers. With ``budget``, every GetImageFrame and GetImageSetMetadata attempt keeps to it
    (:func:`attach_budget`).
    """
    config = Config(
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        max_pool_connections=max_pool_connections,
        connect_timeout=10,
        read_timeout=60,
    )
    if endpoint_url is not None:
        # Only then: an explicit True would override AWS_DISABLE_HOST_PREFIX_INJECTION for the emulator's env.
        config = config.merge(Config(inject_host_prefix=False))
    client = (session or boto3).client("medical-imaging", config=config, endpoint_url=endpoint_url)
    if budget is not None:
        attach_budget(client, budget, max_attempts)
    return client


def attach_budget(client: Any, budget: RequestBudget, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> None:
    """Make every attempt of a budgeted operation wait for its token, count its 429s, and retry a 429 after
    the budget's short back-off (``budget.throttle_retry_delay``) instead of botocore's.

    ``before-send`` is emitted for every attempt, retries included, just before the request goes on the wire
    (after signing and after the retry back-off), and ``response-received`` after every attempt: so retries are
    paced and counted like first attempts, as the service counts them against the quota. ``needs-retry`` is
    botocore's retry decision; a handler registered first that returns a delay decides it, and returning None
    leaves every other error (5xx, transport) to botocore's standard mode.
    """
    events = client.meta.events

    def throttled_retry(attempts: int, response: Any = None, **_: Any) -> float | None:
        if response is None or getattr(response[0], "status_code", None) != 429:
            return None
        return throttle_retry_delay(attempts, random.random(), max_attempts)

    for operation in OPERATIONS:
        events.register_first(f"needs-retry.medical-imaging.{operation}", throttled_retry)

        def before_send(operation: str = operation, **_: Any) -> None:
            budget.before_request(operation)  # returns None: botocore then sends the request itself

        def received(operation: str = operation, response_dict: Any = None, **_: Any) -> None:
            budget.after_response(operation, response_dict.get("status_code") if response_dict else None)

        events.register(f"before-send.medical-imaging.{operation}", before_send)
        events.register(f"response-received.medical-imaging.{operation}", received)


#: GetDatastore errors that will not go away within a run: remembered like an answer, so a missing permission
#: costs one denied request per process rather than one per image set.
_LASTING_DATASTORE_ERRORS = frozenset({"AccessDeniedException", "ResourceNotFoundException", "ValidationException"})


class HealthImagingSource:
    """Fetches metadata and frames with a ``medical-imaging`` client and maps failures to reasons.

    The data stores' lossless storage formats are remembered for the life of the object (one CLI run, one warm
    function container): a data store's format is fixed when it is created.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._formats: dict[str, str | DatastoreError] = {}
        self._formats_lock = threading.Lock()

    def lossless_storage_format(self, datastore_id: str) -> str:
        """Return the data store's ``losslessStorageFormat``, with one GetDatastore per data store and process.

        Raises
        ------
        DatastoreError
            GetDatastore failed after the client's retries, or its answer has no format. A lasting failure
            (access denied, not found) is remembered; a passing one (throttling, 5xx) is asked again next time.
        """
        # Held across the request: concurrent image sets wait for the one GetDatastore instead of each sending it.
        with self._formats_lock:
            known = self._formats.get(datastore_id)
            if known is None:
                known = self._read_format(datastore_id)
                if isinstance(known, str) or known.lasting:
                    self._formats[datastore_id] = known
        if isinstance(known, DatastoreError):
            raise DatastoreError(str(known), lasting=known.lasting)
        return known

    def _read_format(self, datastore_id: str) -> str | DatastoreError:
        try:
            properties = self._client.get_datastore(datastoreId=datastore_id)["datastoreProperties"]
        except ClientError as exc:
            lasting = exc.response.get("Error", {}).get("Code") in _LASTING_DATASTORE_ERRORS
            message = f"GetDatastore for data store {datastore_id} failed: {_describe(exc)}"
            return DatastoreError(message, lasting=lasting)
        except BotoCoreError as exc:
            return DatastoreError(f"GetDatastore for data store {datastore_id} failed: {exc}")
        found = properties.get("losslessStorageFormat")
        if not isinstance(found, str) or not found:
            # Stores created before the parameter existed may not list it; the caller assumes the default.
            message = f"GetDatastore for data store {datastore_id} lists no losslessStorageFormat"
            return DatastoreError(message, lasting=True)
        return found

    def get_image_set_metadata(self, datastore_id: str, image_set_id: str, version_id: str | None) -> bytes:
        """Return the raw metadata blob (gzip as served; the core decompresses it).

        Raises
        ------
        ImageSetError
            Any service or transport error, after the client's retries.
        """
        kwargs = {"datastoreId": datastore_id, "imageSetId": image_set_id}
        if version_id is not None:
            kwargs["versionId"] = version_id
        try:
            response = self._client.get_image_set_metadata(**kwargs)
            return bytes(response["imageSetMetadataBlob"].read())
        except ClientError as exc:
            raise ImageSetError(f"GetImageSetMetadata for image set {image_set_id} failed: {_describe(exc)}") from exc
        except BotoCoreError as exc:
            raise ImageSetError(f"GetImageSetMetadata for image set {image_set_id} failed: {exc}") from exc

    def get_image_frame(self, datastore_id: str, image_set_id: str, image_frame_id: str) -> FetchedFrame:
        """Return one frame's bytes and content type.

        Raises
        ------
        FrameFetchError
            With a reason: not found, access denied, incomplete body, or fetch failed after retries.
        """
        try:
            response = self._client.get_image_frame(
                datastoreId=datastore_id,
                imageSetId=image_set_id,
                imageFrameInformation={"imageFrameId": image_frame_id},
            )
            # StreamingBody.read() raises IncompleteReadError when fewer bytes arrive than Content-Length
            # promised; the explicit comparison also covers a body that was cut without that check.
            blob = response["imageFrameBlob"].read()
            declared = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("content-length")
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            raise FrameFetchError(_REASON_BY_CODE.get(code, Reason.FETCH_FAILED), _describe(exc)) from exc
        except BotoCoreError as exc:
            cut_short = isinstance(exc, (IncompleteReadError, ResponseStreamingError))
            reason = Reason.INCOMPLETE_BODY if cut_short else Reason.FETCH_FAILED
            raise FrameFetchError(reason, f"{type(exc).__name__}: {exc}") from exc
        if declared is not None and declared.isdigit() and int(declared) != len(blob):
            raise FrameFetchError(Reason.INCOMPLETE_BODY, f"received {len(blob)} of {declared} bytes")
        return FetchedFrame(blob=blob, content_type=response.get("contentType"))


def _describe(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    attempts = exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0)
    return f"{error.get('Code', 'Unknown')}: {error.get('Message', '')} (after {attempts} retries)".strip()


class HealthImagingJobs:
    """GetDICOMImportJob and ListDICOMImportJobs with a ``medical-imaging`` client."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def describe(self, datastore_id: str, job_id: str) -> ImportJob:
        """Return the job's status and output folder.

        The ``outputS3Uri`` returned includes the ``<datastoreId>-DicomImport-<jobId>/`` folder; it is
        appended when missing, as event payloads have been seen both ways.

        Raises
        ------
        ImportJobError
            The job cannot be described (not found, access denied, ...).
        """
        try:
            props = self._client.get_dicom_import_job(datastoreId=datastore_id, jobId=job_id)["jobProperties"]
        except ClientError as exc:
            not_found = exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException"
            message = f"GetDICOMImportJob for job {job_id} failed: {_describe(exc)}"
            raise ImportJobError(message, not_found=not_found) from exc
        except BotoCoreError as exc:
            raise ImportJobError(f"GetDICOMImportJob for job {job_id} failed: {exc}") from exc
        uri = str(props["outputS3Uri"])
        folder = f"{datastore_id}-DicomImport-{job_id}/"
        if not uri.endswith(folder):
            uri = (uri if uri.endswith("/") else uri + "/") + folder
        return ImportJob(status=str(props["jobStatus"]), message=props.get("message"), output_folder_uri=uri)

    def job_ids(self, datastore_id: str, status: str) -> Iterator[str]:
        """IDs of the data store's jobs in ``status`` (paginated).

        Raises
        ------
        ImportJobError
            The jobs cannot be listed.
        """
        pages = self._client.get_paginator("list_dicom_import_jobs").paginate(
            datastoreId=datastore_id, jobStatus=status
        )
        try:
            for page in pages:
                for summary in page.get("jobSummaries", []):
                    yield str(summary["jobId"])
        except (ClientError, BotoCoreError) as exc:
            raise ImportJobError(f"ListDICOMImportJobs for data store {datastore_id} failed: {exc}") from exc


#: SearchImageSets' largest page (the model's ``maxResults`` maximum): the fewest requests for a walk.
SEARCH_PAGE_SIZE = 50
#: How far past the walk's start a "created/updated after" range reaches: SearchImageSets' BETWEEN needs an
#: upper bound, and image sets created or updated while the walk runs are in it as long as the walk lasts.
_RANGE_REACH_S = 7 * 24 * 3600.0


class HealthImagingListing:
    """SearchImageSets (paginated) and GetImageSet with a ``medical-imaging`` client (``ports.ImageSetListing``).

    The walk is sorted by ``createdAt`` ascending: creation times never change, so an image set updated while
    the walk runs keeps its place (sorted by ``updatedAt``, the service's default, it would move to the end
    and could be listed twice or not at all), and one created during the walk comes last.

    Only the image set ID, version and ``isPrimary`` of each summary are kept; its ``DICOMTags`` (patient
    data) are dropped as soon as the page is read and never logged.
    """

    def __init__(self, client: Any, clock: Any = time.time) -> None:
        self._client = client
        self._clock = clock

    def image_sets(
        self, datastore_id: str, *, created_after: float | None = None, updated_after: float | None = None
    ) -> Iterator[ListedImageSet]:
        """Every image set of the data store, one page of at most 50 in memory at a time.

        Raises
        ------
        ImageSetListError
            A page cannot be read (after the client's retries); ``not_found`` for an unknown data store.
        """
        until = datetime.fromtimestamp(self._clock() + _RANGE_REACH_S, UTC)
        filters = [
            {
                "values": [{name: datetime.fromtimestamp(after, UTC)}, {name: until}],
                "operator": "BETWEEN",
            }
            for name, after in (("createdAt", created_after), ("updatedAt", updated_after))
            if after is not None
        ]
        criteria: dict[str, Any] = {"sort": {"sortField": "createdAt", "sortOrder": "ASC"}}
        if filters:
            criteria["filters"] = filters
        pages = self._client.get_paginator("search_image_sets").paginate(
            datastoreId=datastore_id,
            searchCriteria=criteria,
            PaginationConfig={"PageSize": SEARCH_PAGE_SIZE},
        )
        try:
            for page in pages:
                for summary in page.get("imageSetsMetadataSummaries", []):
                    version = summary.get("version")
                    primary = summary.get("isPrimary")
                    created = summary.get("createdAt")
                    yield ListedImageSet(
                        image_set_id=str(summary["imageSetId"]),
                        version=version if isinstance(version, int) and not isinstance(version, bool) else None,
                        is_primary=primary if isinstance(primary, bool) else None,
                        created_at=created.timestamp() if isinstance(created, datetime) else None,
                    )
        except ClientError as exc:
            not_found = exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException"
            message = f"SearchImageSets for data store {datastore_id} failed: {_describe(exc)}"
            raise ImageSetListError(message, not_found=not_found) from exc
        except BotoCoreError as exc:
            raise ImageSetListError(f"SearchImageSets for data store {datastore_id} failed: {exc}") from exc

    def latest_version(self, datastore_id: str, image_set_id: str) -> int | None:
        """The image set's current version (GetImageSet), or None when it is gone (not found or DELETED).

        Raises
        ------
        ImageSetListError
            Any other failure.
        """
        try:
            described = self._client.get_image_set(datastoreId=datastore_id, imageSetId=image_set_id)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return None
            raise ImageSetListError(f"GetImageSet for image set {image_set_id} failed: {_describe(exc)}") from exc
        except BotoCoreError as exc:
            raise ImageSetListError(f"GetImageSet for image set {image_set_id} failed: {exc}") from exc
        if described.get("imageSetState") == "DELETED":
            return None
        version = str(described.get("versionId", ""))
        return int(version) if version.isdigit() else None

    def exists(self, datastore_id: str, image_set_id: str) -> bool:
        """Whether GetImageSet still finds the image set (False: ResourceNotFoundException or state DELETED).

        Raises
        ------
        ImageSetListError
            Any other failure.
        """
        try:
            state = self._client.get_image_set(datastoreId=datastore_id, imageSetId=image_set_id).get("imageSetState")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return False
            raise ImageSetListError(f"GetImageSet for image set {image_set_id} failed: {_describe(exc)}") from exc
        except BotoCoreError as exc:
            raise ImageSetListError(f"GetImageSet for image set {image_set_id} failed: {exc}") from exc
        # The service may still describe a deleted image set for a while, in state DELETED.
        return bool(state != "DELETED")

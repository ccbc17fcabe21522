"""WSGI app: the HealthImaging routes of botocore's ``medical-imaging`` 2023-07-19 model.

Runtime routes (``GetImageSetMetadata``, ``GetImageFrame``, ``GetImageSet``, ``SearchImageSets``,
``ListImageSetVersions``, ``UpdateImageSetMetadata``, ``CopyImageSet``, ``DeleteImageSet``; ``runtime-`` host
prefix on AWS) and
the DICOM import job control plane (``StartDICOMImportJob``, ``GetDICOMImportJob``, ``ListDICOMImportJobs``; no
host prefix) share one server, so one ``AWS_ENDPOINT_URL_MEDICAL_IMAGING`` serves both.

Routes are matched on the *raw* request path: botocore percent-encodes URI labels (``/`` becomes ``%2F``), and
matching the decoded path would turn a malformed ID into an unknown route instead of a ValidationException.

Every API request first takes a token from its operation's quota (:mod:`ahi_emulator.quotas`); one that finds
none is answered 429 ``ThrottlingException`` "Rate exceeded", as the service answers it. With signature
verification on (:mod:`ahi_emulator.sigv4`), a request is authenticated before that: one that does not verify is
answered 403 and takes no token.
"""

from __future__ import annotations

import gzip
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from .emulator import Emulator
from .faults import ERROR_RESPONSES, METADATA_BODY_FAULTS, Fault, ImportFaults
from .ids import ID_PATTERN, JOB_ID_PATTERN, VERSION_PATTERN
from .jobs import validate_start_request
from .models import ConflictError, NotFoundError
from .quotas import Quota, quotas_from_json
from .search import parse_criteria
from .sigv4 import ReceivedRequest, SignatureError

logger = logging.getLogger(__name__)

WSGIEnvironment = dict[str, Any]
StartResponse = Callable[..., Any]

#: The service's message for a request over its quota.
THROTTLED_MESSAGE = "Rate exceeded"

_RUNTIME = "/datastore/<datastore_id>/imageSet/<image_set_id>/"
_URL_MAP = Map(
    [
        Rule(_RUNTIME + "getImageSetMetadata", endpoint="GetImageSetMetadata", methods=["POST"]),
        Rule(_RUNTIME + "getImageFrame", endpoint="GetImageFrame", methods=["POST"]),
        Rule(_RUNTIME + "getImageSet", endpoint="GetImageSet", methods=["POST"]),
        Rule(_RUNTIME + "listImageSetVersions", endpoint="ListImageSetVersions", methods=["POST"]),
        Rule(_RUNTIME + "updateImageSetMetadata", endpoint="UpdateImageSetMetadata", methods=["POST"]),
        Rule(_RUNTIME + "deleteImageSet", endpoint="DeleteImageSet", methods=["POST"]),
        # The model names this label sourceImageSetId; one name for every image set label keeps dispatch simple.
        Rule(_RUNTIME + "copyImageSet", endpoint="CopyImageSet", methods=["POST"]),
        Rule("/datastore/<datastore_id>/searchImageSets", endpoint="SearchImageSets", methods=["POST"]),
        Rule("/startDICOMImportJob/datastore/<datastore_id>", endpoint="StartDICOMImportJob", methods=["POST"]),
        Rule(
            "/getDICOMImportJob/datastore/<datastore_id>/job/<job_id>",
            endpoint="GetDICOMImportJob",
            methods=["GET"],
        ),
        Rule("/listDICOMImportJobs/datastore/<datastore_id>", endpoint="ListDICOMImportJobs", methods=["GET"]),
        Rule("/datastore", endpoint="CreateDatastore", methods=["POST"]),
        Rule("/datastore", endpoint="ListDatastores", methods=["GET"]),
        Rule("/datastore/<datastore_id>", endpoint="GetDatastore", methods=["GET"]),
        Rule("/_emulator/import-faults", endpoint="admin_import_faults", methods=["GET", "POST", "DELETE"]),
        Rule("/_emulator/import-jobs/<job_id>/faults", endpoint="admin_job_faults", methods=["GET"]),
        Rule("/_emulator/health", endpoint="admin_health", methods=["GET"]),
        Rule("/_emulator/stats", endpoint="admin_stats", methods=["GET"]),
        Rule("/_emulator/faults", endpoint="admin_faults", methods=["GET", "POST", "DELETE"]),
        Rule("/_emulator/reset", endpoint="admin_reset", methods=["POST"]),
        Rule("/_emulator/quotas", endpoint="admin_quotas", methods=["GET", "POST", "DELETE"]),
        Rule("/_emulator/image-sets", endpoint="admin_image_sets", methods=["GET"]),
        Rule("/_emulator/mutate", endpoint="admin_mutate", methods=["POST"]),
    ],
    strict_slashes=False,
    merge_slashes=False,
)


class ApiError(Exception):
    """An error answered the way the service does: status, ``x-amzn-ErrorType`` and ``{"message"}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str) -> Response:
    """Build a service-style error response that botocore maps to ``client.exceptions.<code>``."""
    response = Response(json.dumps({"message": message}), status=status, content_type="application/json")
    response.headers["x-amzn-ErrorType"] = code
    response.headers["x-amzn-RequestId"] = str(uuid.uuid4())
    return response


def _validate_id(value: str, name: str) -> None:
    if not ID_PATTERN.fullmatch(value):
        raise ApiError(400, "ValidationException", f"{name} must match [0-9a-z]{{32}}")


def _truncated(response: Response) -> Response:
    """Declare the full length but send half: the server closes a connection whose body falls short."""
    body = response.get_data()
    response.response = [body[: len(body) // 2]]
    response.headers["Content-Length"] = str(len(body))
    response.direct_passthrough = True
    return response


class EmulatorApp:
    """The WSGI application serving one :class:`~ahi_emulator.emulator.Emulator`.

    Parameters
    ----------
    emulator
        The state to serve; shared with the caller, so tests can mutate it while the server runs.
    verify_signatures
        Check every service request's SigV4 signature (:mod:`ahi_emulator.sigv4`); None follows
        ``emulator.verify_signatures``. Admin routes (``/_emulator/...``) are never signed.
    """

    def __init__(self, emulator: Emulator, verify_signatures: bool | None = None) -> None:
        self.emulator = emulator
        self._verify_signatures = verify_signatures

    @property
    def verify_signatures(self) -> bool:
        """Whether service requests must be signed right."""
        if self._verify_signatures is not None:
            return self._verify_signatures
        return self.emulator.verify_signatures

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        response = self.dispatch(request)
        result: Iterable[bytes] = response(environ, start_response)
        return result

    def dispatch(self, request: Request) -> Response:
        """Route a request and turn every failure into a service-style error response."""
        raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
        path = urlsplit(raw).path if raw else request.path
        adapter = _URL_MAP.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match(path_info=path, method=request.method)
        except MethodNotAllowed:
            return error_response(405, "UnknownOperationException", "method not allowed on this route")
        except HTTPException:
            return error_response(404, "UnknownOperationException", "unknown route")
        args = {key: unquote(value) for key, value in args.items()}
        if endpoint.startswith("admin_"):
            return self._admin(endpoint, request, args)
        if self.verify_signatures:
            refused = self._refuse_unsigned(endpoint, request, raw)
            if refused is not None:
                return refused
        return self._api(endpoint, request, args)

    def _refuse_unsigned(self, operation: str, request: Request, raw: str | None) -> Response | None:
        """The service's 403 for a request whose signature does not verify, else None."""
        # The signature covers the request as sent: the raw request line when the server passed it on.
        if raw:
            raw_path, _, raw_query = raw.partition("?")
        else:
            raw_path, raw_query = request.path, request.query_string.decode("latin-1")
        headers: dict[str, list[str]] = {}
        for name, value in request.headers.items():
            headers.setdefault(name, []).append(value)
        received = ReceivedRequest(request.method, raw_path, raw_query, headers, request.get_data())
        try:
            self.emulator.signatures.verify(received, self.emulator.region)
        except SignatureError as exc:
            self.emulator.record_response(operation, exc.status)
            return error_response(exc.status, exc.code, exc.message)
        return None

    # ---------------------------------------------------------------------------------- service API

    def _api(self, operation: str, request: Request, args: dict[str, str]) -> Response:
        # Read the body first: a keep-alive connection must be drained whatever the answer is.
        body = request.get_data()
        datastore_id = args.get("datastore_id", "")
        image_set_id = args.get("image_set_id")
        frame_id = _frame_id(body) if operation == "GetImageFrame" else None
        # The quota is checked on arrival, before anything else looks at the request: the service throttles
        # at its front door, so a throttled request is refused whatever it asks for.
        admitted = self.emulator.admit(operation)
        decision = self.emulator.intercept(operation, image_set_id, frame_id, throttled=not admitted)
        if decision.latency_s:
            time.sleep(decision.latency_s)
        fault = decision.fault
        try:
            if not admitted:
                raise ApiError(429, "ThrottlingException", THROTTLED_MESSAGE)
            if fault is not None and fault.kind in ERROR_RESPONSES:
                status, code, message = ERROR_RESPONSES[fault.kind]
                raise ApiError(status, code, message)
            if image_set_id is None:
                response = self._control(operation, request, datastore_id, args.get("job_id"))
            else:
                response = self._answer(operation, request, datastore_id, image_set_id, frame_id)
        except ApiError as exc:
            response = error_response(exc.status, exc.code, exc.message)
        except NotFoundError as exc:
            response = error_response(404, "ResourceNotFoundException", str(exc))
        except ConflictError as exc:
            response = error_response(409, "ConflictException", str(exc))
        except Exception:
            logger.exception("%s failed", operation)
            response = error_response(500, "InternalServerException", "emulator error")
        if fault is not None and fault.kind == "truncate_body" and response.status_code == 200:
            response = _truncated(response)
        damaged = fault is not None and fault.kind in METADATA_BODY_FAULTS and operation == "GetImageSetMetadata"
        if fault is not None and damaged and response.status_code == 200:
            response.set_data(_damaged_metadata(fault.kind, response.get_data()))
        response.headers.setdefault("x-amzn-RequestId", str(uuid.uuid4()))
        self.emulator.record_response(operation, response.status_code)
        return response

    def _answer(
        self, operation: str, request: Request, datastore_id: str, image_set_id: str, frame_id: str | None
    ) -> Response:
        _validate_id(datastore_id, "datastoreId")
        _validate_id(image_set_id, "imageSetId")
        if operation == "GetImageFrame":
            if frame_id is None:
                raise ApiError(400, "ValidationException", 'body must be {"imageFrameId": "..."}')
            _validate_id(frame_id, "imageFrameId")
            data, content_type = self.emulator.frame(datastore_id, image_set_id, frame_id)
            return Response(data, status=200, content_type=content_type)
        if operation in _IMAGE_SET_CHANGES:
            try:
                payload = self._image_set_change(operation, request, datastore_id, image_set_id)
            except ValueError as exc:
                raise ApiError(400, "ValidationException", str(exc)) from exc
            return Response(json.dumps(payload), status=200, content_type="application/json")
        version = request.args.get("version")
        if version is not None and not VERSION_PATTERN.fullmatch(version):
            raise ApiError(400, "ValidationException", "version must match \\d+")
        if operation == "GetImageSetMetadata":
            blob = self.emulator.metadata_gzip(datastore_id, image_set_id, version)
            response = Response(blob, status=200, content_type="application/json")
            response.headers["Content-Encoding"] = "gzip"
            return response
        properties = self.emulator.image_set_properties(datastore_id, image_set_id, version)
        return Response(json.dumps(properties), status=200, content_type="application/json")

    def _control(self, operation: str, request: Request, datastore_id: str, job_id: str | None) -> Response:
        emulator = self.emulator
        if operation in ("CreateDatastore", "ListDatastores"):
            return Response(
                json.dumps(self._datastores(operation, request)), status=200, content_type="application/json"
            )
        _validate_id(datastore_id, "datastoreId")
        if operation == "SearchImageSets":
            try:
                page = emulator.search_image_sets(
                    datastore_id,
                    parse_criteria(_json_body(request)),
                    max_results=_int_arg(request, "maxResults"),
                    next_token=request.args.get("nextToken"),
                )
            except ValueError as exc:
                raise ApiError(400, "ValidationException", str(exc)) from exc
            return Response(json.dumps(page), status=200, content_type="application/json")
        if operation == "GetDatastore":
            payload: dict[str, Any] = {
                "datastoreProperties": emulator.datastore_properties(datastore_id, emulator.region)
            }
        elif operation == "GetDICOMImportJob":
            if job_id is None or not JOB_ID_PATTERN.fullmatch(job_id):
                raise ApiError(400, "ValidationException", "jobId must match [0-9a-z]{1,32}")
            payload = {"jobProperties": emulator.get_import_job(datastore_id, job_id)}
        elif operation == "ListDICOMImportJobs":
            max_results = request.args.get("maxResults")
            try:
                payload = emulator.list_import_jobs(
                    datastore_id,
                    job_status=request.args.get("jobStatus"),
                    max_results=int(max_results) if max_results is not None else None,
                    next_token=request.args.get("nextToken"),
                )
            except ValueError as exc:
                raise ApiError(400, "ValidationException", str(exc)) from exc
        else:
            payload = self._start_job(request, datastore_id)
        return Response(json.dumps(payload), status=200, content_type="application/json")

    def _image_set_change(
        self, operation: str, request: Request, datastore_id: str, image_set_id: str
    ) -> dict[str, Any]:
        """``ListImageSetVersions``, ``UpdateImageSetMetadata``, ``CopyImageSet`` or ``DeleteImageSet``.

        Raises
        ------
        ValueError
            For a request the model does not allow (answered ValidationException).
        """
        emulator = self.emulator
        if operation == "ListImageSetVersions":
            return emulator.list_image_set_versions(
                datastore_id,
                image_set_id,
                max_results=_int_arg(request, "maxResults"),
                next_token=request.args.get("nextToken"),
            )
        if operation == "DeleteImageSet":
            return emulator.delete_image_set(datastore_id, image_set_id)
        body = _json_body(request)
        if not isinstance(body, dict):
            raise ValueError("the request body must be a JSON object")
        if operation == "UpdateImageSetMetadata":
            latest = request.args.get("latestVersion")
            if latest is None or not VERSION_PATTERN.fullmatch(latest):
                raise ValueError("latestVersion is required and must match \\d+")
            return emulator.update_image_set_metadata(
                datastore_id, image_set_id, latest, body, force=_bool_arg(request, "force")
            )
        source = body.get("sourceImageSet")
        if not isinstance(source, dict) or not VERSION_PATTERN.fullmatch(str(source.get("latestVersionId", ""))):
            raise ValueError("copyImageSetInformation.sourceImageSet.latestVersionId is required")
        if "DICOMCopies" in source:
            # Copying a subset of the instances (copiableAttributes) is not emulated: refuse it rather than
            # copy everything and pretend.
            raise ValueError("sourceImageSet.DICOMCopies is not supported by the emulator")
        dest = body.get("destinationImageSet")
        destination = None
        if dest is not None:
            if not isinstance(dest, dict) or not VERSION_PATTERN.fullmatch(str(dest.get("latestVersionId", ""))):
                raise ValueError("destinationImageSet needs imageSetId and latestVersionId")
            _validate_id(str(dest.get("imageSetId", "")), "destinationImageSet.imageSetId")
            destination = (str(dest["imageSetId"]), str(dest["latestVersionId"]))
        return emulator.copy_image_set(
            datastore_id,
            image_set_id,
            str(source["latestVersionId"]),
            destination=destination,
            force=_bool_arg(request, "force"),
            promote_to_primary=_bool_arg(request, "promoteToPrimary"),
        )

    def _datastores(self, operation: str, request: Request) -> dict[str, Any]:
        emulator = self.emulator
        if operation == "ListDatastores":
            status = request.args.get("datastoreStatus")
            summaries = emulator.datastore_summaries(emulator.region)
            return {"datastoreSummaries": [s for s in summaries if status in (None, s["datastoreStatus"])]}
        try:
            body = _json_body(request)
        except ValueError as exc:
            raise ApiError(400, "ValidationException", str(exc)) from exc
        if not isinstance(body, dict) or not body.get("clientToken"):
            raise ApiError(400, "ValidationException", "body must be a JSON object with a clientToken")
        try:
            datastore_id = emulator.create_datastore(
                lossless_storage_format=body.get("losslessStorageFormat", "HTJ2K"), name=body.get("datastoreName")
            )
        except ValueError as exc:
            raise ApiError(400, "ValidationException", str(exc)) from exc
        return {"datastoreId": datastore_id, "datastoreStatus": "CREATING"}

    def _start_job(self, request: Request, datastore_id: str) -> dict[str, Any]:
        try:
            body = _json_body(request)
        except ValueError as exc:
            raise ApiError(400, "ValidationException", str(exc)) from exc
        if not isinstance(body, dict):
            raise ApiError(400, "ValidationException", "body must be a JSON object")
        try:
            validate_start_request(
                input_s3_uri=body.get("inputS3Uri"),
                output_s3_uri=body.get("outputS3Uri"),
                data_access_role_arn=body.get("dataAccessRoleArn"),
                client_token=body.get("clientToken"),
                job_name=body.get("jobName"),
                input_owner_account_id=body.get("inputOwnerAccountId"),
                import_configuration=body.get("importConfiguration"),
            )
            job_id = self.emulator.start_import_job(
                datastore_id,
                body["inputS3Uri"],
                body["outputS3Uri"],
                job_name=body.get("jobName"),
                data_access_role_arn=body["dataAccessRoleArn"],
                client_token=body["clientToken"],
                input_owner_account_id=body.get("inputOwnerAccountId"),
                import_configuration=body.get("importConfiguration"),
            )
        except ValueError as exc:
            raise ApiError(400, "ValidationException", str(exc)) from exc
        job = self.emulator.get_import_job(datastore_id, job_id)
        # Always SUBMITTED, as documented, even when an idempotent repeat names a job that has moved on.
        return {
            "datastoreId": datastore_id,
            "jobId": job_id,
            "jobStatus": "SUBMITTED",
            "submittedAt": job["submittedAt"],
        }

    # ---------------------------------------------------------------------------------------- admin

    def _admin(self, endpoint: str, request: Request, args: dict[str, str]) -> Response:
        try:
            handler = {
                "admin_import_faults": self._admin_imports,
                "admin_job_faults": self._admin_imports,
                "admin_quotas": self._admin_quotas,
            }.get(endpoint, self._admin_payload)
            payload = handler(endpoint, request, args)
        except (ValueError, TypeError, KeyError) as exc:
            return error_response(400, "ValidationException", str(exc))
        except NotFoundError as exc:
            return error_response(404, "ResourceNotFoundException", str(exc))
        return Response(json.dumps(payload), status=200, content_type="application/json")

    def _admin_payload(self, endpoint: str, request: Request, args: dict[str, str]) -> Any:
        emulator = self.emulator
        if endpoint == "admin_health":
            return {"status": "ok"}
        if endpoint == "admin_stats":
            return emulator.stats()
        if endpoint == "admin_reset":
            emulator.clear_faults()
            emulator.reset_stats()
            emulator.import_faults = None
            emulator.reset_quotas()
            return {"status": "reset"}
        if endpoint == "admin_image_sets":
            return [
                {
                    "datastoreId": info.datastore_id,
                    "imageSetId": info.image_set_id,
                    "versionId": info.version_id,
                    "imageFrameIds": info.frame_ids,
                }
                for info in emulator.image_sets()
            ]
        if endpoint == "admin_faults":
            if request.method == "DELETE":
                emulator.clear_faults()
            elif request.method == "POST":
                body = _json_body(request)
                items = body if isinstance(body, list) else [body]
                faults = [Fault.from_json(item) for item in items]  # all valid, or none added
                for fault in faults:
                    emulator.add_fault(fault)
            return [fault.to_json() for fault in emulator.faults()]
        return self._mutate(_json_body(request))

    def _admin_imports(self, endpoint: str, request: Request, args: dict[str, str]) -> Any:
        emulator = self.emulator
        if endpoint == "admin_job_faults":
            return emulator.job_faults(args["job_id"]).to_json()
        if request.method == "DELETE":
            emulator.import_faults = None
        elif request.method == "POST":
            emulator.import_faults = ImportFaults.from_json(_json_body(request))
        return emulator.import_faults.to_json() if emulator.import_faults is not None else None

    def _admin_quotas(self, endpoint: str, request: Request, args: dict[str, str]) -> Any:
        emulator = self.emulator
        if request.method == "DELETE":
            emulator.clear_quotas()
        elif request.method == "POST":
            emulator.set_quotas(quotas_from_json(_json_body(request)))  # all valid, or none applied
        return _quotas_json(emulator.quotas())

    def _mutate(self, body: Any) -> Any:
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        action = body.get("action")
        target = (body["datastoreId"], body["imageSetId"], body["imageFrameId"])
        if action == "corrupt_frame":
            self.emulator.corrupt_frame(*target)
        elif action == "truncate_frame":
            self.emulator.truncate_frame(*target, keep_bytes=body.get("keepBytes"))
        elif action == "set_checksum":
            self.emulator.set_checksum(*target, int(body["checksum"]), version_id=body.get("versionId"))
        elif action == "remove_frame":
            self.emulator.remove_frame(*target)
        else:
            raise ValueError("action must be corrupt_frame, truncate_frame, set_checksum or remove_frame")
        return {"status": "ok", "action": action}


def _quotas_json(quotas: dict[str, Quota | None]) -> dict[str, Any]:
    return {operation: quota.to_json() if quota is not None else None for operation, quota in quotas.items()}


def _damaged_metadata(kind: str, blob: bytes) -> bytes:
    """The gzip metadata body as a metadata body fault serves it (``Content-Encoding`` stays gzip)."""
    if kind == "corrupt_gzip":
        return blob[:10] + bytes(b ^ 0xFF for b in blob[10:])  # gzip header kept, deflate stream garbled
    if kind == "invalid_json":
        return gzip.compress(gzip.decompress(blob)[:-1] + b",,}", mtime=0)
    doc = json.loads(gzip.decompress(blob))
    if kind == "omit_stored_syntax":
        for series in doc.get("Study", {}).get("Series", {}).values():
            for instance in series.get("Instances", {}).values():
                instance.pop("StoredTransferSyntaxUID", None)
    else:
        doc.pop("Study", None)
    return gzip.compress(json.dumps(doc).encode(), mtime=0)


_IMAGE_SET_CHANGES = frozenset({"ListImageSetVersions", "UpdateImageSetMetadata", "CopyImageSet", "DeleteImageSet"})


def _int_arg(request: Request, name: str) -> int | None:
    value = request.args.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise ApiError(400, "ValidationException", f"{name} must be an integer") from exc


def _bool_arg(request: Request, name: str) -> bool:
    value = request.args.get(name)
    if value not in (None, "true", "false"):
        raise ApiError(400, "ValidationException", f"{name} must be true or false")
    return value == "true"


def _json_body(request: Request) -> Any:
    try:
        return json.loads(request.get_data() or b"null")
    except json.JSONDecodeError as exc:
        raise ValueError(f"body is not JSON: {exc}") from exc


def _frame_id(body: bytes) -> str | None:
    try:
        parsed = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    value = parsed.get("imageFrameId") if isinstance(parsed, dict) else None
    return value if isinstance(value, str) else None

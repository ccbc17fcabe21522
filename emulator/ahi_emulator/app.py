"""WSGI app: the HealthImaging runtime routes of botocore's ``medical-imaging`` 2023-07-19 model.

Routes are matched on the *raw* request path: botocore percent-encodes URI labels (``/`` becomes ``%2F``), and
matching the decoded path would turn a malformed ID into an unknown route instead of a ValidationException.
"""

from __future__ import annotations

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

from .faults import ERROR_RESPONSES, Fault
from .store import ID_PATTERN, VERSION_PATTERN, Emulator, NotFoundError

logger = logging.getLogger(__name__)

WSGIEnvironment = dict[str, Any]
StartResponse = Callable[..., Any]

_RUNTIME = "/datastore/<datastore_id>/imageSet/<image_set_id>/"
_URL_MAP = Map(
    [
        Rule(_RUNTIME + "getImageSetMetadata", endpoint="GetImageSetMetadata", methods=["POST"]),
        Rule(_RUNTIME + "getImageFrame", endpoint="GetImageFrame", methods=["POST"]),
        Rule(_RUNTIME + "getImageSet", endpoint="GetImageSet", methods=["POST"]),
        Rule("/_emulator/health", endpoint="admin_health", methods=["GET"]),
        Rule("/_emulator/stats", endpoint="admin_stats", methods=["GET"]),
        Rule("/_emulator/faults", endpoint="admin_faults", methods=["GET", "POST", "DELETE"]),
        Rule("/_emulator/reset", endpoint="admin_reset", methods=["POST"]),
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
    """The WSGI application serving one :class:`~ahi_emulator.store.Emulator`.

    Parameters
    ----------
    emulator
        The state to serve; shared with the caller, so tests can mutate it while the server runs.
    """

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator

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
            return self._admin(endpoint, request)
        return self._api(endpoint, request, args["datastore_id"], args["image_set_id"])

    # ---------------------------------------------------------------------------------- runtime API

    def _api(self, operation: str, request: Request, datastore_id: str, image_set_id: str) -> Response:
        # Read the body first: a keep-alive connection must be drained whatever the answer is.
        body = request.get_data()
        frame_id = _frame_id(body) if operation == "GetImageFrame" else None
        decision = self.emulator.intercept(operation, image_set_id, frame_id)
        if decision.latency_s:
            time.sleep(decision.latency_s)
        fault = decision.fault
        try:
            if fault is not None and fault.kind in ERROR_RESPONSES:
                status, code, message = ERROR_RESPONSES[fault.kind]
                raise ApiError(status, code, message)
            response = self._answer(operation, request, datastore_id, image_set_id, frame_id)
        except ApiError as exc:
            response = error_response(exc.status, exc.code, exc.message)
        except NotFoundError as exc:
            response = error_response(404, "ResourceNotFoundException", str(exc))
        except Exception:
            logger.exception("%s failed", operation)
            response = error_response(500, "InternalServerException", "emulator error")
        if fault is not None and fault.kind == "truncate_body" and response.status_code == 200:
            response = _truncated(response)
        response.headers.setdefault("x-amzn-RequestId", str(uuid.uuid4()))
        self.emulator.record_response(response.status_code)
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

    # ---------------------------------------------------------------------------------------- admin

    def _admin(self, endpoint: str, request: Request) -> Response:
        try:
            payload = self._admin_payload(endpoint, request)
        except (ValueError, TypeError, KeyError) as exc:
            return error_response(400, "ValidationException", str(exc))
        except NotFoundError as exc:
            return error_response(404, "ResourceNotFoundException", str(exc))
        return Response(json.dumps(payload), status=200, content_type="application/json")

    def _admin_payload(self, endpoint: str, request: Request) -> Any:
        emulator = self.emulator
        if endpoint == "admin_health":
            return {"status": "ok"}
        if endpoint == "admin_stats":
            return emulator.stats()
        if endpoint == "admin_reset":
            emulator.clear_faults()
            emulator.reset_stats()
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

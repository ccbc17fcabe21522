"""SigV4 verification of the requests the emulator receives, with botocore's own signer.

With verification on, every service request (not the ``/_emulator/...`` admin routes) must carry an
``Authorization: AWS4-HMAC-SHA256 ...`` header whose signature a known secret reproduces. The canonical
request is rebuilt from what arrived (method, raw path, raw query, the headers the header lists as signed,
the body's SHA-256) and signed again by :class:`botocore.auth.SigV4Auth`: the emulator holds no SigV4 code of
its own, so a request it accepts is one botocore would have produced, byte for byte. Refusals are the service's:
403 with ``x-amzn-ErrorType`` ``MissingAuthenticationTokenException``, ``IncompleteSignatureException``,
``UnrecognizedClientException`` or ``InvalidSignatureException``.

Verification is off unless asked for (``Emulator(verify_signatures=True)``, ``EmulatorServer(...,
verify_signatures=True)``, ``ahi-emulator serve --verify-signatures``) or switched on for a whole process by
``AHI_EMULATOR_VERIFY_SIGV4=1``, which the test suite sets.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

#: The environment switch that turns verification on by default (``1``, ``true``, ``yes``, ``on``).
ENV_VERIFY = "AHI_EMULATOR_VERIFY_SIGV4"

#: The SigV4 service name of HealthImaging (the credential scope's fourth part).
SERVICE_NAME = "medical-imaging"

#: How far ``X-Amz-Date`` may be from the server's clock, either way (AWS: 5 minutes).
MAX_SKEW_S = 300.0

_ALGORITHM = "AWS4-HMAC-SHA256"


def verify_by_default() -> bool:
    """Whether ``AHI_EMULATOR_VERIFY_SIGV4`` asks for verification."""
    return os.environ.get(ENV_VERIFY, "").strip().lower() in ("1", "true", "yes", "on")


class SignatureError(Exception):
    """A request the service would refuse before looking at it: 403 with ``code`` as ``x-amzn-ErrorType``."""

    status = 403

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ReceivedRequest:
    """What arrived, as the client sent it: nothing decoded or reordered, or the signature cannot match.

    Attributes
    ----------
    method
        The HTTP method.
    raw_path
        The path exactly as on the request line (percent-encoding kept).
    raw_query
        The query string exactly as on the request line, without ``?``.
    headers
        Each header name (any case) with all of its values, in arrival order.
    body
        The body bytes.
    """

    method: str
    raw_path: str
    raw_query: str
    headers: Mapping[str, list[str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        values = self.values(name)
        return values[0] if values else None

    def values(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive)."""
        lower = name.lower()
        return [value for key, values in self.headers.items() if key.lower() == lower for value in values]


@dataclass(frozen=True)
class _Authorization:
    access_key: str
    date: str
    region: str
    service: str
    signed_headers: list[str]
    signature: str


def _parse_authorization(value: str) -> _Authorization:
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != _ALGORITHM:
        raise SignatureError("IncompleteSignatureException", f"Unsupported Authorization Type: {algorithm!r}")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        key, sep, item = part.strip().partition("=")
        if sep:
            fields[key] = item
    for required in ("Credential", "SignedHeaders", "Signature"):
        if not fields.get(required):
            raise SignatureError(
                "IncompleteSignatureException", f"Authorization header requires '{required}' parameter."
            )
    scope = fields["Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request" or not all(scope):
        raise SignatureError(
            "IncompleteSignatureException",
            "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term.",
        )
    return _Authorization(
        access_key=scope[0],
        date=scope[1],
        region=scope[2],
        service=scope[3],
        signed_headers=fields["SignedHeaders"].split(";"),
        signature=fields["Signature"],
    )


class SignatureVerifier:
    """The table of known credentials and the check of one request against it.

    Parameters
    ----------
    credentials
        Access key ID → secret access key; default ``{"testing": "testing"}``, the suite's dummy credentials.
    clock
        Seconds since the epoch, for the ``X-Amz-Date`` skew check; injectable so a test can move it.
    """

    def __init__(
        self,
        credentials: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._secrets: dict[str, str] = dict(credentials if credentials is not None else {"testing": "testing"})
        self._tokens: dict[str, str] = {}

    def register(self, access_key: str, secret_key: str, session_token: str | None = None) -> None:
        """Accept requests signed by this key pair; with ``session_token``, only when they carry that token.

        Parameters
        ----------
        access_key, secret_key
            The key pair.
        session_token
            Temporary credentials' token (``X-Amz-Security-Token``); None accepts a request with any or none,
            as the default ``testing`` key does (the suite's environment sets ``AWS_SESSION_TOKEN=testing``).
        """
        with self._lock:
            self._secrets[access_key] = secret_key
            if session_token is None:
                self._tokens.pop(access_key, None)
            else:
                self._tokens[access_key] = session_token

    def verify(self, request: ReceivedRequest, region: str) -> None:
        """Check one request's signature; return if botocore's signer reproduces it.

        Parameters
        ----------
        request
            The request as received.
        region
            The region its credential scope must name (the emulator's).

        Raises
        ------
        SignatureError
            With the code and message the service answers a request it cannot authenticate.
        """
        header = request.header("Authorization")
        if header is None:
            raise SignatureError("MissingAuthenticationTokenException", "Missing Authentication Token")
        auth = _parse_authorization(header)
        with self._lock:
            secret = self._secrets.get(auth.access_key)
            wanted_token = self._tokens.get(auth.access_key)
        if secret is None:
            raise SignatureError(
                "UnrecognizedClientException", "The security token included in the request is invalid."
            )
        token = request.header("X-Amz-Security-Token")
        if wanted_token is not None and (token is None or not hmac.compare_digest(token, wanted_token)):
            raise SignatureError(
                "UnrecognizedClientException", "The security token included in the request is invalid."
            )
        timestamp = self._check_scope_and_date(request, auth, region)
        signed = set(auth.signed_headers)
        if "host" not in signed:
            raise SignatureError(
                "InvalidSignatureException", "'Host' must be a 'SignedHeader' in the AWS Authorization."
            )
        # Headers that change the meaning of the request must be covered, or the signature proves nothing about them.
        for must in ("x-amz-date", "x-amz-security-token", "x-amz-content-sha256"):
            if request.header(must) is not None and must not in signed:
                raise SignatureError("InvalidSignatureException", f"'{must}' must be a 'SignedHeader'.")
        body_sha256 = hashlib.sha256(request.body).hexdigest()
        declared = request.header("X-Amz-Content-SHA256")
        if declared is not None and not hmac.compare_digest(declared, body_sha256):
            # botocore's canonical request takes the declared hash as it stands; the body must then match it.
            raise SignatureError(
                "InvalidSignatureException", "The provided 'x-amz-content-sha256' header does not match the body."
            )
        expected = self._expected_signature(request, auth, secret, token, timestamp)
        if not hmac.compare_digest(expected, auth.signature):
            raise SignatureError(
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you provided. Check your AWS "
                "Secret Access Key and signing method. Consult the service documentation for details.",
            )

    def _check_scope_and_date(self, request: ReceivedRequest, auth: _Authorization, region: str) -> str:
        if auth.service != SERVICE_NAME:
            raise SignatureError(
                "InvalidSignatureException",
                f"Credential should be scoped to correct service: '{SERVICE_NAME}'.",
            )
        if auth.region != region:
            raise SignatureError(
                "InvalidSignatureException",
                f"Credential should be scoped to a valid region, not '{auth.region}'.",
            )
        timestamp = request.header("X-Amz-Date")
        if timestamp is None:
            raise SignatureError(
                "IncompleteSignatureException", "Authorization header requires existence of a 'X-Amz-Date' header."
            )
        try:
            signed_at = datetime.datetime.strptime(timestamp, SIGV4_TIMESTAMP).replace(tzinfo=datetime.UTC)
        except ValueError:
            raise SignatureError("IncompleteSignatureException", f"Invalid X-Amz-Date: {timestamp!r}") from None
        if auth.date != timestamp[:8]:
            raise SignatureError(
                "InvalidSignatureException", f"Credential should be scoped to a valid date, not '{auth.date}'."
            )
        now = datetime.datetime.fromtimestamp(self.clock(), datetime.UTC)
        if abs((now - signed_at).total_seconds()) > MAX_SKEW_S:
            window = datetime.timedelta(seconds=MAX_SKEW_S)
            raise SignatureError(
                "InvalidSignatureException",
                f"Signature expired: {timestamp} is now outside ({(now - window).strftime(SIGV4_TIMESTAMP)} - "
                f"{(now + window).strftime(SIGV4_TIMESTAMP)}) (5 minutes of server time)",
            )
        return timestamp

    def _expected_signature(
        self, request: ReceivedRequest, auth: _Authorization, secret: str, token: str | None, timestamp: str
    ) -> str:
        # The URL is only a carrier for the raw path and query: botocore reads both back with urlsplit, and the
        # http scheme makes it hash the body (it does so for every request not sent over TLS).
        url = f"http://{request.header('Host') or ''}{request.raw_path}"
        if request.raw_query:
            url += f"?{request.raw_query}"
        rebuilt = AWSRequest(method=request.method, url=url, data=request.body)
        for name in auth.signed_headers:
            for value in request.values(name):
                rebuilt.headers[name] = value  # HTTPHeaders appends: a repeated header keeps every value
        rebuilt.context["timestamp"] = timestamp
        signer = SigV4Auth(Credentials(auth.access_key, secret, token), auth.service, auth.region)
        canonical = signer.canonical_request(rebuilt)
        return str(signer.signature(signer.string_to_sign(rebuilt, canonical), rebuilt))

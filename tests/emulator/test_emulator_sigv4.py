"""The emulator's SigV4 verification: botocore's requests pass, anything signed wrong is refused 403."""

# Dummy keys, secrets and tokens are what these tests are about; none of them is a real credential.
# ruff: noqa: S106, S107

from __future__ import annotations

import datetime
import http.client
import json
import socket
import time
from pathlib import Path
from typing import Any

import boto3
import botocore.auth
import numpy as np
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from ahi_emulator import Emulator, EmulatorServer, InstanceSpec, cli
from ahi_emulator.sigv4 import ENV_VERIFY, verify_by_default
from ahi_emulator.specs import ImageSetInfo
from ahi_verify.healthimaging import HealthImagingSource
from ahi_verify.outcomes import Reason
from ahi_verify.ports import FrameFetchError
from tests.support import admin_call

pytestmark = pytest.mark.integration

REGION = "us-east-1"


@pytest.fixture
def emulator() -> Emulator:
    return Emulator(verify_signatures=True, region=REGION)


@pytest.fixture
def stored(emulator: Emulator, datastore_id: str) -> ImageSetInfo:
    frame = np.arange(12 * 10, dtype=np.uint16).reshape(12, 10)
    return emulator.add_image_set(datastore_id, [InstanceSpec(frames=[frame])])


def session_client(server: EmulatorServer, *, key: str = "testing", secret: str = "testing", **kwargs: Any) -> Any:
    """A client with explicit credentials (no shared default session caching the environment's)."""
    session = boto3.session.Session(aws_access_key_id=key, aws_secret_access_key=secret, region_name=REGION, **kwargs)
    config = Config(retries={"total_max_attempts": 1}, inject_host_prefix=False)
    return session.client("medical-imaging", endpoint_url=server.endpoint_url, config=config)


def error_of(call: Any) -> tuple[int, str]:
    with pytest.raises(ClientError) as raised:
        call()
    response = raised.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def signed(
    server: EmulatorServer,
    path: str,
    body: bytes,
    *,
    query: str = "",
    secret: str = "testing",
    token: str | None = None,
) -> dict[str, str]:
    """The headers botocore's signer puts on a POST to ``path`` (the test's stand-in for a hand-made client)."""
    url = f"{server.endpoint_url}{path}" + (f"?{query}" if query else "")
    request = AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials("testing", secret, token), "medical-imaging", REGION).add_auth(request)
    return dict(request.headers.items())


def send(
    server: EmulatorServer, path: str, body: bytes, headers: dict[str, str], *, query: str = ""
) -> tuple[int, str | None, bytes]:
    """POST exactly these bytes and headers (http.client adds Host only when the headers lack one)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("POST", path + (f"?{query}" if query else ""), body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.getheader("x-amzn-ErrorType"), response.read()
    finally:
        connection.close()


def frame_path(info: ImageSetInfo) -> str:
    return f"/datastore/{info.datastore_id}/imageSet/{info.image_set_id}/getImageFrame"


def frame_body(info: ImageSetInfo) -> bytes:
    return json.dumps({"imageFrameId": info.frame_ids[0]}).encode()


# ------------------------------------------------------------------------------------------ what passes


def test_the_suite_runs_with_verification_on() -> None:
    """GIVEN the test configuration THEN every emulator it builds verifies signatures by default."""
    assert verify_by_default(), f"{ENV_VERIFY} should be on for the whole suite"
    assert Emulator().verify_signatures is True


def test_boto3_metadata_frame_and_search_pass(server: EmulatorServer, stored: ImageSetInfo, emulator: Emulator) -> None:
    """GIVEN verification on WHEN boto3 calls GetImageSetMetadata, GetImageFrame and SearchImageSets (a POST
    with a JSON body) THEN each is answered 200 with its content."""
    client = session_client(server)
    ids = {"datastoreId": stored.datastore_id, "imageSetId": stored.image_set_id}

    metadata = client.get_image_set_metadata(**ids)["imageSetMetadataBlob"].read()
    frame = client.get_image_frame(**ids, imageFrameInformation={"imageFrameId": stored.frame_ids[0]})
    found = client.search_image_sets(
        datastoreId=stored.datastore_id,
        searchCriteria={"filters": [{"values": [{"DICOMPatientId": "nobody"}], "operator": "EQUAL"}]},
    )

    assert metadata[:2] == b"\x1f\x8b"
    assert frame["imageFrameBlob"].read()[:2] == b"\xff\x4f"  # an HTJ2K codestream's SOC marker
    assert found["imageSetsMetadataSummaries"] == []
    assert emulator.stats()["responses"] == {"200": 3}


def test_frame_through_the_runtime_host_prefix_passes(
    server: EmulatorServer, stored: ImageSetInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN host-prefix injection on (botocore sends GetImageFrame to ``runtime-localhost``, resolved here to
    loopback) WHEN boto3 fetches a frame THEN the signature, which covers that Host header, verifies."""
    resolve = socket.getaddrinfo
    hosts: list[str] = []

    def loopback(host: Any, *args: Any, **kwargs: Any) -> Any:
        hosts.append(str(host))
        return resolve("127.0.0.1" if host == "runtime-localhost" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback)
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
    client = session.client(
        "medical-imaging",
        endpoint_url=f"http://localhost:{server.port}",
        config=Config(retries={"total_max_attempts": 1}, inject_host_prefix=True),
    )

    frame = client.get_image_frame(
        datastoreId=stored.datastore_id,
        imageSetId=stored.image_set_id,
        imageFrameInformation={"imageFrameId": stored.frame_ids[0]},
    )

    assert frame["imageFrameBlob"].read()[:2] == b"\xff\x4f"
    assert "runtime-localhost" in hosts


def test_temporary_credentials_pass_only_with_their_session_token(server: EmulatorServer, emulator: Emulator) -> None:
    """GIVEN a registered key pair with a session token WHEN boto3 signs with that token THEN 200; with
    another token THEN 403 UnrecognizedClientException."""
    emulator.signatures.register("ASIATEMPORARY", "temporary-secret", session_token="the-token")

    right = session_client(server, key="ASIATEMPORARY", secret="temporary-secret", aws_session_token="the-token")
    wrong = session_client(server, key="ASIATEMPORARY", secret="temporary-secret", aws_session_token="other")

    assert right.list_datastores()["datastoreSummaries"] == []
    assert error_of(wrong.list_datastores) == (403, "UnrecognizedClientException")


def test_admin_routes_stay_unsigned(server: EmulatorServer) -> None:
    """GIVEN verification on WHEN an admin route is called without any signature THEN it is answered."""
    status, answer = admin_call(server.port, "GET", "/_emulator/health")

    assert status == 200
    assert answer


def test_a_hand_made_request_signed_by_botocore_passes(server: EmulatorServer, stored: ImageSetInfo) -> None:
    """GIVEN a GetImageFrame request built by hand and signed with botocore's SigV4Auth, session token included
    WHEN sent with http.client THEN 200 (the check is what a thinner transport will have to satisfy)."""
    body = frame_body(stored)
    headers = signed(server, frame_path(stored), body, token="any-token")

    status, error_type, blob = send(server, frame_path(stored), body, headers)

    assert (status, error_type) == (200, None)
    assert blob[:2] == b"\xff\x4f"


# ------------------------------------------------------------------------------------------ what is refused


def test_wrong_secret_is_refused_and_not_retried(server: EmulatorServer, stored: ImageSetInfo) -> None:
    """GIVEN a client signing with the wrong secret WHEN it calls (retries allowed) THEN botocore raises
    ClientError 403 InvalidSignatureException after one attempt."""
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="wrong", region_name=REGION)
    client = session.client(
        "medical-imaging",
        endpoint_url=server.endpoint_url,
        config=Config(retries={"mode": "standard", "total_max_attempts": 3}, inject_host_prefix=False),
    )

    with pytest.raises(ClientError) as raised:
        client.get_image_set_metadata(datastoreId=stored.datastore_id, imageSetId=stored.image_set_id)

    response = raised.value.response
    assert (response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]) == (
        403,
        "InvalidSignatureException",
    )
    assert response["ResponseMetadata"]["RetryAttempts"] == 0


def test_a_refused_frame_fetch_is_a_fetch_failure(server: EmulatorServer, stored: ImageSetInfo) -> None:
    """GIVEN the verifier's frame source with a wrong secret WHEN it fetches a frame THEN FrameFetchError with
    reason fetch-failed, naming the service's code."""
    source = HealthImagingSource(session_client(server, secret="wrong"))

    with pytest.raises(FrameFetchError) as raised:
        source.get_image_frame(stored.datastore_id, stored.image_set_id, stored.frame_ids[0])

    assert raised.value.reason is Reason.FETCH_FAILED
    assert "InvalidSignatureException" in str(raised.value)


def test_unknown_access_key_is_unrecognized(server: EmulatorServer) -> None:
    """GIVEN an access key the emulator does not know WHEN boto3 calls THEN 403 UnrecognizedClientException."""
    client = session_client(server, key="AKIANOBODY", secret="testing")

    assert error_of(client.list_datastores) == (403, "UnrecognizedClientException")


def test_wrong_region_in_the_scope_is_refused(server: EmulatorServer) -> None:
    """GIVEN a client for another region WHEN it calls THEN 403 InvalidSignatureException (scope's region)."""
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="eu-west-1"
    )
    client = session.client("medical-imaging", endpoint_url=server.endpoint_url)

    assert error_of(client.list_datastores) == (403, "InvalidSignatureException")


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        pytest.param(lambda b, q, h: (b.replace(b'"}', b'0"}'), q, h), "InvalidSignatureException", id="body"),
        pytest.param(lambda b, q, h: (b, "version=2", h), "InvalidSignatureException", id="query"),
        pytest.param(
            lambda b, q, h: (b, q, {**h, "Host": "example.com"}), "InvalidSignatureException", id="host-header"
        ),
        pytest.param(
            lambda b, q, h: (b, q, {**h, "X-Amz-Security-Token": "swapped"}), "InvalidSignatureException", id="token"
        ),
        pytest.param(
            lambda b, q, h: (b, q, {k: v for k, v in h.items() if k != "Authorization"}),
            "MissingAuthenticationTokenException",
            id="no-authorization",
        ),
        pytest.param(
            lambda b, q, h: (b, q, {**h, "Authorization": "AWS4-HMAC-SHA256 Credential=testing"}),
            "IncompleteSignatureException",
            id="garbled-authorization",
        ),
    ],
)
def test_a_request_changed_after_signing_is_refused(
    server: EmulatorServer, stored: ImageSetInfo, emulator: Emulator, tamper: Any, expected: str
) -> None:
    """GIVEN a request signed by botocore WHEN a byte of its body, its query, its Host, its session token or
    its Authorization header changes before it is sent THEN 403 with the service's code, and nothing served."""
    body = frame_body(stored)
    headers = signed(server, frame_path(stored), body, token="signed-token")
    body, query, headers = tamper(body, "", headers)

    status, error_type, answer = send(server, frame_path(stored), body, headers, query=query)

    assert (status, error_type) == (403, expected)
    assert json.loads(answer)["message"]
    assert emulator.stats()["responses"] == {"403": 1}  # counted as answered, and never served


def test_twenty_minute_old_signature_is_expired(
    server: EmulatorServer, stored: ImageSetInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN botocore signing with a clock 20 minutes behind (X-Amz-Date 20 minutes old) WHEN it calls
    THEN 403 InvalidSignatureException "Signature expired"."""
    past = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - datetime.timedelta(minutes=20)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: past)
    client = session_client(server)

    with pytest.raises(ClientError) as raised:
        client.list_datastores()

    assert raised.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert raised.value.response["Error"]["Message"].startswith("Signature expired")


def test_the_skew_window_follows_the_servers_clock(server: EmulatorServer, emulator: Emulator) -> None:
    """GIVEN the server's clock 4 minutes ahead THEN a fresh request passes; 6 minutes ahead THEN it is expired."""
    client = session_client(server)

    emulator.signatures.clock = lambda: time.time() + 4 * 60
    assert client.list_datastores()["datastoreSummaries"] == []
    emulator.signatures.clock = lambda: time.time() + 6 * 60
    assert error_of(client.list_datastores) == (403, "InvalidSignatureException")


def test_verification_can_be_off_for_one_server(emulator: Emulator, stored: ImageSetInfo) -> None:
    """GIVEN EmulatorServer(verify_signatures=False) over a verifying emulator WHEN an unsigned request arrives
    THEN it is served."""
    with EmulatorServer(emulator, verify_signatures=False) as server:
        status, error_type, _ = send(server, frame_path(stored), frame_body(stored), {})

    assert (status, error_type) == (200, None)


def test_default_is_off_without_the_environment_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    """GIVEN no AHI_EMULATOR_VERIFY_SIGV4 THEN an emulator verifies nothing unless asked."""
    monkeypatch.delenv(ENV_VERIFY)

    assert Emulator().verify_signatures is False
    assert Emulator(verify_signatures=True).verify_signatures is True


def test_serve_verify_signatures_switches_it_on(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """GIVEN no environment switch WHEN ``ahi-emulator serve`` is given --verify-signatures THEN the served
    emulator verifies; without the flag it does not."""
    monkeypatch.delenv(ENV_VERIFY)
    argv = ["serve", "--data", str(tmp_path), "--datastore-id", "0" * 32]

    flagged = cli._served_emulator(cli._parser().parse_args([*argv, "--verify-signatures"]))
    plain = cli._served_emulator(cli._parser().parse_args(argv))

    assert (flagged.verify_signatures, plain.verify_signatures) == (True, False)

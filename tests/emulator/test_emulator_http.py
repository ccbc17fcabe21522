"""boto3 against a running EmulatorServer: routes, payloads, content types and validation."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import zlib
from typing import Any

import imagecodecs
import numpy as np
import pytest

from ahi_emulator import Emulator, EmulatorServer, InstanceSpec

pytestmark = pytest.mark.integration

ZERO_ID = "0" * 32


def frame_of(rows: int, cols: int, dtype: Any, samples: int = 1, seed: int = 0) -> np.ndarray:
    shape = (rows, cols, samples) if samples > 1 else (rows, cols)
    info = np.iinfo(dtype)
    rng = np.random.default_rng(seed)
    return rng.integers(max(info.min, -4000), min(info.max, 4095), size=shape, endpoint=True).astype(dtype)


@pytest.fixture
def stored(emulator: Emulator, datastore_id: str) -> dict[str, Any]:
    """An image set with a signed 16-bit frame, an RGB frame (boxed) and a retained JPEG frame."""
    mono = frame_of(64, 48, np.int16)
    rgb = frame_of(20, 30, np.uint8, samples=3, seed=1)
    jpeg = b"\xff\xd8\xff\xe0 not really a jpeg \xff\xd9"
    info = emulator.add_image_set(
        datastore_id,
        [
            InstanceSpec(frames=[mono]),
            InstanceSpec(frames=[rgb], boxed=True),
            InstanceSpec(
                frames=[np.zeros((4, 4), np.uint8)],
                stored_transfer_syntax_uid="1.2.840.10008.1.2.4.50",
                encoded_frames=[jpeg],
            ),
        ],
    )
    return {"info": info, "arrays": [mono, rgb], "jpeg": jpeg, "datastore_id": datastore_id}


def test_metadata_round_trip_is_gzip_json(client: Any, stored: dict[str, Any], emulator: Emulator) -> None:
    """GIVEN a stored image set WHEN boto3 calls GetImageSetMetadata
    THEN the blob is gzip (1f 8b, not decompressed by botocore) holding the stored document."""
    info = stored["info"]

    response = client.get_image_set_metadata(datastoreId=info.datastore_id, imageSetId=info.image_set_id)

    blob = response["imageSetMetadataBlob"].read()
    assert blob[:2] == b"\x1f\x8b"
    assert response["contentType"] == "application/json"
    assert response["contentEncoding"] == "gzip"
    assert json.loads(gzip.decompress(blob)) == emulator.metadata(info.datastore_id, info.image_set_id)


def test_metadata_version_parameter_selects_version(client: Any, stored: dict[str, Any], emulator: Emulator) -> None:
    """GIVEN versions 1 and 2 that differ in one checksum WHEN each is requested by versionId
    THEN each answer carries its own checksum, and no versionId means the latest."""
    info = stored["info"]
    emulator.new_version(info.datastore_id, info.image_set_id)
    emulator.set_checksum(info.datastore_id, info.image_set_id, info.frame_ids[0], 12345)

    def checksum(**kwargs: str) -> int:
        blob = client.get_image_set_metadata(datastoreId=info.datastore_id, imageSetId=info.image_set_id, **kwargs)[
            "imageSetMetadataBlob"
        ].read()
        doc = json.loads(gzip.decompress(blob))
        first = next(iter(next(iter(doc["Study"]["Series"].values()))["Instances"].values()))
        return int(first["ImageFrames"][0]["PixelDataChecksumFromBaseToFullResolution"][-1]["Checksum"])

    assert checksum(versionId="1") == info.checksums[0]
    assert checksum(versionId="2") == 12345
    assert checksum() == 12345


def test_unknown_version_is_resource_not_found(client: Any, stored: dict[str, Any]) -> None:
    """GIVEN only version 1 WHEN version 9 is requested THEN ResourceNotFoundException (404)."""
    info = stored["info"]

    with pytest.raises(client.exceptions.ResourceNotFoundException) as caught:
        client.get_image_set_metadata(datastoreId=info.datastore_id, imageSetId=info.image_set_id, versionId="9")

    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


@pytest.mark.parametrize("index", [pytest.param(0, id="int16-bare"), pytest.param(1, id="rgb-jph-boxed")])
def test_frame_round_trip_decodes_to_source(client: Any, stored: dict[str, Any], index: int) -> None:
    """GIVEN stored HTJ2K frames WHEN fetched with GetImageFrame
    THEN contentType is image/jph and the bytes decode to exactly the source array."""
    info, source = stored["info"], stored["arrays"][index]

    response = client.get_image_frame(
        datastoreId=info.datastore_id,
        imageSetId=info.image_set_id,
        imageFrameInformation={"imageFrameId": info.frame_ids[index]},
    )

    blob = response["imageFrameBlob"].read()
    assert response["contentType"] == "image/jph"
    assert blob.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n") == (index == 1)
    decoded = imagecodecs.htj2k_decode(blob, planar=False)
    np.testing.assert_array_equal(decoded, source)
    assert zlib.crc32(np.ascontiguousarray(decoded)) == info.checksums[index]


def test_retained_frame_served_as_stored(client: Any, stored: dict[str, Any]) -> None:
    """GIVEN a retained JPEG frame WHEN fetched THEN the original bytes come back as image/jpeg."""
    info = stored["info"]

    response = client.get_image_frame(
        datastoreId=info.datastore_id,
        imageSetId=info.image_set_id,
        imageFrameInformation={"imageFrameId": info.frame_ids[2]},
    )

    assert response["contentType"] == "image/jpeg"
    assert response["imageFrameBlob"].read() == stored["jpeg"]


def test_get_image_set_properties(client: Any, stored: dict[str, Any]) -> None:
    """GIVEN a stored image set WHEN GetImageSet is called THEN it is ACTIVE version 1 with timestamps."""
    info = stored["info"]

    response = client.get_image_set(datastoreId=info.datastore_id, imageSetId=info.image_set_id)

    assert response["datastoreId"] == info.datastore_id
    assert response["imageSetId"] == info.image_set_id
    assert response["versionId"] == "1"
    assert response["imageSetState"] == "ACTIVE"
    assert response["imageSetWorkflowStatus"] == "CREATED"
    assert response["createdAt"] <= response["updatedAt"]


@pytest.mark.parametrize(
    ("call", "target"),
    [
        pytest.param("metadata", "datastore", id="metadata-unknown-datastore"),
        pytest.param("metadata", "image_set", id="metadata-unknown-image-set"),
        pytest.param("image_set", "image_set", id="get-image-set-unknown-image-set"),
        pytest.param("frame", "frame", id="frame-unknown-frame"),
        pytest.param("frame", "image_set", id="frame-unknown-image-set"),
    ],
)
def test_unknown_resources_are_not_found(client: Any, stored: dict[str, Any], call: str, target: str) -> None:
    """GIVEN well-formed IDs that do not exist WHEN called THEN ResourceNotFoundException."""
    info = stored["info"]
    ids = {
        "datastoreId": ZERO_ID if target == "datastore" else info.datastore_id,
        "imageSetId": ZERO_ID if target == "image_set" else info.image_set_id,
    }
    frame_id = ZERO_ID if target == "frame" else info.frame_ids[0]

    calls = {
        "metadata": lambda: client.get_image_set_metadata(**ids),
        "image_set": lambda: client.get_image_set(**ids),
        "frame": lambda: client.get_image_frame(**ids, imageFrameInformation={"imageFrameId": frame_id}),
    }

    with pytest.raises(client.exceptions.ResourceNotFoundException):
        calls[call]()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("datastoreId", "ABCDEF" + "0" * 26, id="uppercase-datastore"),
        pytest.param("datastoreId", "0" * 31, id="short-datastore"),
        pytest.param("imageSetId", "x/y" + "0" * 29, id="slash-in-image-set"),
        pytest.param("imageSetId", "0" * 33, id="long-image-set"),
        pytest.param("imageFrameId", "not-a-frame-id", id="bad-frame-id"),
    ],
)
def test_malformed_ids_are_validation_errors(client: Any, stored: dict[str, Any], field: str, value: str) -> None:
    """GIVEN an ID outside [0-9a-z]{32} (botocore does not check patterns) WHEN sent
    THEN the server answers ValidationException (400), even when botocore percent-encodes it."""
    info = stored["info"]
    params: dict[str, Any] = {
        "datastoreId": info.datastore_id,
        "imageSetId": info.image_set_id,
        "imageFrameInformation": {"imageFrameId": info.frame_ids[0]},
    }
    if field == "imageFrameId":
        params["imageFrameInformation"] = {"imageFrameId": value}
    else:
        params[field] = value

    with pytest.raises(client.exceptions.ValidationException) as caught:
        client.get_image_frame(**params)

    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_malformed_version_is_validation_error(client: Any, stored: dict[str, Any]) -> None:
    """GIVEN versionId 'latest' WHEN GetImageSetMetadata is called THEN ValidationException."""
    info = stored["info"]

    with pytest.raises(client.exceptions.ValidationException):
        client.get_image_set_metadata(datastoreId=info.datastore_id, imageSetId=info.image_set_id, versionId="latest")


def test_keep_alive_reuses_one_connection(client: Any, stored: dict[str, Any], server: EmulatorServer) -> None:
    """GIVEN one client WHEN it makes 30 sequential calls, some of them errors
    THEN the server accepted a single connection (HTTP/1.1 keep-alive)."""
    info = stored["info"]
    before = server.connections_opened

    for i in range(30):
        frame_id = info.frame_ids[0] if i % 3 else ZERO_ID
        with contextlib.suppress(client.exceptions.ResourceNotFoundException):
            client.get_image_frame(
                datastoreId=info.datastore_id,
                imageSetId=info.image_set_id,
                imageFrameInformation={"imageFrameId": frame_id},
            )["imageFrameBlob"].read()

    assert server.connections_opened - before == 1


def test_unknown_route_is_an_error_not_a_crash(server: EmulatorServer) -> None:
    """GIVEN a path that is no route WHEN requested THEN 404 with an x-amzn-ErrorType header."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)

    connection.request("POST", "/nothing/here", body=b"")
    response = connection.getresponse()
    response.read()
    connection.close()

    assert response.status == 404
    assert response.headers["x-amzn-ErrorType"] == "UnknownOperationException"


def test_endpoint_is_loopback_and_env_is_complete(server: EmulatorServer) -> None:
    """GIVEN a default server THEN it binds loopback and client_env carries endpoint, prefix switch and creds."""
    env = server.client_env()

    assert server.endpoint_url.startswith("http://127.0.0.1:")
    assert env["AWS_ENDPOINT_URL_MEDICAL_IMAGING"] == server.endpoint_url
    assert env["AWS_DISABLE_HOST_PREFIX_INJECTION"] == "true"
    assert env["AWS_EC2_METADATA_DISABLED"] == "true"
    assert env["AWS_ACCESS_KEY_ID"]
    assert env["AWS_SECRET_ACCESS_KEY"]

"""An in-memory FrameSource: HTJ2K frames and their metadata per image set, failures on demand, load counters;
and a stand-in for the ``medical-imaging`` client's GetDatastore, counting its calls."""

from __future__ import annotations

import gzip
import json
import threading
import time
import zlib
from typing import Any

import imagecodecs
import numpy as np
from botocore.exceptions import ClientError

from ahi_verify.ports import FetchedFrame, FrameFetchError, ImageSetError


def make_frames(count: int, size: int = 16, seed: int = 0) -> dict[str, tuple[bytes, int]]:
    """``count`` distinct 16-bit frames: frame ID -> (HTJ2K bytes, IFRC)."""
    frames = {}
    for i in range(count):
        pixels = (np.arange(size * size, dtype=np.uint16).reshape(size, size) + i + 1000 * seed).astype(np.uint16)
        frame_id = f"{seed:08x}{i:024x}"
        frames[frame_id] = (bytes(imagecodecs.htj2k_encode(pixels, reversible=True)), zlib.crc32(pixels.tobytes()))
    return frames


def metadata_for(frames: dict[str, tuple[bytes, int]], size: int = 16) -> dict[str, Any]:
    """A metadata document listing the frames in one instance, in order."""
    image_frames = [
        {"ID": fid, "PixelDataChecksumFromBaseToFullResolution": [{"Width": size, "Height": size, "Checksum": crc}]}
        for fid, (_, crc) in frames.items()
    ]
    return {"Study": {"Series": {"1.2": {"Instances": {"1.2.3": {"ImageFrames": image_frames}}}}}}


class FakeSource:
    """Serves image sets from memory; ``failures`` maps a frame ID to the exception its fetch raises."""

    def __init__(self, frames: dict[str, tuple[bytes, int]] | None = None, metadata: Any = None, delay: float = 0.0):
        self.image_sets: dict[str, tuple[bytes, dict[str, tuple[bytes, int]]]] = {}
        self.default: tuple[bytes, dict[str, tuple[bytes, int]]] | None = None
        if frames is not None:
            self.default = (gzip.compress(json.dumps(metadata or metadata_for(frames)).encode()), frames)
        self.delay = delay
        self.failures: dict[str, Exception] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.fetched: list[str] = []
        self.content_type = "image/jph"
        self.storage_format = "HTJ2K"
        """What :meth:`lossless_storage_format` answers, unless ``datastore_failure`` is set."""
        self.datastore_failure: Exception | None = None
        self.format_lookups: list[str] = []
        self._lock = threading.Lock()

    @property
    def frames(self) -> dict[str, tuple[bytes, int]]:
        assert self.default is not None
        return self.default[1]

    @property
    def metadata(self) -> bytes:
        assert self.default is not None
        return self.default[0]

    @metadata.setter
    def metadata(self, blob: bytes) -> None:
        assert self.default is not None
        self.default = (blob, self.default[1])

    def add_image_set(self, image_set_id: str, frames: dict[str, tuple[bytes, int]]) -> None:
        self.image_sets[image_set_id] = (gzip.compress(json.dumps(metadata_for(frames)).encode()), frames)

    def _lookup(self, image_set_id: str) -> tuple[bytes, dict[str, tuple[bytes, int]]]:
        found = self.image_sets.get(image_set_id, self.default)
        if found is None:
            raise ImageSetError(f"GetImageSetMetadata for image set {image_set_id} failed: ResourceNotFoundException")
        return found

    def get_image_set_metadata(self, datastore_id: str, image_set_id: str, version_id: str | None) -> bytes:
        return self._lookup(image_set_id)[0]

    def lossless_storage_format(self, datastore_id: str) -> str:
        self.format_lookups.append(datastore_id)
        if self.datastore_failure is not None:
            raise self.datastore_failure
        return self.storage_format

    def get_image_frame(self, datastore_id: str, image_set_id: str, image_frame_id: str) -> FetchedFrame:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.fetched.append(image_frame_id)
        try:
            time.sleep(self.delay)
            if image_frame_id in self.failures:
                raise self.failures[image_frame_id]
            return FetchedFrame(self._lookup(image_set_id)[1][image_frame_id][0], self.content_type)
        finally:
            with self._lock:
                self.in_flight -= 1


def client_error(code: str, operation: str, status: int = 400, retries: int = 0) -> ClientError:
    """The ClientError botocore raises for an error response with this code (after ``retries`` retries)."""
    response: Any = {
        "Error": {"Code": code, "Message": f"{code} (fake)"},
        "ResponseMetadata": {"HTTPStatusCode": status, "RetryAttempts": retries},
    }
    return ClientError(response, operation)


class FakeDatastoreClient:
    """The GetDatastore part of a ``medical-imaging`` client: answers ``formats`` (data store ID -> format), or
    raises ``failure`` (a real ClientError), and records every call."""

    def __init__(self, formats: dict[str, str] | None = None, failure: Exception | None = None) -> None:
        self.formats = formats or {}
        self.failure = failure
        self.calls: list[str] = []

    def get_datastore(self, datastoreId: str) -> dict[str, Any]:  # noqa: N803 - boto3's parameter name
        self.calls.append(datastoreId)
        if self.failure is not None:
            raise self.failure
        properties: dict[str, Any] = {"datastoreId": datastoreId, "datastoreStatus": "ACTIVE"}
        if datastoreId in self.formats:
            properties["losslessStorageFormat"] = self.formats[datastoreId]
        return {"datastoreProperties": properties}


__all__ = [
    "FakeDatastoreClient",
    "FakeSource",
    "FrameFetchError",
    "client_error",
    "make_frames",
    "metadata_for",
]

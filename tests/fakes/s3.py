"""An in-memory S3 client with the few calls the job reader makes, raising botocore's real errors."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError


class FakeS3:
    """``get_object`` and the ``list_objects_v2`` paginator over a dict of ``(bucket, key) -> bytes``."""

    def __init__(self, page_size: int = 1000) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.page_size = page_size
        self.get_calls: list[str] = []

    def put(self, uri_bucket: str, key: str, body: bytes) -> None:
        self.objects[(uri_bucket, key)] = body

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803 - boto3's parameter names
        self.get_calls.append(Key)
        if (Bucket, Key) not in self.objects:
            raise ClientError(
                {"Error": {"Code": "NoSuchKey", "Message": "The specified key does not exist."}}, "GetObject"
            )
        body = self.objects[(Bucket, Key)]
        # S3 serves the ETag quoted; for a single-part upload it is the MD5 of the object.
        return {"Body": io.BytesIO(body), "ETag": f'"{hashlib.md5(body, usedforsecurity=False).hexdigest()}"'}

    def get_paginator(self, name: str) -> FakeS3:
        assert name == "list_objects_v2"
        return self

    def paginate(self, Bucket: str, Prefix: str) -> Iterator[dict[str, Any]]:  # noqa: N803
        keys = sorted(k for b, k in self.objects if b == Bucket and k.startswith(Prefix))
        if not keys:
            yield {"KeyCount": 0}
        for start in range(0, len(keys), self.page_size):
            yield {"Contents": [{"Key": k} for k in keys[start : start + self.page_size]]}

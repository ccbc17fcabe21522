"""The adapter to Amazon S3 for the evidence chain (``evidence.EvidenceStore``): one bucket, any prefix.

The digest numbers are claimed with S3 conditional writes (``If-None-Match: *``, which S3 has honoured on
PutObject since 2024): the request fails with 412 when the key exists, so two finalisers can never both
write digest N. Reading and re-hashing streams each object, so a report of hundreds of MB is never held.

Every write carries ``Content-MD5`` (:func:`content_md5`): S3 refuses a write to a bucket with Object Lock
default retention (template parameter ReportRetentionDays) that has neither it nor an ``x-amz-checksum-*``
header, and botocore only adds a checksum by default from 1.36 on; the Lambda runtime's botocore is not
this project's to choose.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError

from .evidence import Fingerprint

_READ_CHUNK = 1024 * 1024
_ABSENT = ("NoSuchKey", "404", "NotFound")
_TAKEN = ("PreconditionFailed", "ConditionalRequestConflict")


def content_md5(body: bytes) -> str:
    """The ``Content-MD5`` of a request body (base64 of the MD5 digest: an integrity header, not security)."""
    return base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3EvidenceStore:
    """The chain's storage in one S3 bucket.

    Parameters
    ----------
    s3 : S3 client
    bucket : str
    """

    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3 = s3
        self._bucket = bucket

    def create(self, key: str, body: bytes) -> bool:
        """PutObject with ``If-None-Match: *``; False when the key exists (412, or 409 for a write in flight)."""
        try:
            self._s3.put_object(
                Bucket=self._bucket,
                Key=key,
                Body=body,
                ContentType="application/json",
                ContentMD5=content_md5(body),
                IfNoneMatch="*",
            )
        except ClientError as exc:
            if _code(exc) in _TAKEN:
                return False
            raise
        return True

    def put(self, key: str, body: bytes) -> None:
        """PutObject."""
        self._s3.put_object(
            Bucket=self._bucket, Key=key, Body=body, ContentType="application/json", ContentMD5=content_md5(body)
        )

    def read(self, key: str) -> bytes | None:
        """GetObject; None when there is no such key."""
        try:
            return bytes(self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read())
        except ClientError as exc:
            if _code(exc) in _ABSENT:
                return None
            raise

    def keys(self, prefix: str) -> Iterator[str]:
        """ListObjectsV2, every page."""
        for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=self._bucket, Prefix=prefix):
            for entry in page.get("Contents", []):
                yield str(entry["Key"])

    def fingerprint(self, key: str) -> Fingerprint | None:
        """GetObject of the current version, hashed as it streams; None when there is no such key."""
        try:
            got = self._s3.get_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in _ABSENT:
                return None
            raise
        digest, size, body = hashlib.sha256(), 0, got["Body"]
        while chunk := body.read(_READ_CHUNK):
            digest.update(chunk)
            size += len(chunk)
        return Fingerprint(key, digest.hexdigest(), size, got.get("VersionId"))

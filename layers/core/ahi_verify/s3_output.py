"""The adapter to Amazon S3 for import job output (``ports.JobOutputStore``): the manifest (retried while it
lags), ndjson lines and source files.

Files under SUCCESS/, FAILURE/ and WARNING/ are listed, not assumed: AWS does not document whether large
jobs split them or whether empty ones are written, so every ``*.ndjson`` under each prefix is read, in
key order, one line at a time (memory stays flat in the number of lines).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .job_output import LineKind
from .locations import MANIFEST_NAME, S3Location
from .ports import JobOutputError, StoredObject
from .report import ObjectEvidence

_READ_CHUNK = 256 * 1024


def _chunks(body: Any) -> Iterator[bytes]:
    while chunk := body.read(_READ_CHUNK):
        yield bytes(chunk)


def split_lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Re-cut a stream of byte chunks into lines (without the newline), scanning each byte once."""
    partial: list[bytes] = []
    for chunk in chunks:
        parts = chunk.split(b"\n")
        if len(parts) == 1:
            partial.append(chunk)
            continue
        partial.append(parts[0])
        yield b"".join(partial)
        yield from parts[1:-1]
        partial = [parts[-1]]
    if any(partial):
        yield b"".join(partial)


class JobOutputReader:
    """Reads one job folder through an S3 client."""

    def __init__(self, s3: Any, sleep: Callable[[float], None] = time.sleep) -> None:
        self._s3 = s3
        self._sleep = sleep

    def read_manifest(self, folder: S3Location, wait_s: float = 10.0, interval_s: float = 1.0) -> StoredObject:
        """Return the manifest and its evidence, retrying ``NoSuchKey`` for up to ``wait_s`` seconds.

        The manifest can appear after the job reports COMPLETED, so absence is retried before it is an
        error.

        Raises
        ------
        JobOutputError
            Still missing after waiting, or any other S3 error.
        """
        key = folder.key + MANIFEST_NAME
        deadline = time.monotonic() + wait_s
        while True:
            try:
                response = self._s3.get_object(Bucket=folder.bucket, Key=key)
                body = bytes(response["Body"].read())
                digest = hashlib.sha256(body).hexdigest()
                return StoredObject(
                    body, ObjectEvidence(folder.child(MANIFEST_NAME).uri, _etag(response), digest, len(body))
                )
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code not in ("NoSuchKey", "404") or time.monotonic() >= deadline:
                    waited = f" after waiting {wait_s:g} s" if code in ("NoSuchKey", "404") else ""
                    raise JobOutputError(f"cannot read s3://{folder.bucket}/{key}{waited}: {code}", code) from exc
            except BotoCoreError as exc:
                raise JobOutputError(f"cannot read s3://{folder.bucket}/{key}: {exc}") from exc
            self._sleep(interval_s)

    def ndjson_keys(self, prefix: S3Location) -> list[str]:
        """Every ``*.ndjson`` key under a prefix, sorted; none when the prefix is absent."""
        keys: list[str] = []
        try:
            for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=prefix.bucket, Prefix=prefix.key):
                keys.extend(o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".ndjson"))
        except (ClientError, BotoCoreError) as exc:
            raise JobOutputError(f"cannot list {prefix.uri}: {exc}", _code(exc)) from exc
        return sorted(keys)

    def lines(
        self, kind: LineKind, prefix: S3Location, on_file: Callable[[ObjectEvidence], None] | None = None
    ) -> Iterator[tuple[str, int, bytes]]:
        """Yield ``(key, line_number, line)`` for every line of every ndjson file under the prefix; each file's
        SHA-256 is computed over its chunks as they stream by and handed to ``on_file`` at its end."""
        for key in self.ndjson_keys(prefix):
            try:
                response = self._s3.get_object(Bucket=prefix.bucket, Key=key)
                digest = _Digest()
                for number, line in enumerate(split_lines(digest.chunks(response["Body"])), start=1):
                    yield key, number, line
                if on_file is not None:
                    uri = S3Location(prefix.bucket, key).uri
                    on_file(ObjectEvidence(uri, _etag(response), digest.sha256.hexdigest(), digest.size))
            except (ClientError, BotoCoreError) as exc:
                raise JobOutputError(
                    f"cannot read {kind.value} file s3://{prefix.bucket}/{key}: {exc}", _code(exc)
                ) from exc

    def read_object(self, location: S3Location) -> bytes:
        """One object's bytes (a source P10 file)."""
        try:
            return bytes(self._s3.get_object(Bucket=location.bucket, Key=location.key)["Body"].read())
        except (ClientError, BotoCoreError) as exc:
            raise JobOutputError(f"cannot read {location.uri}: {exc}", _code(exc)) from exc


class _Digest:
    """The SHA-256 and size of a body, computed while its chunks stream by (each byte is read once)."""

    def __init__(self) -> None:
        self.sha256 = hashlib.sha256()
        self.size = 0

    def chunks(self, body: Any) -> Iterator[bytes]:
        for chunk in _chunks(body):
            self.sha256.update(chunk)
            self.size += len(chunk)
            yield chunk


def _etag(response: Any) -> str | None:
    """S3 serves the ETag in double quotes."""
    etag = response.get("ETag")
    return str(etag).strip('"') if etag else None


def _code(exc: ClientError | BotoCoreError) -> str:
    """S3's error code, or the exception's class name for a transport error."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or type(exc).__name__)
    return type(exc).__name__

"""S3 locations as values: the job output folder, the manifest, source files, reports.

A value of the domain, not of the S3 adapter: the manifest names URIs, the plan and the report keep them.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlparse

MANIFEST_NAME = "job-output-manifest.json"


class LocationError(ValueError):
    """A string that is not an ``s3://bucket/key`` URI; the message names it."""


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key or prefix."""

    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        """Parse ``s3://bucket/key``.

        Raises
        ------
        LocationError
            Naming the URI.
        """
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise LocationError(f"{uri!r} is not an s3://bucket/key URI")
        return cls(parsed.netloc, parsed.path.lstrip("/"))

    @property
    def uri(self) -> str:
        """The ``s3://`` form."""
        return f"s3://{self.bucket}/{self.key}"

    def child(self, name: str) -> S3Location:
        """The object or prefix ``name`` under this prefix."""
        return S3Location(self.bucket, self.key + name)


def job_folder(uri: str) -> S3Location:
    """The job folder from a folder URI or the manifest's URI (a trailing ``/`` is added when missing).

    Raises
    ------
    LocationError
        Not an ``s3://`` URI.
    """
    location = S3Location.parse(uri)
    key = location.key
    if key.endswith(MANIFEST_NAME):
        key = key[: -len(MANIFEST_NAME)]
    elif not key.endswith("/"):
        key += "/"
    return S3Location(location.bucket, key)

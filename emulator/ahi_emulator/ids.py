"""The API's identifier formats, and how the emulator mints and checks identifiers.

One module for them because the models, the metadata builder, the import jobs, persistence and the HTTP
routes all check or mint the same IDs, and none of them should import another just for a pattern.
"""

from __future__ import annotations

import re
import secrets

#: Data store, image set and image frame IDs (botocore's medical-imaging model).
ID_PATTERN = re.compile(r"[0-9a-z]{32}")
#: Image set version IDs.
VERSION_PATTERN = re.compile(r"\d+")
#: Import job IDs.
JOB_ID_PATTERN = re.compile(r"[0-9a-z]{1,32}")


def new_id() -> str:
    """Return a random 32-character ``[0-9a-f]`` identifier (a subset of the API's ``[0-9a-z]{32}``)."""
    return secrets.token_hex(16)


def check_id(value: str, what: str) -> str:
    """Return ``value`` if it is a valid 32-character ID.

    Parameters
    ----------
    value
        The ID to check.
    what
        Its name in the error message.

    Returns
    -------
    str
        ``value``, unchanged.

    Raises
    ------
    ValueError
        When ``value`` does not match ``[0-9a-z]{32}``.
    """
    if not ID_PATTERN.fullmatch(value):
        raise ValueError(f"{what} must match [0-9a-z]{{32}}, got {value!r}")
    return value

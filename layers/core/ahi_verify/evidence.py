"""Tamper-evident evidence: a hash chain of digests over every report written.

Modelled on CloudTrail log file integrity validation. Each finalisation appends one *digest* listing the
documents it wrote (key, S3 version ID, SHA-256, size), and each digest names the previous digest's key and
the SHA-256 of its bytes. Editing a report changes its hash; editing, deleting or reordering a digest breaks
the link its successor holds; deleting a report leaves a listed object missing.

Layout, under the reports prefix (``_`` cannot begin a job ID, so these never meet a job's folder)::

    <reports>/_evidence/digests/000000000001.json   digest 1 (no previous)
    <reports>/_evidence/digests/000000000002.json   digest 2, naming digest 1 and its hash
    <reports>/_evidence/latest.json                 the newest digest's sequence, key and hash (a pointer)

One digest per finalisation, numbered: several finalisers may finish jobs at once, and each claims the
next number with a create-only write (S3 ``If-None-Match: *``). The one that loses reads the winner's
digest, links to it and tries the number after, so the chain stays one line with no lost update, and the
chain needs no lock, table or roll-up. The keys sort by number, so listing finds the newest digest; the
pointer, written after each digest, is what shows that the newest digests were not deleted (a chain of
hashes alone cannot show that its tail was cut). The pointer may lag behind the chain (it is written
second, and two writers may land in either order), never run ahead of it.

This module is pure: storage is the :class:`EvidenceStore` port (S3: :mod:`ahi_verify.s3_evidence`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

FORMAT = "ahi-verify-evidence-digest/1"
POINTER_FORMAT = "ahi-verify-evidence-latest/1"
EVIDENCE_FOLDER = "_evidence/"
REPORT_NAMES = ("report.json", "report.html", "alert.json")
"""The documents a finalisation writes, and the ones an unlisted copy of is reported."""
MAX_RACES = 10_000
"""Numbers a writer tries before giving up: each failed try means another writer appended (or the pointer
lagged), so this only ends a loop that something outside the application keeps feeding."""
_DIGEST_NAME = re.compile(r"([0-9]{12})\.json")


class EvidenceError(Exception):
    """The chain cannot be appended to or read (a malformed pointer, an endless race)."""


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data``, in hex."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Fingerprint:
    """One stored object as it was written (or as it is now).

    Parameters
    ----------
    key : str
    sha256 : str
        Hex SHA-256 of the object's bytes.
    size : int
        Bytes.
    version_id : str or None
        The S3 version written (None in an unversioned bucket).
    """

    key: str
    sha256: str
    size: int
    version_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The digest's entry."""
        return {"key": self.key, "versionId": self.version_id, "sha256": self.sha256, "size": self.size}

    @classmethod
    def from_json(cls, doc: Any) -> Fingerprint:
        """Read a digest's entry; raises KeyError/TypeError/ValueError when it is malformed."""
        version = doc.get("versionId")
        return cls(str(doc["key"]), str(doc["sha256"]), int(doc["size"]), None if version is None else str(version))


@dataclass(frozen=True)
class Link:
    """A digest as its successor names it: its key and the SHA-256 of its bytes."""

    key: str
    sha256: str


@dataclass(frozen=True)
class Digest:
    """One link of the chain: the objects one finalisation wrote, and the digest before it."""

    sequence: int
    created_at: str
    previous: Link | None
    objects: tuple[Fingerprint, ...]

    def to_bytes(self) -> bytes:
        """The stored form (its SHA-256 is what the next digest names)."""
        previous = None if self.previous is None else {"key": self.previous.key, "sha256": self.previous.sha256}
        doc = {
            "format": FORMAT,
            "sequence": self.sequence,
            "createdAt": self.created_at,
            "previous": previous,
            "objects": [o.to_json() for o in self.objects],
        }
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Digest:
        """Parse a stored digest.

        Raises
        ------
        ValueError
            It is not a digest of this format.
        """
        try:
            doc = json.loads(data)
            if doc.get("format") != FORMAT:
                raise ValueError(f"format is {doc.get('format')!r}, not {FORMAT}")
            previous = doc["previous"]
            return cls(
                sequence=int(doc["sequence"]),
                created_at=str(doc["createdAt"]),
                previous=None if previous is None else Link(str(previous["key"]), str(previous["sha256"])),
                objects=tuple(Fingerprint.from_json(o) for o in doc["objects"]),
            )
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a digest: {exc}") from exc


class EvidenceStore(Protocol):
    """Where the chain and the reports are stored (adapter: :class:`ahi_verify.s3_evidence.S3EvidenceStore`)."""

    def create(self, key: str, body: bytes) -> bool:
        """Write ``body`` unless ``key`` exists; False when it exists (someone else wrote it)."""
        ...

    def put(self, key: str, body: bytes) -> None:
        """Write or replace ``key``."""
        ...

    def read(self, key: str) -> bytes | None:
        """The object's bytes; None when there is no such object."""
        ...

    def keys(self, prefix: str) -> Iterator[str]:
        """Every key under ``prefix``, in key order."""
        ...

    def fingerprint(self, key: str) -> Fingerprint | None:
        """The object's current SHA-256 and size (read in full, streamed); None when it does not exist."""
        ...


@dataclass
class Validation:
    """What :meth:`EvidenceChain.validate` found. Keys only: no report content, so no patient data."""

    digests: int = 0
    objects: int = 0
    altered: list[str] = field(default_factory=list)
    """Listed objects whose bytes are not what was written: ``key: why``."""
    missing: list[str] = field(default_factory=list)
    """Listed objects that no longer exist."""
    chain: list[str] = field(default_factory=list)
    """Breaks of the chain: a digest missing, altered, reordered or unreadable; the pointer ahead of it."""
    unlisted: list[str] = field(default_factory=list)
    """Reports no digest lists (written outside the application, or by a finaliser still running)."""

    @property
    def intact(self) -> bool:
        """Nothing altered, missing, broken or unlisted."""
        return not (self.altered or self.missing or self.chain or self.unlisted)

    def to_json(self) -> dict[str, Any]:
        """The CLI's JSON output."""
        return {
            "intact": self.intact,
            "digests": self.digests,
            "objects": self.objects,
            "altered": self.altered,
            "missing": self.missing,
            "chainBroken": self.chain,
            "unlisted": self.unlisted,
        }


class EvidenceChain:
    """Appends to and validates the chain under one reports prefix.

    Parameters
    ----------
    store : EvidenceStore
    prefix : str
        The reports prefix (``""`` or ending in ``/``).
    workers : int
        Objects re-hashed at once by :meth:`validate` (each is a GET).
    """

    def __init__(self, store: EvidenceStore, prefix: str, *, workers: int = 8) -> None:
        self._store = store
        self._prefix = prefix
        self._workers = workers
        self.digest_folder = f"{prefix}{EVIDENCE_FOLDER}digests/"
        self.pointer_key = f"{prefix}{EVIDENCE_FOLDER}latest.json"

    def digest_key(self, sequence: int) -> str:
        """The key of digest ``sequence`` (zero-padded, so that keys sort as numbers)."""
        return f"{self.digest_folder}{sequence:012d}.json"

    def append(self, objects: Iterable[Fingerprint], *, created_at: str) -> Link:
        """Add a digest listing ``objects``; return its link.

        Raises
        ------
        EvidenceError
            No number could be claimed in :data:`MAX_RACES` tries.
        """
        listed = tuple(objects)
        sequence, previous = self._head()
        for _ in range(MAX_RACES):
            sequence += 1
            key = self.digest_key(sequence)
            body = Digest(sequence, created_at, previous, listed).to_bytes()
            if self._store.create(key, body):
                link = Link(key, sha256_hex(body))
                pointer = {"format": POINTER_FORMAT, "sequence": sequence, "key": key, "sha256": link.sha256}
                self._store.put(self.pointer_key, json.dumps(pointer, separators=(",", ":")).encode())
                return link
            # Another finaliser took this number: link to its digest and try the next.
            taken = self._store.read(key)
            if taken is None:  # created and deleted since: the validator reports the gap; try the number again
                sequence -= 1
                continue
            previous = Link(key, sha256_hex(taken))
        raise EvidenceError(f"no digest number could be claimed under {self.digest_folder} in {MAX_RACES} tries")

    def _head(self) -> tuple[int, Link | None]:
        """The newest digest known: from the pointer (re-hashing the digest it names), else by listing."""
        pointer = self._pointer()
        sequence = pointer[0] if pointer else self._listed_max()
        while sequence > 0:
            data = self._store.read(self.digest_key(sequence))
            if data is not None:
                return sequence, Link(self.digest_key(sequence), sha256_hex(data))
            sequence -= 1  # the pointer names a digest that is gone: link to the one before (validation says so)
        return 0, None

    def _pointer(self) -> tuple[int, str] | None:
        data = self._store.read(self.pointer_key)
        if data is None:
            return None
        try:
            doc = json.loads(data)
            return int(doc["sequence"]), str(doc["sha256"])
        except (KeyError, TypeError, ValueError) as exc:
            raise EvidenceError(f"{self.pointer_key} is malformed: {exc}") from exc

    def _listed_max(self) -> int:
        numbers = [int(m.group(1)) for m in map(self._digest_number, self._store.keys(self.digest_folder)) if m]
        return max(numbers, default=0)

    def _digest_number(self, key: str) -> re.Match[str] | None:
        return _DIGEST_NAME.fullmatch(key.removeprefix(self.digest_folder))

    def validate(self) -> Validation:
        """Check every digest's link and every listed object's hash; list reports no digest lists."""
        found = Validation()
        numbered = self._numbered(found)
        try:
            pointer = self._pointer()
        except EvidenceError as exc:
            found.chain.append(str(exc))
            pointer = None
        if pointer is None and numbered:
            found.chain.append(f"{self.pointer_key} is missing: the newest digests cannot be shown to be all there")
        newest = max([*numbered, pointer[0] if pointer else 0], default=0)
        hashes: dict[int, str] = {}
        expected: dict[str, tuple[int, Fingerprint]] = {}  # the newest listing of each key wins (a re-finalisation)
        for sequence in range(1, newest + 1):
            digest = self._read_digest(sequence, sequence in numbered, hashes, found)
            if digest is not None:
                for entry in digest.objects:
                    expected[entry.key] = (sequence, entry)
        if pointer is not None and pointer[0] in hashes and hashes[pointer[0]] != pointer[1]:
            found.chain.append(f"digest {pointer[0]} does not have the hash {self.pointer_key} names: it was replaced")
        self._check_objects(expected, found)
        found.unlisted = [
            key
            for key in self._store.keys(self._prefix)
            if not key.startswith(self._prefix + EVIDENCE_FOLDER)
            and key.rsplit("/", 1)[-1] in REPORT_NAMES
            and key not in expected
        ]
        return found

    def _numbered(self, found: Validation) -> dict[int, str]:
        """The digests listed, by number; anything else in the digest folder is a finding."""
        numbered: dict[int, str] = {}
        for key in self._store.keys(self.digest_folder):
            match = self._digest_number(key)
            if match is None:
                found.chain.append(f"{key}: not a digest name in the digest folder")
            else:
                numbered[int(match.group(1))] = key
        return numbered

    def _read_digest(self, sequence: int, listed: bool, hashes: dict[int, str], found: Validation) -> Digest | None:
        """Read digest ``sequence``, record its hash and check its place and link; None when missing or unreadable."""
        key = self.digest_key(sequence)
        data = self._store.read(key) if listed else None
        if data is None:
            found.chain.append(f"digest {sequence} is missing ({key})")
            return None
        found.digests += 1
        hashes[sequence] = sha256_hex(data)
        try:
            digest = Digest.from_bytes(data)
        except ValueError as exc:
            found.chain.append(f"digest {sequence} is unreadable ({key}): {exc}")
            return None
        if digest.sequence != sequence:
            found.chain.append(f"digest {key} says it is digest {digest.sequence}: the chain is reordered")
        self._check_link(sequence, digest, hashes, found)
        return digest

    def _check_link(self, sequence: int, digest: Digest, hashes: dict[int, str], found: Validation) -> None:
        if sequence == 1:
            if digest.previous is not None:
                found.chain.append(f"digest 1 names a previous digest ({digest.previous.key}): the chain was cut")
            return
        if digest.previous is None:
            found.chain.append(f"digest {sequence} names no previous digest: it was replaced or moved")
        elif digest.previous.key != self.digest_key(sequence - 1):
            found.chain.append(
                f"digest {sequence} names {digest.previous.key} as its previous, not digest {sequence - 1}: "
                "the chain is reordered"
            )
        elif sequence - 1 in hashes and hashes[sequence - 1] != digest.previous.sha256:
            found.chain.append(
                f"digest {sequence - 1} does not have the hash digest {sequence} names: it was altered or replaced"
            )

    def _check_objects(self, expected: dict[str, tuple[int, Fingerprint]], found: Validation) -> None:
        keys = sorted(expected)
        with ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="evidence") as pool:
            now = list(pool.map(self._store.fingerprint, keys))
        for key, current in zip(keys, now, strict=True):
            sequence, written = expected[key]
            found.objects += 1
            if current is None:
                found.missing.append(f"{key} (listed in digest {sequence})")
            elif (current.sha256, current.size) != (written.sha256, written.size):
                found.altered.append(
                    f"{key}: SHA-256 {current.sha256[:16]}..., {current.size} bytes; digest {sequence} lists "
                    f"{written.sha256[:16]}..., {written.size} bytes"
                )

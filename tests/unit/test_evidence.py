"""The evidence chain: digests over every report, each naming the previous one's hash (no AWS)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from ahi_verify.evidence import MAX_RACES, Digest, EvidenceChain, EvidenceError, Fingerprint, Link, sha256_hex

PREFIX = "reports/"
NOW = "2026-12-02T15:00:00+00:00"


class MemoryStore:
    """The EvidenceStore port in a dict, with create-only writes as S3's If-None-Match gives them."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.before_create: list[tuple[str, bytes]] = []
        """Objects another writer creates just before this one's next create (a race, injected)."""

    def create(self, key: str, body: bytes) -> bool:
        while self.before_create:
            other_key, other_body = self.before_create.pop(0)
            self.objects[other_key] = other_body
        if key in self.objects:
            return False
        self.objects[key] = body
        return True

    def put(self, key: str, body: bytes) -> None:
        self.objects[key] = body

    def read(self, key: str) -> bytes | None:
        return self.objects.get(key)

    def keys(self, prefix: str) -> Iterator[str]:
        yield from sorted(k for k in self.objects if k.startswith(prefix))

    def fingerprint(self, key: str) -> Fingerprint | None:
        data = self.objects.get(key)
        return None if data is None else Fingerprint(key, sha256_hex(data), len(data))


def write_report(store: MemoryStore, job: str, body: bytes = b"{}") -> list[Fingerprint]:
    """A finalisation's documents, written to the store; their fingerprints."""
    prints = []
    for name, data in (("report.json", body), ("report.html", b"<html>" + body)):
        key = f"{PREFIX}{job}/{name}"
        store.objects[key] = data
        prints.append(Fingerprint(key, sha256_hex(data), len(data), "v1"))
    return prints


def chain_of(jobs: int) -> tuple[MemoryStore, EvidenceChain]:
    store = MemoryStore()
    chain = EvidenceChain(store, PREFIX, workers=2)
    for n in range(jobs):
        chain.append(write_report(store, f"job{n}", f'{{"n":{n}}}'.encode()), created_at=NOW)
    return store, chain


def test_an_untouched_chain_is_intact() -> None:
    # GIVEN three finalisations recorded
    store, chain = chain_of(3)
    # WHEN the chain is validated
    found = chain.validate()
    # THEN every digest and every report checks out
    assert found.intact, found.to_json()
    assert (found.digests, found.objects) == (3, 6)
    assert sorted(store.keys(chain.digest_folder)) == [chain.digest_key(n) for n in (1, 2, 3)]


def test_each_digest_names_the_previous_digest_and_its_hash() -> None:
    # GIVEN two digests
    store, chain = chain_of(2)
    first, second = (Digest.from_bytes(store.objects[chain.digest_key(n)]) for n in (1, 2))
    # THEN the first names none, the second names the first's key and the SHA-256 of its bytes
    assert first.previous is None
    assert second.previous == Link(chain.digest_key(1), sha256_hex(store.objects[chain.digest_key(1)]))
    assert json.loads(store.objects[chain.pointer_key])["sequence"] == 2


def test_an_altered_report_is_named() -> None:
    # GIVEN an intact chain, and then one report edited
    store, chain = chain_of(3)
    store.objects[f"{PREFIX}job1/report.json"] = b'{"n":1,"verdict":"CLEAN"}'
    # WHEN it is validated
    found = chain.validate()
    # THEN exactly that report is altered, and nothing else is reported
    assert not found.intact
    assert [a.split(":")[0] for a in found.altered] == [f"{PREFIX}job1/report.json"]
    assert "digest 2 lists" in found.altered[0]
    assert (found.missing, found.chain, found.unlisted) == ([], [], [])


def test_a_deleted_report_is_missing() -> None:
    # GIVEN a report deleted
    store, chain = chain_of(2)
    del store.objects[f"{PREFIX}job0/report.html"]
    # WHEN validated THEN it is missing, named with its digest
    found = chain.validate()
    assert found.missing == [f"{PREFIX}job0/report.html (listed in digest 1)"]
    assert (found.altered, found.chain) == ([], [])


def test_a_deleted_digest_breaks_the_chain_and_is_named() -> None:
    # GIVEN a digest in the middle deleted
    store, chain = chain_of(3)
    del store.objects[chain.digest_key(2)]
    # WHEN validated
    found = chain.validate()
    # THEN the gap is named, and job1's reports, which only that digest listed, are unlisted now
    assert found.chain == [f"digest 2 is missing ({chain.digest_key(2)})"]
    assert found.unlisted == [f"{PREFIX}job1/report.html", f"{PREFIX}job1/report.json"]


def test_deleting_the_newest_digest_is_found_by_the_pointer() -> None:
    # GIVEN the newest digest deleted (a chain of hashes alone cannot show its tail was cut)
    store, chain = chain_of(3)
    del store.objects[chain.digest_key(3)]
    # WHEN validated THEN the pointer shows digest 3 existed
    assert chain.validate().chain == [f"digest 3 is missing ({chain.digest_key(3)})"]


def test_deleting_the_newest_digest_and_the_pointer_is_found() -> None:
    # GIVEN the newest digest and the pointer deleted
    store, chain = chain_of(3)
    del store.objects[chain.digest_key(3)], store.objects[chain.pointer_key]
    # WHEN validated THEN the pointer is missing and the reports digest 3 listed are unlisted
    found = chain.validate()
    assert found.chain == [f"{chain.pointer_key} is missing: the newest digests cannot be shown to be all there"]
    assert found.unlisted == [f"{PREFIX}job2/report.html", f"{PREFIX}job2/report.json"]


def test_reordered_digests_are_found() -> None:
    # GIVEN digests 1 and 2 swapped
    store, chain = chain_of(3)
    one, two = chain.digest_key(1), chain.digest_key(2)
    store.objects[one], store.objects[two] = store.objects[two], store.objects[one]
    # WHEN validated
    found = chain.validate()
    # THEN both misplaced digests and the broken links are named; the reports themselves are fine
    assert f"digest {one} says it is digest 2: the chain is reordered" in found.chain
    assert f"digest {two} says it is digest 1: the chain is reordered" in found.chain
    assert "digest 1 names a previous digest" in " ".join(found.chain)
    assert "digest 2 does not have the hash digest 3 names: it was altered or replaced" in found.chain
    assert (found.altered, found.missing) == ([], [])


def test_an_edited_digest_is_found_by_its_successor() -> None:
    # GIVEN digest 1 rewritten so that job0's report matches a forged report
    store, chain = chain_of(2)
    forged = b'{"n":0,"forged":true}'
    store.objects[f"{PREFIX}job0/report.json"] = forged
    digest = Digest.from_bytes(store.objects[chain.digest_key(1)])
    objects = (Fingerprint(f"{PREFIX}job0/report.json", sha256_hex(forged), len(forged)), digest.objects[1])
    store.objects[chain.digest_key(1)] = Digest(1, NOW, None, objects).to_bytes()
    # WHEN validated THEN the report passes its (forged) entry, but digest 2's link shows digest 1 changed
    found = chain.validate()
    assert found.altered == []
    assert found.chain == ["digest 1 does not have the hash digest 2 names: it was altered or replaced"]


def test_a_report_written_outside_the_application_is_unlisted() -> None:
    # GIVEN a report no finalisation recorded
    store, chain = chain_of(1)
    store.objects[f"{PREFIX}stranger/report.json"] = b"{}"
    # WHEN validated THEN it is unlisted, and parts or plans are not expected in digests
    store.objects[f"{PREFIX}job0/parts/a.json"] = b"{}"
    assert chain.validate().unlisted == [f"{PREFIX}stranger/report.json"]


def test_concurrent_finalisers_extend_one_line() -> None:
    # GIVEN a chain of one, and another finaliser that claims number 2 just before this one tries it
    store, chain = chain_of(1)
    rival_prints = write_report(store, "rival")
    rival = Digest(
        2, NOW, Link(chain.digest_key(1), sha256_hex(store.objects[chain.digest_key(1)])), tuple(rival_prints)
    )
    store.before_create.append((chain.digest_key(2), rival.to_bytes()))
    # WHEN this finaliser appends
    link = chain.append(write_report(store, "mine"), created_at=NOW)
    # THEN it lost number 2, took 3 and links to the rival's digest: nothing is lost, the chain is intact
    assert link.key == chain.digest_key(3)
    assert Digest.from_bytes(store.objects[link.key]).previous == Link(
        chain.digest_key(2), sha256_hex(rival.to_bytes())
    )
    assert chain.validate().intact


def test_a_lagging_pointer_is_caught_up() -> None:
    # GIVEN a pointer that still names digest 1 after digest 2 was written (its writer's put landed late)
    store, chain = chain_of(1)
    stale = store.objects[chain.pointer_key]
    chain.append(write_report(store, "job1"), created_at=NOW)
    store.objects[chain.pointer_key] = stale
    # WHEN the next finaliser appends THEN it finds number 2 taken, takes 3, and the chain is intact
    assert chain.append(write_report(store, "job2"), created_at=NOW).key == chain.digest_key(3)
    assert chain.validate().intact


def test_an_endless_race_raises() -> None:
    # GIVEN a store where every number is already taken
    class Taken(MemoryStore):
        def create(self, key: str, body: bytes) -> bool:
            return False

        def read(self, key: str) -> bytes | None:
            return None if key.endswith("latest.json") else b"{}"

    # WHEN appending THEN it gives up after MAX_RACES numbers rather than loop for ever
    with pytest.raises(EvidenceError, match=str(MAX_RACES)):
        EvidenceChain(Taken(), PREFIX).append([], created_at=NOW)


def test_an_empty_bucket_is_intact() -> None:
    # GIVEN nothing written WHEN validated THEN there is nothing to break
    found = EvidenceChain(MemoryStore(), PREFIX).validate()
    assert found.intact
    assert found.digests == 0

"""Coverage-guided fuzzing of the parsers and the codec entry point (``make reliability``).

Each target runs in its own process under atheris (libFuzzer; ``ahi_verify`` is instrumented), seeded with
realistic inputs: the documented manifest and ndjson lines, ``events/*.json``, the shared metadata fixtures
and valid lossless HTJ2K/JPH/J2K frames. The invariants are those of ``tests/fuzz/targets.py``. Without
atheris, a plain random mutator over the same seeds runs instead (and says so).

    python -m bench.fuzz [--runs 10000] [--targets manifest,codec] [--allow-known] [--artifacts build/fuzz]

Prints per target: inputs executed, results, clean errors, distinct outcomes, crashes (known bugs counted
apart), MATCH-for-altered-pixels, seconds. Exits 1 on any crash or invariant violation (``--allow-known``:
only on crashes not yet reported in tests/fuzz/test_known_bugs.py), or when a target hangs or dies.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import json
import random
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TARGETS = ("manifest", "ndjson", "metadata", "events", "work_item", "codec")
PER_INPUT_TIMEOUT_S = 10
RSS_LIMIT_MB = 4096


# ------------------------------------------------------------------------------------------------ child
def _targets_and_seeds() -> dict[str, tuple[Callable[[bytes], str], list[bytes]]]:
    """Import the harness (after instrumentation is set up) and build byte-level targets with seeds."""
    from ahi_verify.job_output import LineKind  # noqa: PLC0415 - imported under atheris instrumentation
    from tests.fuzz import targets as t  # noqa: PLC0415

    cases = t.seed_cases()
    assert len(cases) <= 256

    def codec(data: bytes) -> str:
        if not data:
            return "skip:empty"
        return t.frame_target(cases[data[0] % len(cases)], data[1:])

    kinds = list(LineKind)
    manifest = json.dumps(t.MANIFEST_SEED).encode()
    return {
        "manifest": (t.manifest_target, [manifest, manifest.replace(b'"jobSummary"', b'"jobsummary"'), b"{}"]),
        "ndjson": (t.line_bytes_target, [bytes([kinds.index(kind)]) + line for kind, line in t.LINE_SEEDS]),
        "metadata": (t.metadata_blob_target, t.metadata_blob_seeds()),
        "events": (t.event_bytes_target, [json.dumps(e).encode() for e in t.event_seeds()]),
        "work_item": (t.work_item_bytes_target, [body.encode() for body in t.WORK_ITEM_SEEDS]),
        "codec": (codec, [bytes([i]) + case.blob for i, case in enumerate(cases)]),
    }


class _Stats:
    def __init__(self, out: Path, artifacts: Path) -> None:
        self.out, self.artifacts = out, artifacts
        self.inputs = self.results = self.clean_errors = self.skipped = 0
        self.outcomes: Counter[str] = Counter()
        self.crashes: Counter[str] = Counter()
        self.known: Counter[str] = Counter()
        self.violations: Counter[str] = Counter()
        self.match_altered = 0
        self.started = time.monotonic()

    def save(self, kind: str, data: bytes) -> str:
        self.artifacts.mkdir(parents=True, exist_ok=True)
        path = self.artifacts / f"{kind}-{hashlib.sha1(data).hexdigest()[:16]}"  # noqa: S324 - a file name
        path.write_bytes(data)
        return str(path)

    def dump(self) -> None:
        self.out.write_text(
            json.dumps(
                {
                    "inputs": self.inputs,
                    "results": self.results,
                    "clean_errors": self.clean_errors,
                    "skipped": self.skipped,
                    "distinct_outcomes": len(self.outcomes),
                    "crashes": dict(self.crashes),
                    "known": dict(self.known),
                    "violations": dict(self.violations),
                    "match_altered": self.match_altered,
                    "seconds": round(time.monotonic() - self.started, 1),
                }
            )
        )


def _one(stats: _Stats, run: Callable[[bytes], str], data: bytes) -> None:
    from tests.fuzz import targets as t  # noqa: PLC0415 - already imported (instrumented) by then

    stats.inputs += 1
    try:
        outcome = run(data)
    except t.InvariantError as exc:
        if t.MATCH_ALTERED in str(exc):
            stats.match_altered += 1
        key = str(exc).split(":", 1)[0][:80]
        if not stats.violations[key]:
            print(f"INVARIANT {key}: saved {stats.save('violation', data)}", file=sys.stderr)
        stats.violations[key] += 1
    except Exception as exc:
        bug = t.known_bug(exc)
        if bug is not None:
            stats.known[bug] += 1
        else:
            where = traceback.extract_tb(exc.__traceback__)[-1]
            key = f"{type(exc).__name__} at {Path(where.filename).name}:{where.lineno}"
            if not stats.crashes[key]:
                print(f"CRASH {key}: saved {stats.save('crash', data)}", file=sys.stderr)
                traceback.print_exc()
            stats.crashes[key] += 1
    else:
        if outcome.startswith("ok:"):
            stats.results += 1
        elif outcome.startswith("err:"):
            stats.clean_errors += 1
        else:
            stats.skipped += 1
        stats.outcomes[outcome] += 1
    if stats.inputs % 500 == 0:
        stats.dump()


def _random_mutations(seeds: list[bytes], runs: int, rng: random.Random) -> Any:
    """The fallback engine: seeds, then byte flips, insertions, deletions, truncations and splices."""
    yield from seeds
    for _ in range(max(0, runs - len(seeds))):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            pos = rng.randint(0, len(data))
            op = rng.randrange(6)
            if op == 0 and pos < len(data):
                data[pos] ^= 1 << rng.randrange(8)
            elif op == 1:
                data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
            elif op == 2:
                del data[pos : pos + rng.randint(1, 16)]
            elif op == 3:
                del data[pos:]
            elif op == 4 and pos < len(data):
                data[pos] = rng.choice([0, 0xFF, 0x7F, 0x80, ord('"'), ord("["), ord("{"), ord("9")])
            else:
                other = rng.choice(seeds)
                start = rng.randint(0, len(other))
                data[pos:pos] = other[start : start + rng.randint(1, 64)]
        yield bytes(data)


_JSON_TOKENS = [
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b"null",
    b"true",
    b"false",
    b"-1",
    b"0",
    b"1e400",
    b'""',
    b"4294967296",
]
# JPEG 2000 markers (SOC, SIZ, CAP, COD, SOT, SOD, EOC) and box types.
_J2K_TOKENS = [
    b"\xff\x4f",
    b"\xff\x51",
    b"\xff\x50",
    b"\xff\x52",
    b"\xff\x90",
    b"\xff\x93",
    b"\xff\xd9",
    b"jp2c",
    b"jp2h",
]


def _tokens(seeds: list[bytes]) -> set[bytes]:
    """libFuzzer dictionary: JSON structure, the seeds' quoted keys and strings, codestream markers."""
    found = set(_JSON_TOKENS + _J2K_TOKENS)
    for seed in seeds:
        found.update(m for m in re.findall(rb'"[A-Za-z0-9_:.\-]{1,40}"', seed))
    return found


def _escape(token: bytes) -> str:
    return "".join(chr(b) if 0x20 <= b < 0x7F and b not in b'"\\' else f"\\x{b:02x}" for b in token)


def child(target: str, runs: int, out: Path, artifacts: Path, workdir: Path) -> int:
    """Fuzz one target in this process; statistics go to ``out`` (also on libFuzzer's exit)."""
    try:
        import atheris  # noqa: PLC0415 - optional: only `make reliability` installs it
    except ImportError:
        atheris = None
    if atheris is not None:
        with atheris.instrument_imports(include=["ahi_verify"]):
            available = _targets_and_seeds()
    else:
        available = _targets_and_seeds()
    run, seeds = available[target]
    stats = _Stats(out, artifacts / target)
    atexit.register(stats.dump)
    if atheris is None:
        for data in _random_mutations(seeds, runs, random.Random(target)):
            _one(stats, run, data)
        stats.dump()
        return 0
    corpus = workdir / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(seeds):
        (corpus / f"seed-{i:03d}").write_bytes(seed)
    max_len = max(len(s) for s in seeds) + 256
    dictionary = workdir / "tokens.dict"
    dictionary.write_text("\n".join(f'"{_escape(token)}"' for token in sorted(_tokens(seeds))) + "\n")

    def test_one_input(data: bytes) -> None:
        _one(stats, run, data)

    atheris.Setup(
        [
            sys.argv[0],
            f"-runs={runs}",
            f"-timeout={PER_INPUT_TIMEOUT_S}",
            f"-rss_limit_mb={RSS_LIMIT_MB}",
            f"-max_len={max_len}",
            f"-artifact_prefix={workdir}/",
            f"-dict={dictionary}",
            "-seed=20260314",
            str(corpus),
        ],
        test_one_input,
    )
    atheris.Fuzz()
    return 0


# ----------------------------------------------------------------------------------------------- parent
def _engine() -> str:
    try:
        import atheris  # noqa: PLC0415 - optional
    except ImportError:
        return "random mutation (atheris not installed)"
    version = getattr(atheris, "__version__", None)
    if version is None:
        from importlib.metadata import version as dist_version  # noqa: PLC0415

        version = dist_version("atheris")
    return f"atheris {version}"


def parent(args: argparse.Namespace) -> int:
    selected = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = sorted(set(selected) - set(TARGETS))
    if unknown:
        print(f"unknown targets: {', '.join(unknown)} (choose from {', '.join(TARGETS)})", file=sys.stderr)
        return 2
    artifacts = Path(args.artifacts).resolve()
    print(f"engine: {_engine()}; {args.runs} inputs per target; failing inputs are saved under {artifacts}")
    rows, failed = [], False
    with tempfile.TemporaryDirectory(prefix="ahi-fuzz-") as tmp:
        for target in selected:
            workdir = Path(tmp) / target
            workdir.mkdir()
            out, log = workdir / "stats.json", workdir / "log.txt"
            cmd = [sys.executable, "-m", "bench.fuzz", "--child", target, "--runs", str(args.runs)]
            cmd += ["--out", str(out), "--artifacts", str(artifacts), "--workdir", str(workdir)]
            started = time.monotonic()
            with log.open("wb") as sink:
                code = subprocess.run(cmd, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT, check=False).returncode
            seconds = time.monotonic() - started
            stats = json.loads(out.read_text()) if out.exists() else {}
            crashes = sum(stats.get("crashes", {}).values())
            known = sum(stats.get("known", {}).values())
            violations = sum(stats.get("violations", {}).values())
            died = code != 0
            bad = died or crashes > 0 or violations > 0 or (known > 0 and not args.allow_known)
            failed = failed or bad
            rows.append((target, stats, crashes, known, violations, seconds, code))
            if bad:
                tail = log.read_text(errors="replace").splitlines()[-40:]
                print(f"--- {target}: exit code {code}; last lines of its log:", *tail, sep="\n", file=sys.stderr)
                for kind in ("crashes", "known", "violations"):
                    for key, count in stats.get(kind, {}).items():
                        print(f"    {kind}: {count} x {key}", file=sys.stderr)
    header = ("target", "inputs", "results", "clean errors", "outcomes", "crashes", "known bugs", "violations")
    header += ("MATCH altered", "seconds", "exit")
    print(" | ".join(header))
    for target, stats, crashes, known, violations, seconds, code in rows:
        cells = (target, stats.get("inputs", 0), stats.get("results", 0), stats.get("clean_errors", 0))
        cells += (stats.get("distinct_outcomes", 0), crashes, known, violations, stats.get("match_altered", 0))
        cells += (f"{seconds:.1f}", code)
        print(" | ".join(str(c) for c in cells))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10_000, help="inputs per target (default 10000)")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated subset of " + ", ".join(TARGETS))
    parser.add_argument("--allow-known", action="store_true", help="do not fail on bugs already pinned by xfail tests")
    parser.add_argument("--artifacts", default=str(REPO / "build" / "fuzz"), help="where failing inputs are saved")
    parser.add_argument("--child", choices=TARGETS, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, args.runs, Path(args.out), Path(args.artifacts), Path(args.workdir))
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())

"""``ahi-verify``: verify HealthImaging frames from the command line.

Exit codes: 0 every frame matched; 1 at least one frame mismatched; 3 nothing mismatched but something
could not be verified (a frame ERROR, or the image set itself); 2 usage errors.
Output never contains patient data: only data store, image set and frame IDs, DICOM UIDs and checksums.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from typing import TextIO

from .frame_check import FrameResult, Status
from .healthimaging import DEFAULT_MAX_ATTEMPTS, HealthImagingSource, make_client
from .image_set import ImageSetError, ImageSetResult, VerifyOptions, prefer_io_threads, verify_image_set

EXIT_OK, EXIT_MISMATCH, EXIT_USAGE, EXIT_UNVERIFIED = 0, 1, 2, 3
_ID = re.compile(r"^[0-9a-z]{32}$")


def _service_id(value: str) -> str:
    if not _ID.match(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a HealthImaging ID (32 characters, 0-9 and a-z)")
    return value


def _version(value: str) -> str:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not an image set version (a positive integer)")
    return value


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive integer")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="ahi-verify",
        description="Verify AWS HealthImaging pixel data checksums (IFRC) frame by frame.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    image_set = commands.add_parser("image-set", help="verify every frame of one image set")
    image_set.add_argument("datastore_id", type=_service_id, metavar="DATASTORE_ID")
    image_set.add_argument("image_set_id", type=_service_id, metavar="IMAGE_SET_ID")
    image_set.add_argument("--version", type=_version, help="image set version to verify (default: latest)")
    image_set.add_argument("--format", choices=("table", "json"), default="table")
    image_set.add_argument(
        "--concurrency",
        type=_positive,
        default=VerifyOptions().fetch_concurrency,
        help="frames fetched at once",
    )
    image_set.add_argument(
        "--max-attempts",
        type=_positive,
        default=None,
        help="attempts per request, the first included (default 10)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code."""
    args = build_parser().parse_args(argv)
    prefer_io_threads()
    client = make_client(max_pool_connections=args.concurrency, max_attempts=args.max_attempts or DEFAULT_MAX_ATTEMPTS)
    progress = _Progress(sys.stderr)
    try:
        result = verify_image_set(
            HealthImagingSource(client),
            args.datastore_id,
            args.image_set_id,
            version_id=args.version,
            options=VerifyOptions(fetch_concurrency=args.concurrency),
            on_result=progress.update,
        )
    except ImageSetError as exc:
        progress.finish()
        print(f"ahi-verify: image set could not be verified: {exc}", file=sys.stderr)
        if args.format == "json":
            print(json.dumps(_error_document(args.datastore_id, args.image_set_id, str(exc)), indent=2))
        return EXIT_UNVERIFIED
    progress.finish()
    if args.format == "json":
        print(json.dumps(image_set_document(result), indent=2))
    else:
        print_table(result, sys.stdout)
    return exit_code(result)


def exit_code(result: ImageSetResult) -> int:
    """0 all MATCH, 1 any MISMATCH, 3 otherwise (errors, or no frames at all)."""
    if result.count(Status.MISMATCH):
        return EXIT_MISMATCH
    return EXIT_OK if result.all_match else EXIT_UNVERIFIED


def summary(result: ImageSetResult) -> dict[str, int]:
    """Frame counts by status."""
    return {
        "total": len(result.results),
        "match": result.count(Status.MATCH),
        "mismatch": result.count(Status.MISMATCH),
        "error": result.count(Status.ERROR),
    }


def image_set_document(result: ImageSetResult) -> dict[str, object]:
    """The ``--format json`` document."""
    return {
        "datastoreId": result.datastore_id,
        "imageSetId": result.image_set_id,
        "versionId": result.version_id,
        "frames": [r.to_json() for r in result.results],
        "summary": summary(result),
    }


def _error_document(datastore_id: str, image_set_id: str, message: str) -> dict[str, object]:
    return {
        "datastoreId": datastore_id,
        "imageSetId": image_set_id,
        "error": message,
        "frames": [],
        "summary": {"total": 0, "match": 0, "mismatch": 0, "error": 0},
    }


def print_table(result: ImageSetResult, out: TextIO) -> None:
    """Human-readable report: the frames that did not match first, then the counts."""
    problems = [r for r in result.results if r.status is not Status.MATCH]
    print(f"Image set {result.image_set_id} (data store {result.datastore_id})", file=out)
    if problems:
        print(f"{'status':<9} {'frame id':<32} {'#':>4} {'expected':>10} {'actual':>10}  reason", file=out)
        for r in problems:
            print(_row(r), file=out)
    counts = summary(result)
    print(
        f"{counts['total']} frames: {counts['match']} match, {counts['mismatch']} mismatch, {counts['error']} error",
        file=out,
    )


def _row(r: FrameResult) -> str:
    def num(value: int | None) -> str:
        return "-" if value is None else str(value)

    why = r.reason.value if r.reason else ""
    if r.detail:
        why = f"{why}: {r.detail}"
    frame_id = r.frame.image_frame_id or "(no id)"
    return (
        f"{r.status.value:<9} {frame_id:<32} {r.frame.frame_number:>4} {num(r.expected):>10} {num(r.actual):>10}  {why}"
    )


class _Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._enabled = stream.isatty()
        self._done = 0

    def update(self, result: FrameResult, total: int) -> None:
        self._done += 1
        if not self._enabled or (self._done % 16 and self._done != total):
            return
        width = 30
        filled = width * self._done // max(total, 1)
        self._stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self._done}/{total} frames")
        self._stream.flush()

    def finish(self) -> None:
        if self._enabled and self._done:
            self._stream.write("\n")
            self._stream.flush()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

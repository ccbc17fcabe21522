"""Command line: ``ahi-emulator seed`` writes a dataset, ``ahi-emulator serve`` serves one, ``ahi-emulator
viewer`` loads one with a viewer's frame requests.

``serve`` answers the runtime routes and the DICOM import job routes. Import jobs read and write S3 through a
boto3 client built from the server process's environment when each job starts (``AWS_ENDPOINT_URL_S3`` or
``AWS_ENDPOINT_URL``, credentials, region), e.g. a moto server. It enforces the service's default request
quotas unless told otherwise: ``--quota OPERATION=RATE[:BURST]`` (repeatable; BURST defaults to twice RATE,
the ratio of every documented default) changes one operation's, ``--no-quotas`` makes every operation
unlimited first, so ``--no-quotas --quota GetImageFrame=100`` throttles frames only.

``viewer`` (:mod:`ahi_emulator.viewer`) asks a running server for frames at a set rate, open-loop, with a
client of its own, and prints what happened as JSON: how much of a shared quota a viewer leaves to others.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from .emulator import Emulator
from .lossy import DECODERS, LossyJpegDecoding
from .models import LOSSLESS_STORAGE_FORMATS
from .quotas import NO_QUOTAS, Quota, parse_quota
from .seed import seed_emulator
from .server import EmulatorServer
from .viewer import Viewer, frames_from_emulator


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ahi-emulator",
        description="Local AWS HealthImaging emulator (metadata, frames and DICOM import jobs).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve a dataset written by 'seed' or Emulator.save()")
    serve.add_argument("--data", required=True, type=Path, help="dataset directory")
    serve.add_argument(
        "--datastore-id",
        help="create this data store (32 characters [0-9a-z]) if it does not exist; then --data may be a "
        "directory without a dataset, and the emulator starts empty",
    )
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    serve.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one (default)")
    serve.add_argument("--url-file", type=Path, help="write the endpoint URL here once serving")
    serve.add_argument(
        "--quota",
        action="append",
        default=[],
        type=_quota_argument,
        metavar="OPERATION=RATE[:BURST]",
        help="throttle OPERATION at RATE requests/s with a bucket of BURST (default 2 x RATE) instead of the "
        "service's default quota; repeatable",
    )
    serve.add_argument(
        "--lossy-jpeg-decoder",
        choices=DECODERS,
        default="pydicom",
        help="how import jobs decode JPEG Extended (.51) sources (default: pydicom, as the verifier does first)",
    )
    serve.add_argument(
        "--lossy-jpeg-perturb",
        type=int,
        default=0,
        metavar="N",
        help="add N to every 97th sample of a decoded JPEG Extended source: a decoder rounding differently "
        "when 1, an import changing the pixels when larger (default 0)",
    )
    serve.add_argument(
        "--no-quotas",
        action="store_true",
        help="make every operation unlimited (then --quota sets the ones to throttle)",
    )
    serve.add_argument(
        "--verify-signatures",
        action="store_true",
        default=None,
        help="refuse (403) every service request whose SigV4 signature does not verify against the known "
        "credentials (testing/testing); default: on when AHI_EMULATOR_VERIFY_SIGV4=1",
    )

    viewer = commands.add_parser(
        "viewer",
        help="ask a running server for frames at a set rate (open-loop, no retries) and print a JSON report",
    )
    viewer.add_argument(
        "--endpoint",
        default=os.environ.get("AWS_ENDPOINT_URL_MEDICAL_IMAGING"),
        help="the server's URL (default: $AWS_ENDPOINT_URL_MEDICAL_IMAGING)",
    )
    viewer.add_argument("--datastore-id", required=True, help="ask for this data store's frames")
    viewer.add_argument("--image-set-id", help="only this image set's frames (default: every image set)")
    viewer.add_argument("--rate", type=float, default=200.0, help="GetImageFrame requests per second (default 200)")
    viewer.add_argument("--duration", type=float, default=10.0, help="seconds to send for (default 10)")
    viewer.add_argument("--threads", type=int, default=16, help="requests in flight at most (default 16)")

    seed = commands.add_parser("seed", help="write a small synthetic dataset")
    seed.add_argument("--data", required=True, type=Path, help="dataset directory (created)")
    seed.add_argument("--frames", type=int, default=2, help="frames per series (default 2)")
    seed.add_argument("--rows", type=int, default=256, help="rows per frame (default 256)")
    seed.add_argument("--cols", type=int, default=256, help="columns per frame (default 256)")
    seed.add_argument("--seed", type=int, default=0, help="random seed of the pixel data")
    seed.add_argument(
        "--lossless-storage-format",
        choices=LOSSLESS_STORAGE_FORMATS,
        default="HTJ2K",
        help="the data store's losslessStorageFormat (default HTJ2K; JPEG_2000_LOSSLESS stores frames as .90)",
    )
    return parser


def _quota_argument(text: str) -> tuple[str, Quota]:
    try:
        return parse_quota(text)
    except ValueError as exc:
        # argparse turns this into "argument --quota: ..." and exit status 2, like any other bad option.
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _serve_quotas(args: argparse.Namespace) -> dict[str, Quota | None]:
    quotas: dict[str, Quota | None] = dict(NO_QUOTAS) if args.no_quotas else {}
    quotas.update(args.quota)  # a later --quota for the same operation wins
    return quotas


def _describe_quotas(quotas: dict[str, Quota | None]) -> str:
    return ", ".join(
        f"{op} {'unlimited' if q is None else f'{q.rate:g}/s burst {q.burst}'}" for op, q in quotas.items()
    )


def _write_atomically(path: Path, text: str) -> None:
    # A script polling for the file must never read it half-written.
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def _served_emulator(args: argparse.Namespace) -> Emulator:
    """The emulator ``serve`` runs: loaded (or empty for ``--datastore-id``), with the options applied."""
    quotas = _serve_quotas(args)
    if args.datastore_id is not None and not (args.data / "index.json").is_file():
        emulator = Emulator(quotas=quotas)
    else:
        emulator = Emulator.load(args.data, quotas=quotas)
    if args.datastore_id is not None and args.datastore_id not in emulator.datastore_ids():
        emulator.create_datastore(args.datastore_id)
    if args.verify_signatures:
        emulator.verify_signatures = True
    if args.lossy_jpeg_decoder != "pydicom" or args.lossy_jpeg_perturb:
        emulator.lossy_jpeg_decoding = LossyJpegDecoding(args.lossy_jpeg_decoder, args.lossy_jpeg_perturb)
    return emulator


def _serve(args: argparse.Namespace) -> int:
    emulator = _served_emulator(args)
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with EmulatorServer(emulator, host=args.host, port=args.port) as server:
            count = len(emulator.image_sets())
            print(f"ahi-emulator serving {count} image set(s) at {server.endpoint_url}", flush=True)
            print(f"data stores: {' '.join(emulator.datastore_ids()) or '(none)'}", flush=True)
            print(f"quotas: {_describe_quotas(emulator.quotas())}", flush=True)
            print(f"signatures: {'verified' if server.app.verify_signatures else 'not checked'}", flush=True)
            print("Point boto3 at it with:", flush=True)
            for key, value in server.client_env().items():
                print(f"export {key}={value}", flush=True)
            if args.url_file is not None:
                _write_atomically(args.url_file, server.endpoint_url + "\n")
            while not stop.wait(0.5):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("ahi-emulator stopped", flush=True)
    return 0


def _view(args: argparse.Namespace) -> int:
    if not args.endpoint:
        raise ValueError("no endpoint: give --endpoint or set AWS_ENDPOINT_URL_MEDICAL_IMAGING")
    frames = frames_from_emulator(args.endpoint, args.datastore_id, args.image_set_id)
    if not frames:
        raise ValueError(f"the server lists no frames in data store {args.datastore_id}")
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with Viewer(frames, rate=args.rate, threads=args.threads, endpoint_url=args.endpoint) as viewer:
            report = viewer.run(args.duration, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if report.fell_behind:
        print(
            f"ahi-emulator viewer: fell behind: {report.late} of {report.requested} requests went out late "
            f"(at most {report.max_lag_s:.3f} s); try more --threads",
            file=sys.stderr,
        )
    print(json.dumps(report.to_json(), indent=2), flush=True)
    return 0


def _seed(args: argparse.Namespace) -> int:
    emulator = Emulator()
    infos = seed_emulator(
        emulator,
        frames=args.frames,
        rows=args.rows,
        cols=args.cols,
        seed=args.seed,
        lossless_storage_format=args.lossless_storage_format,
    )
    emulator.save(args.data)
    for info in infos:
        print(f"datastore {info.datastore_id} image set {info.image_set_id}: {len(info.frame_ids)} frame(s)")
    print(f"wrote {args.data}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ahi-emulator`` command.

    Parameters
    ----------
    argv
        Arguments without the program name; ``sys.argv[1:]`` when ``None``.

    Returns
    -------
    int
        Process exit status.
    """
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "viewer":
            return _view(args)
        return _seed(args)
    except (ValueError, OSError) as exc:
        print(f"ahi-emulator: error: {exc}", file=sys.stderr)
        return 2

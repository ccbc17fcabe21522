"""A second decoder for the source IFRC: the same frames decoded by another library, hashed in the IFRC layout.

* GDCM (``python-gdcm``, installed by ``make corpus`` into ``build/corpus-cache/gdcm``) for native, deflated,
  big-endian, JPEG lossless and JPEG-LS sources and JPEG 2000 lossless. It runs in a subprocess with that
  folder on its path, so the test process never imports GDCM and pydicom never picks it as a pixel backend.
* pydicom's own pure-Python RLE decoder for RLE Lossless (pydicom prefers pylibjpeg-rle when installed).
* OpenJPH (``imagecodecs.htj2k_decode``) for HTJ2K lossless (pydicom decodes it with OpenJPEG).

The IFRC layout (HealthImaging's, see ``ahi_verify.source_check``) is restated here on purpose: it is a
second opinion, so it shares no code with the verifier. Output carries frame checksums and reasons only,
never header values.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[2]
GDCM_DIR = ROOT / "build" / "corpus-cache" / "gdcm"

RLE = "1.2.840.10008.1.2.5"
HTJ2K_LOSSLESS = frozenset({"1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202"})
#: Lossless syntaxes whose decoded values every conforming decoder must agree on (JPEG-LS near-lossless
#: decoding is exactly specified too).
GDCM_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.1.99",
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.90",
    }
)


def ifrc(values: npt.NDArray[Any], bits_allocated: int, bits_stored: int, signed: bool) -> int:
    """CRC-32 of one frame in the IFRC layout: interleaved samples, the BitsAllocated container,
    little-endian, bits above BitsStored cleared (unsigned) or sign-extended (signed)."""
    size = bits_allocated // 8
    wide = values.astype(np.int64) & ((1 << bits_stored) - 1)
    if signed:
        wide = np.where(wide >= 1 << (bits_stored - 1), wide - (1 << bits_stored), wide)
    container = np.dtype(f"<{'i' if signed else 'u'}{size}")
    return zlib.crc32(np.ascontiguousarray(wide.astype(container)).tobytes())


def second_decoder_for(syntax: str, ds: Any) -> str | None:
    """The second decoder this file gets, or None (with the caller giving the reason)."""
    if int(ds.get("BitsAllocated") or 0) == 1 or "PixelData" not in ds:
        return None
    if syntax == RLE:
        return "pydicom-rle"
    if syntax in HTJ2K_LOSSLESS:
        return "OpenJPH"
    if syntax in GDCM_SYNTAXES:
        return "GDCM"
    return None


def _header(ds: Any) -> tuple[int, int, bool]:
    allocated = int(ds.BitsAllocated)
    return allocated, int(ds.get("BitsStored") or allocated), int(ds.get("PixelRepresentation") or 0) == 1


def rle_ifrcs(data: bytes) -> list[int]:
    import pydicom  # noqa: PLC0415
    from pydicom.pixels.utils import iter_pixels  # noqa: PLC0415

    ds = pydicom.dcmread(io.BytesIO(data))
    return [ifrc(f, *_header(ds)) for f in iter_pixels(ds, raw=True, decoding_plugin="pydicom")]


def openjph_ifrcs(data: bytes) -> list[int]:
    import imagecodecs  # noqa: PLC0415
    import pydicom  # noqa: PLC0415
    from pydicom.encaps import generate_frames  # noqa: PLC0415

    ds = pydicom.dcmread(io.BytesIO(data))
    frames = generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames") or 1))
    return [ifrc(np.asarray(imagecodecs.htj2k_decode(f)), *_header(ds)) for f in frames]


def gdcm_available() -> bool:
    return (GDCM_DIR / "gdcm.py").is_file()


def gdcm_ifrcs(paths: list[Path]) -> dict[str, list[int] | str]:
    """Frame IFRCs by GDCM for each file (by its path string), or the reason GDCM could not decode it.

    The child reports one JSON line a file as it goes; when GDCM aborts the process (it does on some
    malformed data), the file it was on is recorded as a crash and a new child takes the rest.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(GDCM_DIR), str(ROOT)])}
    todo = [str(p) for p in paths]
    decoded: dict[str, list[int] | str] = {}
    while todo:
        result = subprocess.run(
            [sys.executable, "-m", "tests.corpus.second_decoder", *todo],
            env=env,
            capture_output=True,
            check=False,
            text=True,
            timeout=600,
        )
        for line in result.stdout.splitlines():
            path, value = json.loads(line)
            decoded[path] = value
        todo = [p for p in todo if p not in decoded]
        if todo and result.returncode != 0:
            decoded[todo.pop(0)] = f"GDCM crashed (exit {result.returncode})"
        elif todo:
            raise RuntimeError(f"the GDCM child stopped without reporting {len(todo)} file(s)")
    return decoded


_GDCM_DTYPES = {(8, 0): np.uint8, (8, 1): np.int8, (16, 0): np.uint16, (16, 1): np.int16}
_GDCM_DTYPES |= {(32, 0): np.uint32, (32, 1): np.int32}


def _gdcm_one(path: str) -> list[int] | str:
    import gdcm  # type: ignore[import-not-found]  # noqa: PLC0415 - exists only in the subprocess

    reader = gdcm.ImageReader()
    reader.SetFileName(path)
    if not reader.Read():
        return "GDCM cannot read the file"
    image = reader.GetImage()
    pf = image.GetPixelFormat()
    allocated, stored = int(pf.GetBitsAllocated()), int(pf.GetBitsStored())
    signed, samples = int(pf.GetPixelRepresentation()) == 1, int(pf.GetSamplesPerPixel())
    dims = [int(image.GetDimension(i)) for i in range(image.GetNumberOfDimensions())]
    cols, rows, frames = dims[0], dims[1], dims[2] if len(dims) > 2 else 1
    dtype = _GDCM_DTYPES.get((allocated, int(signed)))
    if dtype is None:
        return f"GDCM gives {allocated}-bit samples"
    buffer = image.GetBuffer()
    raw = buffer.encode("utf-8", errors="surrogateescape") if isinstance(buffer, str) else bytes(buffer)
    expected = rows * cols * samples * frames * allocated // 8
    if len(raw) != expected:
        return f"GDCM gives {len(raw)} bytes, not {expected}"
    arr = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
    if samples > 1 and int(image.GetPlanarConfiguration()) == 1:
        arr = arr.reshape(frames, samples, rows, cols).transpose(0, 2, 3, 1)
    arr = arr.reshape(frames, rows, cols, samples)
    return [ifrc(f, allocated, stored, signed) for f in arr]


def main(paths: list[str]) -> None:
    for path in paths:
        value: list[int] | str
        try:
            value = _gdcm_one(path)
        except Exception as exc:  # any failure is a reason, never a crash of the whole batch
            value = f"GDCM failed ({type(exc).__name__})"
        print(json.dumps([path, value]), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

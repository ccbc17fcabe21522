"""How far apart the decoders the three-way check tries on a lossy source are, on real lossy files.

``python -m bench.lossy_decoders`` decodes every frame of the lossy files bundled with pydicom (and one lossy
HTJ2K frame encoded here from a real CT image, as pydicom bundles none) with every decoder of
``source_check.LOSSY_SOURCE_DECODERS``, and prints, per file and pair of decoders, the largest absolute sample
difference and how many samples differ. Exits 1 when a pair differs by more than ``LOSSY_DECODER_TOLERANCE``:
then the tolerance would call a correct import a mismatch.
"""

from __future__ import annotations

import io
import itertools
import sys
from typing import Any

import imagecodecs
import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate

from ahi_verify.source_check import LOSSY_DECODER_TOLERANCE, lossy_decodings, normalised_source_pixels

FILES = (
    "JPGExtended.dcm",  # .51, 12-bit greyscale
    "JPEG-lossy.dcm",  # .51, 12-bit greyscale (pydicom's plugin refuses it)
    "SC_rgb_jpeg_lossy_gdcm.dcm",  # .50 YBR_FULL
    "SC_rgb_dcmtk_+eb+cy+np.dcm",  # .50 YBR_FULL_422
    "SC_rgb_jpeg_dcmtk.dcm",  # .50 YBR_FULL
    "examples_ybr_color.dcm",  # .50 YBR_FULL_422, 30 frames
    "SC_rgb_jpeg.dcm",  # .50 RGB
    "JPEG2000.dcm",  # .91 16-bit
    "693_J2KI.dcm",  # .91 14-bit
    "SC_rgb_gdcm_KY.dcm",  # .91 RGB
    "JPEGLSNearLossless_08.dcm",  # .81
    "JPEGLSNearLossless_16.dcm",  # .81
    "SC_rgb_jls_lossy_line.dcm",  # .81 RGB
    "SC_rgb_jls_lossy_sample.dcm",  # .81 RGB
)


def lossy_htj2k() -> Any:
    """CT_small re-encoded as irreversible (lossy) HTJ2K, stored as ``.203``."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    pixels = np.ascontiguousarray(ds.pixel_array)
    ds.PixelData = encapsulate([imagecodecs.htj2k_encode(pixels, level=40, reversible=False)])
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.203"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(out.getvalue()))


def measure(name: str, ds: Any) -> tuple[dict[tuple[str, str], tuple[int, int, int]], list[str]]:
    """Per pair of decoders: (max |difference|, differing samples, samples compared), and every decoder seen."""
    pairs: dict[tuple[str, str], tuple[int, int, int]] = {}
    seen: list[str] = []
    for number in range(1, int(ds.get("NumberOfFrames") or 1) + 1):
        decoded = {d: normalised_source_pixels(a, ds).astype(np.int64) for d, a in lossy_decodings(ds, number)}
        seen += [d for d in decoded if d not in seen]
        for a, b in itertools.combinations(decoded, 2):
            delta = np.abs(decoded[a] - decoded[b])
            top, count, size = pairs.get((a, b), (0, 0, 0))
            pairs[(a, b)] = (max(top, int(delta.max())), count + int(np.count_nonzero(delta)), size + delta.size)
    return pairs, seen


def main() -> int:
    """Print the measurements; 1 when the tolerance is insufficient."""
    datasets = [(name, pydicom.dcmread(get_testdata_file(name))) for name in FILES]
    datasets.append(("CT_small as lossy HTJ2K (.203)", lossy_htj2k()))
    worst = 0
    for name, ds in datasets:
        pairs, seen = measure(name, ds)
        syntax = str(ds.file_meta.TransferSyntaxUID).rsplit(".", 1)[-1]
        if not pairs:
            print(f"{name} (.{syntax}): only {', '.join(seen) or 'no decoder'} decodes it")
        for (a, b), (top, count, size) in pairs.items():
            worst = max(worst, top)
            print(f"{name} (.{syntax}): {a} vs {b}: max |difference| {top}, {count:,} of {size:,} samples differ")
    ok = worst <= LOSSY_DECODER_TOLERANCE
    verdict = "enough" if ok else "TOO SMALL"
    print(f"largest difference {worst}; LOSSY_DECODER_TOLERANCE {LOSSY_DECODER_TOLERANCE}: {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

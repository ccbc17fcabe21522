"""Which decoder the emulator's import uses for lossy JPEG sources (JPEG Extended ``.51``, transcoded).

A real import decodes a lossy source with a decoder of its own before it transcodes the pixels, and two
correct JPEG decoders may round the inverse DCT differently (by one least significant bit on some samples).
The default import decodes with pydicom, as the verifier's three-way check does first, so the two agree; this
setting makes the import decode like another implementation, to test that the verifier does not call such an
import a mismatch (and still calls a real change one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

DECODERS = ("pydicom", "libjpeg-turbo")

#: Every how many samples ``perturb`` changes one.
PERTURB_STRIDE = 97


@dataclass(frozen=True)
class LossyJpegDecoding:
    """How the import decodes a lossy JPEG source.

    Attributes
    ----------
    decoder
        ``pydicom`` (its default plugin, the default) or ``libjpeg-turbo`` (imagecodecs' build; no colour
        conversion, like pydicom's ``raw=True``).
    perturb
        Add ``perturb`` to every :data:`PERTURB_STRIDE`-th sample after decoding (subtract it where the sum
        would not fit in BitsStored): a decoder that rounds differently from every decoder the verifier has
        when 1, an import that changes the pixels when larger.
    """

    decoder: str = "pydicom"
    perturb: int = 0

    def __post_init__(self) -> None:
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {', '.join(DECODERS)}")
        if self.perturb < 0:
            raise ValueError("perturb must be at least 0")

    def decode(self, ds: Any) -> list[npt.NDArray[Any]]:
        """The source's frames as this import decodes them (as ``iter_pixels(ds, raw=True)`` gives them)."""
        if self.decoder == "libjpeg-turbo":
            frames = [_turbo(f, int(ds.get("SamplesPerPixel") or 1)) for f in _encapsulated(ds)]
        else:
            from pydicom.pixels.utils import iter_pixels  # noqa: PLC0415

            frames = [np.asarray(f) for f in iter_pixels(ds, raw=True)]
        if self.perturb:
            frames = [_perturbed(f, self.perturb, int(ds.BitsStored)) for f in frames]
        return frames


def _encapsulated(ds: Any) -> list[bytes]:
    from pydicom.encaps import generate_frames  # noqa: PLC0415

    return list(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames") or 1)))


def _turbo(frame: bytes, samples: int) -> npt.NDArray[Any]:
    import imagecodecs  # noqa: PLC0415

    space = "RGB" if samples == 3 else None  # the same space in and out: no colour conversion
    return np.asarray(imagecodecs.jpeg8_decode(frame, colorspace=space, outcolorspace=space))


def _perturbed(frame: npt.NDArray[Any], by: int, bits_stored: int) -> npt.NDArray[Any]:
    out = np.array(frame, copy=True)
    flat = out.reshape(-1)
    chosen = flat[::PERTURB_STRIDE].astype(np.int64)
    top = (1 << bits_stored) - 1
    flat[::PERTURB_STRIDE] = np.where(chosen + by <= top, chosen + by, chosen - by).astype(out.dtype)
    return out

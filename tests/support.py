"""Constants and small helpers the test packages share."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# shared/ sits beside the checkout, on developer machines and in CI alike.
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures" / "aws-samples"
#: CRC-32 of CT1_UNC's PixelData: the IFRC HealthImaging is expected to report for that file.
CT1_UNC_CRC = 1052635650

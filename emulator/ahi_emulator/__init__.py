"""A local AWS HealthImaging emulator: runtime metadata and frames, import jobs, faults and request quotas.

The full-resolution checksums it lists are computed from the source arrays, independently of any decoder, so
a verifier tested against it cannot pass by sharing a decoder's mistakes.
"""

from .emulator import Emulator
from .faults import Fault, ImportFaults, InjectedFaults, StoredFrameRef
from .lossy import LossyJpegDecoding
from .models import NotFoundError
from .quotas import DEFAULT_QUOTAS, NO_QUOTAS, Quota
from .server import EmulatorServer
from .specs import ImageSetInfo, InstanceSpec, PatientSpec

__all__ = [
    "DEFAULT_QUOTAS",
    "NO_QUOTAS",
    "Emulator",
    "EmulatorServer",
    "Fault",
    "ImageSetInfo",
    "ImportFaults",
    "InjectedFaults",
    "InstanceSpec",
    "LossyJpegDecoding",
    "NotFoundError",
    "PatientSpec",
    "Quota",
    "StoredFrameRef",
]

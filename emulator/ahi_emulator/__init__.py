"""A local AWS HealthImaging emulator: runtime metadata and frames, DICOM import jobs, injectable faults.

The full-resolution checksums it lists are computed from the source arrays, independently of any decoder, so
a verifier tested against it cannot pass by sharing a decoder's mistakes.
"""

from .emulator import Emulator
from .faults import Fault, ImportFaults, InjectedFaults, StoredFrameRef
from .models import NotFoundError
from .server import EmulatorServer
from .specs import ImageSetInfo, InstanceSpec, PatientSpec

__all__ = [
    "Emulator",
    "EmulatorServer",
    "Fault",
    "ImageSetInfo",
    "ImportFaults",
    "InjectedFaults",
    "InstanceSpec",
    "NotFoundError",
    "PatientSpec",
    "StoredFrameRef",
]

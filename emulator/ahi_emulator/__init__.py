"""A local AWS HealthImaging emulator: runtime metadata and frames, DICOM import jobs, injectable faults.

The full-resolution checksums it lists are computed from the source arrays, independently of any decoder, so
a verifier tested against it cannot pass by sharing a decoder's mistakes.
"""

from .faults import Fault
from .jobs import FrameRef, ImportFaults, InjectedFaults
from .server import EmulatorServer
from .specs import ImageSetInfo, InstanceSpec, PatientSpec
from .store import Emulator, NotFoundError

__all__ = [
    "Emulator",
    "EmulatorServer",
    "Fault",
    "FrameRef",
    "ImageSetInfo",
    "ImportFaults",
    "InjectedFaults",
    "InstanceSpec",
    "NotFoundError",
    "PatientSpec",
]

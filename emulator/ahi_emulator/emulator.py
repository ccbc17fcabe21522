"""The composition root: :class:`Emulator`, one local AWS HealthImaging made of the emulator's parts.

It is the models (:class:`~ahi_emulator.models.HealthImagingBackend`: state and its operations) and the
import control plane (:class:`~ahi_emulator.jobs.ImportControlPlane`) in one object, plus the request-time
faults (:class:`~ahi_emulator.faults.FaultBook`), the two ``add_image_set`` entry points that run the
metadata builder (:mod:`ahi_emulator.metadata`) and ``save``/``load`` (:mod:`ahi_emulator.persistence`).
Callers outside the package (tests, the local stack, the benchmarks) and the HTTP app, the CLI and the seed
data use this class; the parts stay importable on their own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .dicom import DicomSource, read_dicom
from .faults import Fault, FaultBook, FaultDecision, ImportFaults
from .ids import check_id, new_id
from .jobs import EventSink, ImportControlPlane
from .metadata import prepare_instances, synthetic_study
from .models import HealthImagingBackend
from .persistence import load_state, save_state
from .specs import ImageSetInfo, InstanceSpec, PatientSpec


# The facade inherits both parts rather than holding them so that every public method keeps its name,
# signature and docstring without a forwarding copy; the control plane still reaches the state only through
# its ImportBackend protocol (here, the same object).
class Emulator(HealthImagingBackend, ImportControlPlane):
    """A local AWS HealthImaging: the runtime data plane plus the DICOM import job control plane.

    All public methods are thread-safe; the HTTP app calls into one instance from many threads.

    Parameters
    ----------
    s3_client, on_event, region, import_faults
        Initial values of the import control plane's attributes of the same name, each settable later (see
        :class:`~ahi_emulator.jobs.ImportControlPlane`).
    """

    def __init__(
        self,
        *,
        s3_client: Any | None = None,
        on_event: EventSink | None = None,
        region: str | None = None,
        import_faults: ImportFaults | None = None,
    ) -> None:
        HealthImagingBackend.__init__(self)
        ImportControlPlane.__init__(self, self, region)
        self.s3_client = s3_client
        self.on_event = on_event
        self.import_faults = import_faults
        self._faults = FaultBook()

    # ------------------------------------------------------------------------------------- image sets

    def add_image_set(
        self,
        datastore_id: str,
        instances: Sequence[InstanceSpec],
        *,
        image_set_id: str | None = None,
        patient: PatientSpec | None = None,
        study_instance_uid: str | None = None,
        study_dicom: Mapping[str, Any] | None = None,
        resolution_levels: bool = True,
    ) -> ImageSetInfo:
        """Encode the instances' frames and store them as a new image set (version ``"1"``).

        Parameters
        ----------
        datastore_id
            An existing data store.
        instances
            The SOP instances; they may belong to different series.
        image_set_id
            32 characters ``[0-9a-z]``; random when ``None``.
        patient
            ``Patient.DICOM`` values; synthetic defaults when ``None``.
        study_instance_uid
            Generated when ``None``.
        study_dicom
            Extra attributes merged over the generated ``Study.DICOM``.
        resolution_levels
            List one checksum per wavelet decomposition level before the full-resolution one.

        Returns
        -------
        ImageSetInfo

        Raises
        ------
        NotFoundError
            Unknown data store.
        ValueError
            Invalid frames, IDs or transfer-syntax combinations.
        """
        if not instances:
            raise ValueError("an image set needs at least one instance")
        image_set_id = check_id(image_set_id, "image_set_id") if image_set_id else new_id()
        self.check_datastore(datastore_id)  # fail before the (slow) encoding
        prepared = prepare_instances(instances, resolution_levels)
        study = synthetic_study(study_instance_uid, study_dicom)
        patient_dicom = (patient or PatientSpec()).to_dicom()
        return self.publish_image_set(datastore_id, image_set_id, patient_dicom, study, prepared)

    def add_image_set_from_dicom(
        self,
        datastore_id: str,
        paths_or_datasets: Sequence[DicomSource],
        *,
        image_set_id: str | None = None,
        resolution_levels: bool = True,
        boxed: bool = False,
    ) -> ImageSetInfo:
        """Add one image set from uncompressed little-endian DICOM P10 files of one study.

        Patient, Study, Series and Instance attributes are copied from the datasets; pixel values are the
        stored values (no rescale, no colour conversion), colour kept interleaved.

        Parameters
        ----------
        datastore_id
            An existing data store.
        paths_or_datasets
            File paths or ``pydicom`` datasets.
        image_set_id, resolution_levels
            As for :meth:`add_image_set`.
        boxed
            Store the frames as JPH files.

        Raises
        ------
        ValueError
            Naming the file, for anything but uncompressed little-endian pixel data.
        """
        specs, patient, study = read_dicom(paths_or_datasets)
        if boxed:
            specs = [replace(s, boxed=True) for s in specs]
        return self.add_image_set(
            datastore_id,
            specs,
            image_set_id=image_set_id,
            patient=patient,
            study_instance_uid=study.get("StudyInstanceUID"),
            study_dicom=study,
            resolution_levels=resolution_levels,
        )

    # ------------------------------------------------------------------------------ request-time faults

    def add_fault(self, fault: Fault) -> None:
        """Activate a request-time fault (see :class:`Fault`)."""
        self._faults.add(fault)

    def clear_faults(self) -> None:
        """Remove every request-time fault."""
        self._faults.clear()

    def faults(self) -> list[Fault]:
        """Return the active, not yet exhausted faults."""
        return self._faults.faults()

    def stats(self) -> dict[str, Any]:
        """Return request, response and fault counters (see :meth:`FaultBook.stats`)."""
        return self._faults.stats()

    def reset_stats(self) -> None:
        """Zero the request, response and fault counters."""
        self._faults.reset_stats()

    def intercept(self, operation: str, image_set_id: str | None, frame_id: str | None) -> FaultDecision:
        """Count an API request and return the faults that fire for it (called by the HTTP app)."""
        return self._faults.check(operation, image_set_id, frame_id)

    def record_response(self, status: int) -> None:
        """Count an API response by status (called by the HTTP app)."""
        self._faults.record_response(status)

    # ------------------------------------------------------------------------------------- persistence

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the state (not faults or counters) to ``directory``.

        Layout: ``index.json`` (data stores, image sets and import job records), ``<datastore>/<imageset>/
        metadata-v<N>.json`` and ``<datastore>/<imageset>/frames/<frameId>.<ext>``. A job's injected faults
        and their record are not saved; a job still running is saved as it is and loads as FAILED.

        Returns
        -------
        pathlib.Path
            The directory.
        """
        return save_state(self, directory)

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        *,
        s3_client: Any | None = None,
        on_event: EventSink | None = None,
    ) -> Emulator:
        """Read a directory written by :meth:`save` (``s3_client``/``on_event`` as for the constructor).

        Raises
        ------
        ValueError
            When the index is missing, of another format, or names invalid IDs.
        """
        emulator = cls(s3_client=s3_client, on_event=on_event)
        load_state(emulator, directory)
        return emulator

"""The composition root: :class:`Emulator`, one local AWS HealthImaging made of the emulator's parts.

It is the models (:class:`~ahi_emulator.models.HealthImagingBackend`: state and its operations) and the
import control plane (:class:`~ahi_emulator.jobs.ImportControlPlane`) in one object, plus the request-time
faults (:class:`~ahi_emulator.faults.FaultBook`), the request quotas (:class:`~ahi_emulator.quotas.QuotaBook`),
the two ``add_image_set`` entry points that run the metadata builder (:mod:`ahi_emulator.metadata`) and
``save``/``load`` (:mod:`ahi_emulator.persistence`).
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
from .faults import Fault, FaultBook, FaultDecision, ImportFaults, LoggedRequest
from .ids import check_id, new_id
from .jobs import ImportControlPlane
from .lossy import LossyJpegDecoding
from .metadata import prepare_instances, synthetic_study
from .models import EventSink, HealthImagingBackend
from .persistence import load_state, save_state
from .quotas import Quota, QuotaBook
from .sigv4 import SignatureVerifier, verify_by_default
from .specs import ImageSetInfo, InstanceSpec, PatientSpec


# The facade inherits both parts rather than holding them so that every public method keeps its name,
# signature and docstring without a forwarding copy; the control plane still reaches the state only through
# its ImportBackend protocol (here, the same object).
class Emulator(HealthImagingBackend, ImportControlPlane):
    """A local AWS HealthImaging: the runtime data plane plus the DICOM import job control plane.

    All public methods are thread-safe; the HTTP app calls into one instance from many threads.

    Parameters
    ----------
    s3_client, on_event, region, import_faults, lossy_jpeg_decoding
        Initial values of the import control plane's attributes of the same name, each settable later (see
        :class:`~ahi_emulator.jobs.ImportControlPlane`).
    quotas
        Request quotas over the service's defaults (:data:`~ahi_emulator.quotas.DEFAULT_QUOTAS`), e.g.
        ``{"GetImageFrame": Quota(20, 40)}`` for a scaled-down bench; ``None`` for an operation makes it
        unlimited, :data:`~ahi_emulator.quotas.NO_QUOTAS` makes every operation unlimited. They are the
        emulator's starting quotas: :meth:`reset_quotas` returns to them.
    verify_signatures
        Refuse every service request whose SigV4 signature botocore's signer does not reproduce
        (:mod:`ahi_emulator.sigv4`); None (the default) follows ``AHI_EMULATOR_VERIFY_SIGV4``. Settable later.
    credentials
        The key pairs a request may be signed with, access key ID → secret (default ``{"testing":
        "testing"}``); more with ``emulator.signatures.register(...)``.

    Raises
    ------
    ValueError
        For a quota naming an unknown operation.
    """

    def __init__(
        self,
        *,
        s3_client: Any | None = None,
        on_event: EventSink | None = None,
        region: str | None = None,
        import_faults: ImportFaults | None = None,
        quotas: Mapping[str, Quota | None] | None = None,
        lossy_jpeg_decoding: LossyJpegDecoding | None = None,
        verify_signatures: bool | None = None,
        credentials: Mapping[str, str] | None = None,
    ) -> None:
        HealthImagingBackend.__init__(self)
        ImportControlPlane.__init__(self, self, region)
        self.verify_signatures = verify_by_default() if verify_signatures is None else verify_signatures
        self.signatures = SignatureVerifier(credentials)
        self.s3_client = s3_client
        self.on_event = on_event
        self.import_faults = import_faults
        self.lossy_jpeg_decoding = lossy_jpeg_decoding
        self._faults = FaultBook()
        self._quotas = QuotaBook(quotas)

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
        """Return request, response, fault and quota counters.

        Returns
        -------
        dict
            :meth:`FaultBook.stats` plus ``throttled_by_quota``: per operation (every one listed), the
            requests answered 429 because their quota was spent. Those are counted in ``requests`` and
            ``responses`` too, but never in ``faults_fired``, so a quota's throttle and an injected
            ``throttle`` fault can be told apart.
        """
        stats = self._faults.stats()
        stats["throttled_by_quota"] = {op: n["throttled"] for op, n in self._quotas.counts().items()}
        return stats

    def reset_stats(self) -> None:
        """Zero the request, response, fault and quota counters (the request log is left alone)."""
        self._faults.reset_stats()
        self._quotas.reset_counts()

    def intercept(
        self, operation: str, image_set_id: str | None, frame_id: str | None, *, throttled: bool = False
    ) -> FaultDecision:
        """Count an API request and return the faults that fire for it (called by the HTTP app).

        A request already ``throttled`` by its quota only meets latency faults: the 429 is still a round
        trip, but the request never reaches what the other faults stand for.
        """
        return self._faults.check(operation, image_set_id, frame_id, latency_only=throttled)

    def record_response(self, operation: str, status: int) -> None:
        """Count an API response by status, and log it while the request log runs (called by the HTTP app)."""
        self._faults.record_response(operation, status)

    def start_request_log(self) -> None:
        """Log every API request answered from now on, for benchmarks (see :meth:`request_log`).

        Off until called, so a long-running emulator keeps no per-request record; calling it again starts
        an empty log.
        """
        self._faults.start_log()

    def request_log(self) -> list[LoggedRequest]:
        """Return the ``(monotonic_time, operation, http_status)`` of each API request answered since
        :meth:`start_request_log`, in the order they were answered (empty if the log was never started)."""
        return self._faults.log()

    def stop_request_log(self) -> list[LoggedRequest]:
        """Stop logging and return the log."""
        return self._faults.stop_log()

    # ------------------------------------------------------------------------------------------ quotas

    def admit(self, operation: str) -> bool:
        """Take a token from the operation's quota: True if the request may proceed, False to throttle it
        (called by the HTTP app on each request's arrival)."""
        return self._quotas.admit(operation)

    def quotas(self) -> dict[str, Quota | None]:
        """Return every operation's current quota (``None``: unlimited)."""
        return self._quotas.quotas()

    def set_quota(self, operation: str, quota: Quota | None) -> None:
        """Give one operation a new quota (``None``: unlimited), starting with a full bucket.

        Raises
        ------
        ValueError
            For an unknown operation.
        """
        self._quotas.set(operation, quota)

    def set_quotas(self, quotas: Mapping[str, Quota | None]) -> None:
        """Set several operations' quotas: all of them, or (on a bad entry) none.

        Raises
        ------
        ValueError
            For an unknown operation or a value that is not a quota.
        """
        self._quotas.update(quotas)

    def clear_quotas(self) -> None:
        """Make every operation unlimited."""
        self._quotas.clear()

    def reset_quotas(self) -> None:
        """Return to the starting quotas (the constructor's), with every bucket full."""
        self._quotas.reset()

    # ------------------------------------------------------------------------------------- persistence

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the state (not faults, quotas or counters) to ``directory``.

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
        quotas: Mapping[str, Quota | None] | None = None,
    ) -> Emulator:
        """Read a directory written by :meth:`save` (``s3_client``/``on_event``/``quotas`` as for the
        constructor; quotas are not part of the saved state).

        Raises
        ------
        ValueError
            When the index is missing, of another format, or names invalid IDs.
        """
        emulator = cls(s3_client=s3_client, on_event=on_event, quotas=quotas)
        load_state(emulator, directory)
        return emulator

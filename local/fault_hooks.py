"""Faults the reliability harness puts into a running handler, in whichever execution environment runs it.

Installed with :meth:`local.functions.FunctionRunner.add_init_hook`: the hook runs after the handler's cold
start, in this process or in a container's, so it must be importable without the stack (this module imports
nothing of it) and take JSON arguments.
"""

from __future__ import annotations

import os
import time
from types import ModuleType
from typing import Any

from botocore.exceptions import ClientError

from ahi_verify.ports import ImageSetError

__all__ = [
    "GatedSource",
    "HangingSource",
    "PoisonSource",
    "RefusingPublisher",
    "gate_image_set",
    "hang_image_set",
    "poison_image_set",
    "refuse_alerts",
]


class PoisonSource:
    """The worker's HealthImaging source, with one image set whose every work item raises."""

    def __init__(self, inner: Any, poisoned: str) -> None:
        self.inner, self.poisoned = inner, poisoned

    def get_image_set_metadata(self, datastore_id: str, image_set_id: str, version_id: str | None) -> bytes:
        """The inner source's metadata, except for the poisoned image set: RuntimeError."""
        if image_set_id == self.poisoned:
            raise RuntimeError("poison work item (injected by the reliability harness)")
        data: bytes = self.inner.get_image_set_metadata(datastore_id, image_set_id, version_id)
        return data

    def lossless_storage_format(self, datastore_id: str) -> str:
        """The inner source's answer."""
        found: str = self.inner.lossless_storage_format(datastore_id)
        return found

    def get_image_frame(self, datastore_id: str, image_set_id: str, image_frame_id: str) -> Any:
        """The inner source's frame."""
        return self.inner.get_image_frame(datastore_id, image_set_id, image_frame_id)


def poison_image_set(handler_module: ModuleType, image_set_id: str) -> None:
    """Init hook: make every work item of ``image_set_id`` raise in this worker (an item that never succeeds).

    Parameters
    ----------
    handler_module
        The worker's handler module (its ``SERVICES``).
    image_set_id
        The poisoned image set.
    """
    services = handler_module.SERVICES
    services.frames = PoisonSource(services.frames, image_set_id)


class HangingSource:
    """The worker's HealthImaging source, with one image set whose frame fetches never answer in time."""

    def __init__(self, inner: Any, stuck: str, seconds: float) -> None:
        self.inner, self.stuck, self.seconds = inner, stuck, seconds

    def get_image_set_metadata(self, datastore_id: str, image_set_id: str, version_id: str | None) -> bytes:
        """The inner source's metadata."""
        data: bytes = self.inner.get_image_set_metadata(datastore_id, image_set_id, version_id)
        return data

    def lossless_storage_format(self, datastore_id: str) -> str:
        """The inner source's answer."""
        found: str = self.inner.lossless_storage_format(datastore_id)
        return found

    def get_image_frame(self, datastore_id: str, image_set_id: str, image_frame_id: str) -> Any:
        """The inner source's frame, after ``seconds`` for the stuck image set (the function times out first)."""
        if image_set_id == self.stuck:
            time.sleep(self.seconds)
        return self.inner.get_image_frame(datastore_id, image_set_id, image_frame_id)


def hang_image_set(handler_module: ModuleType, image_set_id: str, seconds: float) -> None:
    """Init hook: every frame fetch of ``image_set_id`` hangs ``seconds`` in this worker, so each delivery of its
    work item is killed at the function's timeout instead of raising (nothing of it is recorded by the worker)."""
    services = handler_module.SERVICES
    services.frames = HangingSource(services.frames, image_set_id, seconds)


class RefusingPublisher:
    """SNS refusing every publish, as when the alert topic's KMS key is disabled."""

    def publish(self, alert: Any) -> str:
        """Raise what SNS raises for a topic whose key is disabled."""
        error = {"Error": {"Code": "KMSDisabledException", "Message": "the topic's key is disabled (harness)"}}
        raise ClientError(error, "Publish")


def refuse_alerts(handler_module: ModuleType) -> None:
    """Init hook: the function's alert topic refuses every publish."""
    handler_module.SERVICES.alerts = RefusingPublisher()


class GatedSource:
    """The worker's HealthImaging source, steered by the harness through two files every container sees: while
    ``hold`` exists, fetches of the ``held`` frames wait (each writes ``<hold>.<frame ID>`` as it starts to
    wait, so the harness knows its work item has listed the metadata); while ``fail`` exists, the image set's
    metadata cannot be read (as a GetImageSetMetadata that fails after its retries)."""

    HOLD_LIMIT_S = 300.0  # a harness that died must not leave workers waiting forever

    def __init__(self, inner: Any, image_set_id: str, held: list[str], hold: str, fail: str) -> None:
        self.inner, self.image_set_id, self.held = inner, image_set_id, set(held)
        self.hold, self.fail = hold, fail

    def get_image_set_metadata(self, datastore_id: str, image_set_id: str, version_id: str | None) -> bytes:
        """The inner source's metadata, or ImageSetError while ``fail`` exists."""
        if image_set_id == self.image_set_id and os.path.exists(self.fail):
            raise ImageSetError(f"GetImageSetMetadata for image set {image_set_id} failed: InternalServerException")
        data: bytes = self.inner.get_image_set_metadata(datastore_id, image_set_id, version_id)
        return data

    def lossless_storage_format(self, datastore_id: str) -> str:
        """The inner source's answer."""
        found: str = self.inner.lossless_storage_format(datastore_id)
        return found

    def get_image_frame(self, datastore_id: str, image_set_id: str, image_frame_id: str) -> Any:
        """The inner source's frame, once ``hold`` is gone for the held frames."""
        waited = 0.0
        if image_frame_id in self.held and os.path.exists(self.hold):
            open(f"{self.hold}.{image_frame_id}", "w").close()
        while image_frame_id in self.held and os.path.exists(self.hold) and waited < self.HOLD_LIMIT_S:
            time.sleep(0.05)
            waited += 0.05
        return self.inner.get_image_frame(datastore_id, image_set_id, image_frame_id)


def gate_image_set(handler_module: ModuleType, image_set_id: str, held: list[str], hold: str, fail: str) -> None:
    """Init hook: steer one image set's fetches from the harness (see :class:`GatedSource`)."""
    services = handler_module.SERVICES
    services.frames = GatedSource(services.frames, image_set_id, held, hold, fail)

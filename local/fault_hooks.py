"""Faults the reliability harness puts into a running handler, in whichever execution environment runs it.

Installed with :meth:`local.functions.FunctionRunner.add_init_hook`: the hook runs after the handler's cold
start, in this process or in a container's, so it must be importable without the stack (this module imports
nothing of it) and take JSON arguments.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

__all__ = ["PoisonSource", "poison_image_set"]


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

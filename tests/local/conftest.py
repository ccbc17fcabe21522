"""Fixtures of the local-runner tests: a copy of the test application (``app/``) in a temporary directory,
and a factory for LocalStacks on it that are always stopped.

``app/template.yaml`` has the shape of the real template (parameters, logical IDs, environment contract)
with trivial handlers, so these tests pin the runner's behaviour independently of the real functions.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from local.stack import LocalStack

APP = Path(__file__).with_name("app")
DATASTORE_ID = "0123456789abcdef0123456789abcdef"

StackFactory = Callable[..., LocalStack]


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """The test application, copied so that its handlers are imported from a directory of their own."""
    target = tmp_path / "app"
    shutil.copytree(APP, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


@pytest.fixture
def make_stack(app_dir: Path) -> Iterator[StackFactory]:
    """Start a LocalStack on the test application: ``make_stack(parameters={...}, template_text=edit)``."""
    started: list[LocalStack] = []

    def factory(*, edit: Callable[[str], str] | None = None, **kwargs: Any) -> LocalStack:
        template = app_dir / "template.yaml"
        if edit is not None:
            template.write_text(edit(template.read_text(encoding="utf-8")), encoding="utf-8")
        parameters = {"DatastoreId": DATASTORE_ID, **kwargs.pop("parameters", {})}
        kwargs.setdefault("retry_visibility_timeout", 0)
        stack = LocalStack(template, parameters=parameters, **kwargs)
        started.append(stack)
        return stack.start()

    yield factory
    for stack in started:
        stack.stop()

"""Fixtures of the patient-data tests: the integration servers, and one capture of everything a run emits."""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

# The emulator and moto fixtures of the integration tests, reused as they are.
from tests.integration.conftest import (  # noqa: F401
    aws_env,
    aws_env_module,
    emulator,
    emulator_env,
    moto_endpoint,
    s3,
    server,
)

T = TypeVar("T")

#: Loggers of the local stand-ins for AWS (moto's and the emulator's HTTP servers, the emulator's import
#: jobs): they play the service, whose own logs are not the project's output.
SERVICE_LOGGERS = ("werkzeug", "moto", "ahi_emulator")
#: werkzeug's access-log lines (the stand-ins' request logs), as they reach stderr.
ACCESS_LINE = re.compile(r'^\S+ - - \[[^\]]+\] "(GET|PUT|POST|HEAD|DELETE) [^"]*" \S+ \S+$')
_STANDARD_RECORD_KEYS = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class Emitted:
    """Everything one test made the project emit: fd-level stdout/stderr (child processes included), every
    log record at DEBUG (message, arguments, extras, formatted traceback), and whatever the test adds
    (exception texts, SNS messages, S3 objects)."""

    def __init__(self, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
        self._capfd = capfd
        self._caplog = caplog
        self.texts: dict[str, str] = {}
        self._formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")

    def start(self) -> None:
        """Forget what setup produced (uploading the sentinel files is not the project's output)."""
        self._capfd.readouterr()
        self._caplog.clear()

    def add(self, where: str, text: str | bytes | None) -> None:
        if text is None:
            return
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        key, n = where, 1
        while key in self.texts:
            n += 1
            key = f"{where} #{n}"
        self.texts[key] = text

    def add_exception(self, where: str, exc: BaseException) -> None:
        self.add(f"{where}: str(exception)", str(exc))
        self.add(f"{where}: repr(exception)", repr(exc))
        self.add(f"{where}: traceback", "".join(traceback.format_exception(exc)))

    def call(self, where: str, fn: Callable[[], T]) -> T | BaseException:
        """Run ``fn``; an exception it raises is captured (message and traceback) and returned."""
        try:
            return fn()
        except BaseException as exc:
            self.add_exception(where, exc)
            return exc

    def collect(self, label: str) -> tuple[str, str]:
        """Take stdout/stderr and the log records so far; return (stdout, stderr)."""
        out, err = self._capfd.readouterr()
        self.add(f"{label}: stdout", out)
        kept = "\n".join(line for line in err.splitlines() if not ACCESS_LINE.match(line))
        self.add(f"{label}: stderr", kept)
        for i, record in enumerate(self._caplog.records):
            if record.name.split(".")[0] in SERVICE_LOGGERS:
                continue
            where = f"{label}: log {record.name} {record.levelname} #{i}"
            extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD_RECORD_KEYS}
            self.add(where, f"{self._formatter.format(record)}\nargs={record.args!r}\nextra={extras!r}")
        self._caplog.clear()
        return out, err


@pytest.fixture
def emitted(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> Iterator[Emitted]:
    caplog.set_level(logging.DEBUG)  # the root logger: every logger without its own level reports DEBUG
    for name in ("ahi_verify", "local", "aws_lambda_powertools", "botocore", "boto3", "urllib3"):
        caplog.set_level(logging.DEBUG, logger=name)
    capture = Emitted(capfd, caplog)
    capture.start()
    return capture

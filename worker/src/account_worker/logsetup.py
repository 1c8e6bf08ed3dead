"""One logfmt-ish line per event on stderr; svlogd adds the timestamps."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

from account_worker.redact import redact

LOGGER_NAME = "account_worker"
_FIELDS = "fields"


def _quote(value: Any) -> str:
    text = str(value)
    text = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    if text == "" or any(c in text for c in ' "=') or text != text.strip():
        return '"' + text.replace('"', '\\"') + '"'
    return text


class LogfmtFormatter(logging.Formatter):
    """Render `level=INFO event=job_done key=value ...` with secrets redacted."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = tuple(secrets)

    def format(self, record: logging.LogRecord) -> str:
        pairs: list[tuple[str, Any]] = [("level", record.levelname), ("event", record.getMessage())]
        fields: Mapping[str, Any] = getattr(record, _FIELDS, None) or {}
        pairs.extend((k, v) for k, v in fields.items() if v is not None)
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            pairs.append(("exc_type", type(exc).__name__))
            pairs.append(("traceback", self.formatException(record.exc_info)))
        line = " ".join(f"{key}={_quote(value)}" for key, value in pairs)
        return redact(line, self._secrets)


def setup_logging(level: str = "INFO", secrets: Iterable[str] = (), stream: TextIO | None = None) -> logging.Logger:
    """Configure the root logger (pika's own messages included) to write one line per event."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(LogfmtFormatter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # pika logs every failed connection step at ERROR; the worker logs its own one-line events
    # for those (amqp_connect_failed, amqp_connection_lost), so pika only speaks when debugging.
    logging.getLogger("pika").setLevel(logging.DEBUG if level == "DEBUG" else logging.CRITICAL)
    return logging.getLogger(LOGGER_NAME)


def log_event(logger: logging.Logger, level: int, event: str, *, exc_info: bool = False, **fields: Any) -> None:
    """Log one event with structured fields."""
    if logger.isEnabledFor(level):
        logger.log(level, event, exc_info=exc_info, extra={_FIELDS: fields})

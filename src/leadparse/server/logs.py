"""Logging setup for the server commands: one stream handler, text or JSON lines."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

__all__ = ["JsonFormatter", "setup_logging"]

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# aiosmtpd 1.4 logs every command line, including MAIL FROM and RCPT TO
# addresses, at INFO on "mail.log". Addresses must never reach the logs, so
# that logger only passes warnings and errors.
_QUIET_LOGGERS = {"mail.log": logging.WARNING, "asyncio": logging.WARNING}


class JsonFormatter(logging.Formatter):
    """Format each record as one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as JSON with time, level, logger and message."""
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(
    level: str = "INFO", fmt: str = "text", stream: TextIO | None = None
) -> None:
    """Send log records of *level* and above to *stream* (stderr by default).

    Args:
        level: ``DEBUG``, ``INFO``, ``WARNING`` or ``ERROR``.
        fmt: ``text`` for human-readable lines, ``json`` for JSON Lines.
        stream: where to write; ``sys.stderr`` when ``None``.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(_TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name, quiet_level in _QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(max(quiet_level, logging.getLevelName(level)))

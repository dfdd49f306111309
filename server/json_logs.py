"""Log records as JSON lines: one object per line, a record's `fields` extra at the top level."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any

FIELDS = "fields"
"""The `extra` key whose dict is merged into the line: log.info(..., extra={FIELDS: {...}})."""


class JsonFormatter(logging.Formatter):
    """Keys: time (UTC), level, logger, message, then the record's fields, then any exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(getattr(record, FIELDS, None) or {})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str)


def log_json_lines(stream: IO[str] | None = None, level: int = logging.INFO) -> None:
    """Replaces the root handlers: every record of the process goes to `stream` (stderr)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)

"""Structured logging: one JSON object per line, with the call id, and no secrets.

Use :func:`get_logger` and :func:`log_event`::

    log = get_logger(__name__)
    log_event(log, "stt.reconnected", call_id=call_id, attempt=2)

:func:`configure_logging` installs the JSON formatter and the redaction filter on the root
logger; the CLI calls it once. Secrets are removed twice over: settings hold them as
``SecretStr`` (which prints as ``**********``), and the filter masks anything shaped like an
API key secret, a bearer token or a basic-auth pair that still reaches a log line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

__all__ = ["JsonFormatter", "RedactingFilter", "configure_logging", "get_logger", "log_event"]

_SECRET_PATTERNS = (
    re.compile(r"nxfs_[A-Za-z0-9_\-]+"),
    re.compile(r"(?i)(bearer|token|basic)\s+[A-Za-z0-9._:+/=\-]{6,}"),
    re.compile(
        r"(?i)(auth_token|api_key|key_secret|password|secret)([\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"
    ),
    re.compile(r"://[^/\s:@]+:[^/\s@]+@"),
)


def redact(text: str) -> str:
    """Mask secret-looking substrings of ``text``."""
    text = _SECRET_PATTERNS[0].sub("nxfs_***", text)
    text = _SECRET_PATTERNS[1].sub(lambda m: f"{m.group(1)} ***", text)
    text = _SECRET_PATTERNS[2].sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
    return _SECRET_PATTERNS[3].sub("://***:***@", text)


class RedactingFilter(logging.Filter):
    """Masks secrets in the message and in string extra fields of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = record.getMessage()
            record.args = None
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            record.fields = {k: redact(v) if isinstance(v, str) else v for k, v in fields.items()}
        return True


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line: ts, level, logger, event, call_id and fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO", stream: Any = None) -> None:
    """Send every log record to ``stream`` (stderr) as redacted JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def get_logger(name: str) -> logging.Logger:
    """The logger for a module (a thin alias, so every module imports logging from here)."""
    return logging.getLogger(name)


def log_event(
    logger: logging.Logger,
    event: str,
    *,
    level: int = logging.INFO,
    call_id: str | None = None,
    exc_info: Any = None,
    **fields: Any,
) -> None:
    """Log ``event`` with structured ``fields``; ``call_id`` is always a field when known."""
    if not logger.isEnabledFor(level):
        return
    if call_id is not None:
        fields["call_id"] = call_id
    logger.log(level, event, extra={"fields": fields}, exc_info=exc_info)

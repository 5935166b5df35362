"""Logging set-up: plain lines by default, one JSON object a line when LOG_JSON is on.

Messages carry what callers sent (paths, names from events); a newline in one of them must
not start a line of its own. Plain lines escape control characters in the message; JSON lines
are escaped by json.dumps. Tracebacks keep their lines: they come from our own code.
"""

from __future__ import annotations

import json
import logging
import sys
import time

_CONFIGURED = False

# C0 and C1 controls, DEL and the Unicode line and paragraph separators.
_CONTROLS = [*range(0x00, 0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]
_ESCAPES = {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}
_ESCAPE_TABLE = {c: _ESCAPES.get(c, f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in _CONTROLS}


def one_line(text: str) -> str:
    """text with every control character written as an escape (\\n, \\r, \\x1b, \\u2028)."""
    return text.translate(_ESCAPE_TABLE)


class PlainFormatter(logging.Formatter):
    """The classic one-line format, with the message's control characters escaped."""

    _second: tuple[int, str] = (-1, "")  # the last second's date and time, written once a second

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second, text = self._second
        if second != int(record.created):
            second = int(record.created)
            text = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = (second, text)
        return self.default_msec_format % (text, record.msecs)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802  (logging's name)
        record.message = one_line(record.message)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("request_id", "method", "path", "model_id", "status", "duration_ms", "cold_start"):
            if getattr(record, key, None) is not None:
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


PLAIN_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


def configure_logging(level: str, as_json: bool) -> None:
    """Configure the root logger once per process."""
    global _CONFIGURED
    root = logging.getLogger()
    root.setLevel(level)
    if _CONFIGURED:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if as_json else PlainFormatter(PLAIN_FORMAT))
    root.addHandler(handler)
    for noisy in ("apscheduler", "urllib3", "docker", "kafka"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    _CONFIGURED = True

"""How the broker's processes log: one JSON object per line for machines, plain text for people.

``EB_LOG_FORMAT`` (or ``--log-format``) is ``json``, ``text`` or ``auto`` (the default): text on a
terminal, JSON otherwise, so the files `broker up` writes and a container's output are JSON and a
person running ``broker service`` by hand reads text. A JSON line holds the time (UTC, ISO 8601),
level, process (``service``), logger, message, and where known the current trace and span ids (so a
log line leads to its trace in Jaeger) and the ``session`` and ``owner`` a caller passed as
``extra``. Messages and tracebacks go through the same scrubbing as dead letters
(`shared.bus.redact.scrub_text`): a token or nkey seed that slipped into a message is not written.

Written here, not with structlog or python-json-logger: a formatter of thirty lines on the standard
``logging`` module, which every library the broker uses already logs through (docs/architecture.md).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TextIO

from opentelemetry import trace

from shared.bus.redact import scrub_text

#: What a caller may add to a record with ``extra=`` and the JSON line then carries.
CONTEXT_FIELDS = ("session", "owner", "pool", "request")
TEXT_FORMAT = "%(asctime)s {process} %(levelname)s %(name)s: %(message)s"


class LogFormat(StrEnum):
    AUTO = "auto"
    JSON = "json"
    TEXT = "text"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, secrets scrubbed (see the module's doc)."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.process,
            "logger": record.name,
            "message": scrub_text(record.getMessage()),
        }
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            line["trace_id"] = format(context.trace_id, "032x")
            line["span_id"] = format(context.span_id, "016x")
        for name in CONTEXT_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = str(value)
        if record.exc_info:
            line["exception"] = scrub_text(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False)


class ScrubbingTextFormatter(logging.Formatter):
    """The text format, with the same scrubbing as the JSON lines."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub_text(super().format(record))


def chosen(fmt: LogFormat, stream: TextIO) -> LogFormat:
    if fmt is not LogFormat.AUTO:
        return fmt
    return LogFormat.TEXT if stream.isatty() else LogFormat.JSON


def configure_logging(
    process: str, fmt: LogFormat = LogFormat.AUTO, stream: TextIO | None = None
) -> LogFormat:
    """Send the process's logs (INFO and above) to ``stream`` (stderr) in ``fmt``; the format used."""
    out = stream if stream is not None else sys.stderr
    used = chosen(fmt, out)
    handler = logging.StreamHandler(out)
    text = ScrubbingTextFormatter(TEXT_FORMAT.format(process=process))
    handler.setFormatter(JsonFormatter(process) if used is LogFormat.JSON else text)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return used

"""Structured logs (shared/logs.py) and the rotation of the files `broker up` writes."""

from __future__ import annotations

import io
import json
import logging
import stat
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider

from shared.logs import JsonFormatter, LogFormat, configure_logging
from shared.ops.logfiles import rotate, rotate_all

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlc2lnbmF0dXJl"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def record(message: str, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("eb.test", logging.WARNING, __file__, 1, message, None, None)
    made.__dict__.update(extra)
    return made


def test_a_json_line_carries_the_trace_and_the_session_and_no_secret() -> None:
    tracer = TracerProvider().get_tracer("test")
    formatter = JsonFormatter("offers")
    with tracer.start_as_current_span("process eb.requests.{owner}.{request_id}") as span:
        secret = f"token {JWT} and password=hunter2"
        line = formatter.format(record(secret, session="s-1", owner="local:alice"))
        context = span.get_span_context()
    parsed = json.loads(line)
    assert parsed["trace_id"] == format(context.trace_id, "032x")
    assert parsed["span_id"] == format(context.span_id, "016x")
    assert (parsed["service"], parsed["level"], parsed["logger"]) == ("offers", "WARNING", "eb.test")
    assert (parsed["session"], parsed["owner"]) == ("s-1", "local:alice")
    assert JWT not in line and "hunter2" not in line and "[redacted]" in parsed["message"]
    assert parsed["time"].endswith("+00:00")


def test_outside_a_span_there_is_no_trace_id_and_exceptions_are_scrubbed_too() -> None:
    formatter = JsonFormatter("launcher")
    try:
        raise RuntimeError(f"the platform said {JWT}")
    except RuntimeError:
        import sys

        failing = record("launch failed")
        failing.exc_info = sys.exc_info()
    parsed = json.loads(formatter.format(failing))
    assert "trace_id" not in parsed
    assert "RuntimeError" in parsed["exception"] and JWT not in parsed["exception"]


def test_auto_is_text_on_a_terminal_and_json_elsewhere() -> None:
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    try:
        terminal, pipe = Terminal(), io.StringIO()
        assert configure_logging("scheduler", LogFormat.AUTO, terminal) is LogFormat.TEXT
        logging.getLogger("eb").info("hello %s", "there")
        assert " scheduler INFO eb: hello there" in terminal.getvalue()
        assert configure_logging("scheduler", LogFormat.AUTO, pipe) is LogFormat.JSON
        logging.getLogger("eb").info("hello %s", "again")
        assert json.loads(pipe.getvalue().splitlines()[-1])["message"] == "hello again"
        assert configure_logging("scheduler", LogFormat.JSON, Terminal()) is LogFormat.JSON
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_a_log_past_its_size_is_copied_aside_and_emptied_keeping_so_many(tmp_path: Path) -> None:
    log = tmp_path / "offers.log"
    for generation in range(5):
        log.write_bytes(f"generation {generation}\n".encode() * 100)
        assert rotate(log, max_bytes=1000, backups=3)
        assert log.stat().st_size == 0
    assert not rotate(log, max_bytes=1000, backups=3)  # empty now: left alone
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["offers.log", "offers.log.1", "offers.log.2", "offers.log.3"]
    assert (tmp_path / "offers.log.1").read_text().startswith("generation 4")
    assert (tmp_path / "offers.log.3").read_text().startswith("generation 2")
    assert stat.S_IMODE((tmp_path / "offers.log.1").stat().st_mode) == 0o600
    assert rotate_all([tmp_path / "missing.log", log], 1000, 3) == []

"""`broker watch` prints each message as written: a run's printed output may look like rich markup."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.messages import SessionEvent
from shared.models import MessageItem
from shared.ops.cli import console, print_event


def test_messages_are_printed_verbatim_not_as_markup() -> None:
    printed = "[/oops] [bold]not bold[/bold] [link=https://x]y[/link]"
    event = SessionEvent(
        session_id="s1",
        phase="COMPLETED",
        at=datetime(2026, 12, 2, 21, 0, tzinfo=UTC),
        messages=[MessageItem.info("urn:session-ended", "${reason}", reason=f"it printed:\n{printed}")],
    )
    with console.capture() as captured:
        print_event(event, as_json=False)  # "[/oops]" alone would raise rich's MarkupError
    text = captured.get()
    assert "21:00:00 s1 COMPLETED" in text and printed in text

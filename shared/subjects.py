"""Every subject, stream and durable name of the broker, in one place.

Subjects carry the owner token where a client publishes, so NATS permissions can enforce who may
publish what (a user may publish only on subjects ending in their own token).
"""

from __future__ import annotations

import re

COMMANDS_STREAM = "EB_COMMANDS"
EVENTS_STREAM = "EB_EVENTS"

# Stream subject sets must not overlap (the server refuses overlapping streams with a misleading
# error), so commands and events use disjoint tokens under eb.sessions.
COMMAND_SUBJECTS = (
    "eb.requests.*.*",
    "eb.sessions.*.update.*",
    "eb.scheduler.*.cmd.>",
    "eb.scheduler.*.evt.>",
    "eb.launcher.*.>",
)
EVENT_SUBJECTS = (
    "eb.offersets.*",
    "eb.sessions.*.events.*",
    "eb.sessions.*.replies.*",
    "eb.dead.>",
)

_TOKEN = re.compile(r"^[A-Za-z0-9_\-=@]+$")


def is_token(value: str) -> bool:
    """A NATS subject token must not contain dots, wildcards or whitespace."""
    return bool(_TOKEN.fullmatch(value))


def request(owner: str, request_id: str) -> str:
    return f"eb.requests.{owner}.{request_id}"


def offerset(request_id: str) -> str:
    return f"eb.offersets.{request_id}"


def session_update(session_id: str, owner: str) -> str:
    return f"eb.sessions.{session_id}.update.{owner}"


def session_event(session_id: str, phase: str) -> str:
    return f"eb.sessions.{session_id}.events.{phase}"


def session_events(session_id: str = "*") -> str:
    return f"eb.sessions.{session_id}.events.*"


def session_reply(session_id: str, update_id: str) -> str:
    return f"eb.sessions.{session_id}.replies.{update_id}"


def scheduler_command(pool: str, verb: str) -> str:
    return f"eb.scheduler.{pool}.cmd.{verb}"


def scheduler_event(pool: str, verb: str) -> str:
    return f"eb.scheduler.{pool}.evt.{verb}"


def launcher_command(platform: str, verb: str) -> str:
    return f"eb.launcher.{platform}.{verb}"


def pools_info() -> str:
    """Core request/reply: the scheduler answers with its pools and their current use."""
    return "eb.info.pools"


def health(service: str) -> str:
    return f"eb.health.{service}"


def dead_letter(service: str) -> str:
    return f"eb.dead.{service}"


def phase_msg_id(session_id: str, phase: str) -> str:
    """A phase happens at most once per session, so this id lets the stream drop any resend."""
    return f"{session_id}:{phase}"


def token_at(subject: str, index: int) -> str:
    parts = subject.split(".")
    return parts[index] if len(parts) > index else ""


def stream_for(subject: str) -> str:
    """The stream that stores a subject: events keep history for late subscribers, commands do not."""
    if subject.startswith(("eb.offersets.", "eb.dead.")):
        return EVENTS_STREAM
    parts = subject.split(".")
    if parts[:2] == ["eb", "sessions"] and len(parts) == 5 and parts[3] in {"events", "replies"}:
        return EVENTS_STREAM
    return COMMANDS_STREAM

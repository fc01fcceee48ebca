"""Subjects and streams: every subject we build is stored by exactly one stream, the one
`stream_for` names, and matches exactly one of that stream's subject patterns."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from shared import subjects
from shared.subjects import (
    COMMAND_SUBJECTS,
    COMMANDS_STREAM,
    EVENT_SUBJECTS,
    EVENTS_STREAM,
    is_token,
    phase_msg_id,
    stream_for,
)

STREAMS: dict[str, tuple[str, ...]] = {COMMANDS_STREAM: COMMAND_SUBJECTS, EVENTS_STREAM: EVENT_SUBJECTS}


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` is exactly one token, a final `>` is one or more tokens.

    A wildcard in `subject` (a consumer filter) is read as the set it stands for, so the result says
    whether the pattern covers every subject the filter can match.
    """
    want = pattern.split(".")
    have = subject.split(".")
    for index, token in enumerate(want):
        if token == ">":
            return len(have) > index
        if index >= len(have):
            return False
        if have[index] == ">":
            return False
        if token != "*" and token != have[index]:
            return False
    return len(have) == len(want)


def test_the_matcher_follows_nats_rules() -> None:
    assert matches("a.*.c", "a.b.c")
    assert not matches("a.*.c", "a.b.b.c")
    assert not matches("a.*", "a")
    assert matches("a.>", "a.b")
    assert matches("a.>", "a.b.c.d")
    assert not matches("a.>", "a")
    assert not matches("a.b", "a.b.c")
    assert matches("a.*.c", "a.*.c")
    assert not matches("a.b.c", "a.*.c")
    assert not matches("a.*", "a.>")
    assert matches("a.>", "a.*.>")


SID = str(uuid.uuid4())
RID = str(uuid.uuid4())

# Every subject builder that publishes into a stream, with the stream it must land in.
BUILT: list[tuple[str, str, str]] = [
    ("request", subjects.request("alice", RID), COMMANDS_STREAM),
    ("offerset", subjects.offerset(RID), EVENTS_STREAM),
    ("session_update", subjects.session_update(SID, "alice"), COMMANDS_STREAM),
    ("session_event", subjects.session_event(SID, "RUNNING"), EVENTS_STREAM),
    ("session_events(sid)", subjects.session_events(SID), EVENTS_STREAM),
    ("session_events(*)", subjects.session_events(), EVENTS_STREAM),
    ("session_reply", subjects.session_reply(SID, "upd-1"), EVENTS_STREAM),
    ("scheduler_command", subjects.scheduler_command("local", "quote"), COMMANDS_STREAM),
    ("scheduler_event", subjects.scheduler_event("local", "quoted"), COMMANDS_STREAM),
    ("launcher_command", subjects.launcher_command("local", "launch"), COMMANDS_STREAM),
    ("dead_letter", subjects.dead_letter("offers"), EVENTS_STREAM),
]


def _all_patterns() -> list[tuple[str, str]]:
    return [(stream, pattern) for stream, patterns in STREAMS.items() for pattern in patterns]


@pytest.mark.parametrize(("builder", "subject", "stream"), BUILT, ids=[b for b, _, _ in BUILT])
def test_each_built_subject_lands_in_exactly_one_stream(builder: str, subject: str, stream: str) -> None:
    assert stream_for(subject) == stream
    hits = [(s, p) for s, p in _all_patterns() if matches(p, subject)]
    assert len(hits) == 1, f"{builder}: {subject} matches {hits}"
    assert hits[0][0] == stream


def test_the_stream_patterns_never_overlap_for_built_subjects() -> None:
    for builder, subject, _ in BUILT:
        in_commands = any(matches(p, subject) for p in COMMAND_SUBJECTS)
        in_events = any(matches(p, subject) for p in EVENT_SUBJECTS)
        assert in_commands != in_events, f"{builder}: {subject}"


def test_every_stream_pattern_is_used_by_some_builder() -> None:
    for stream, pattern in _all_patterns():
        assert any(matches(pattern, subject) for _, subject, s in BUILT if s == stream), pattern


def test_health_subjects_are_core_nats_and_stored_by_no_stream() -> None:
    # Health checks are request/reply: a stream capturing them would answer with a PubAck.
    subject = subjects.health("offers")
    assert not any(matches(p, subject) for _, p in _all_patterns())


# Tokens that are also literal words in some subject pattern: a builder given one of them as an id
# must still route by position, not by substring.
TRICKY = ["events", "replies", "update", "cmd", "evt", "offersets", "dead", "requests", "sessions", "x"]

BUILDERS: list[tuple[str, Callable[[str], str], str]] = [
    ("request(owner)", lambda t: subjects.request(t, RID), COMMANDS_STREAM),
    ("request(id)", lambda t: subjects.request("alice", t), COMMANDS_STREAM),
    ("offerset", subjects.offerset, EVENTS_STREAM),
    ("session_update(session)", lambda t: subjects.session_update(t, "alice"), COMMANDS_STREAM),
    ("session_update(owner)", lambda t: subjects.session_update(SID, t), COMMANDS_STREAM),
    ("session_event(session)", lambda t: subjects.session_event(t, "RUNNING"), EVENTS_STREAM),
    ("session_event(phase)", lambda t: subjects.session_event(SID, t), EVENTS_STREAM),
    ("session_reply(session)", lambda t: subjects.session_reply(t, "u"), EVENTS_STREAM),
    ("session_reply(update)", lambda t: subjects.session_reply(SID, t), EVENTS_STREAM),
    ("scheduler_command(pool)", lambda t: subjects.scheduler_command(t, "quote"), COMMANDS_STREAM),
    ("scheduler_command(verb)", lambda t: subjects.scheduler_command("local", t), COMMANDS_STREAM),
    ("scheduler_event(pool)", lambda t: subjects.scheduler_event(t, "quoted"), COMMANDS_STREAM),
    ("launcher_command(platform)", lambda t: subjects.launcher_command(t, "launch"), COMMANDS_STREAM),
    ("launcher_command(verb)", lambda t: subjects.launcher_command("local", t), COMMANDS_STREAM),
    ("dead_letter", subjects.dead_letter, EVENTS_STREAM),
]


@pytest.mark.parametrize("token", TRICKY)
@pytest.mark.parametrize(("builder", "build", "stream"), BUILDERS, ids=[b for b, _, _ in BUILDERS])
def test_routing_depends_on_token_position_not_on_token_text(
    builder: str, build: Callable[[str], str], stream: str, token: str
) -> None:
    subject = build(token)
    hits = {s for s, p in _all_patterns() if matches(p, subject)}
    assert hits == {stream}, f"{builder}({token!r}) = {subject} is stored by {hits}"
    assert stream_for(subject) == stream, f"stream_for({subject!r}) disagrees with the stream patterns"


def test_phase_msg_id_is_deterministic_and_distinct() -> None:
    assert phase_msg_id(SID, "RUNNING") == phase_msg_id(SID, "RUNNING")
    assert phase_msg_id(SID, "RUNNING") != phase_msg_id(SID, "COMPLETED")
    assert phase_msg_id(SID, "RUNNING") != phase_msg_id(RID, "RUNNING")
    assert phase_msg_id(SID, "RUNNING") == f"{SID}:RUNNING"


@pytest.mark.parametrize("value", [SID, "alice", "user_01", "a-b", "x=y", "me@example", "A"])
def test_is_token_accepts_plain_tokens(value: str) -> None:
    assert is_token(value)


@pytest.mark.parametrize(
    "value", ["", "a.b", ".", "a b", " ", "a\tb", "a\nb", "*", "a*", ">", "a>", "a.>", "alice\n"]
)
def test_is_token_rejects_dots_whitespace_and_wildcards(value: str) -> None:
    assert not is_token(value)

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
    LauncherFact,
    LauncherVerb,
    OpsFact,
    SchedulerFact,
    SchedulerVerb,
    SubjectError,
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
    ("offerset", subjects.offerset("alice", RID), EVENTS_STREAM),
    ("update", subjects.update("alice", SID), COMMANDS_STREAM),
    ("update_result", subjects.update_result("alice", SID, "upd-1"), EVENTS_STREAM),
    ("session_event", subjects.session_event("alice", SID, "RUNNING"), EVENTS_STREAM),
    ("session_events(owner, sid)", subjects.session_events("alice", SID), EVENTS_STREAM),
    ("session_events()", subjects.session_events(), EVENTS_STREAM),
    ("scheduler_command", subjects.scheduler_command("local", SchedulerVerb.QUOTE), COMMANDS_STREAM),
    ("scheduler_event", subjects.scheduler_event("local", SchedulerFact.QUOTED), EVENTS_STREAM),
    ("launcher_command", subjects.launcher_command("local", LauncherVerb.LAUNCH), COMMANDS_STREAM),
    ("launcher_event", subjects.launcher_event("local", LauncherFact.MEASURED), EVENTS_STREAM),
    ("dead_letter", subjects.dead_letter("offers"), EVENTS_STREAM),
    ("ops_event", subjects.ops_event("offers", OpsFact.STREAM_FILLING), EVENTS_STREAM),
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
TRICKY = [
    "replies",
    "updates",
    "cmd",
    "evt",
    "offersets",
    "dead",
    "ops",
    "requests",
    "sessions",
    "scheduler",
    "x",
]

BUILDERS: list[tuple[str, Callable[[str], str], str]] = [
    ("request(owner)", lambda t: subjects.request(t, RID), COMMANDS_STREAM),
    ("request(id)", lambda t: subjects.request("alice", t), COMMANDS_STREAM),
    ("offerset(owner)", lambda t: subjects.offerset(t, RID), EVENTS_STREAM),
    ("offerset(id)", lambda t: subjects.offerset("alice", t), EVENTS_STREAM),
    ("update(owner)", lambda t: subjects.update(t, SID), COMMANDS_STREAM),
    ("update(session)", lambda t: subjects.update("alice", t), COMMANDS_STREAM),
    ("update_result(update)", lambda t: subjects.update_result("alice", SID, t), EVENTS_STREAM),
    ("session_event(owner)", lambda t: subjects.session_event(t, SID, "RUNNING"), EVENTS_STREAM),
    ("session_event(session)", lambda t: subjects.session_event("alice", t, "RUNNING"), EVENTS_STREAM),
    ("session_event(phase)", lambda t: subjects.session_event("alice", SID, t), EVENTS_STREAM),
    (
        "scheduler_command(pool)",
        lambda t: subjects.scheduler_command(t, SchedulerVerb.QUOTE),
        COMMANDS_STREAM,
    ),
    ("scheduler_event(pool)", lambda t: subjects.scheduler_event(t, SchedulerFact.QUOTED), EVENTS_STREAM),
    ("launcher_command(pool)", lambda t: subjects.launcher_command(t, LauncherVerb.LAUNCH), COMMANDS_STREAM),
    ("launcher_event(pool)", lambda t: subjects.launcher_event(t, LauncherFact.MEASURED), EVENTS_STREAM),
    ("dead_letter", subjects.dead_letter, EVENTS_STREAM),
    ("ops_event(service)", lambda t: subjects.ops_event(t, OpsFact.STREAM_FILLING), EVENTS_STREAM),
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


# -- the grammar -----------------------------------------------------------------------------------


def test_the_checked_token_is_always_the_third() -> None:
    # NATS permissions check the owner (users) or the pool (services) with one wildcard pattern.
    for pattern in subjects.PATTERNS:
        if pattern.params:
            assert pattern.tokens[2] in {"{owner}", "{pool}", "{service}"}, pattern.template


def test_every_stored_pattern_names_its_stream_and_core_ones_none() -> None:
    for pattern in subjects.PATTERNS:
        stored = pattern.kind is not subjects.Kind.REQUEST
        assert (pattern.stream is not None) == stored, pattern.template
        if pattern.kind is subjects.Kind.COMMAND:
            assert pattern.stream == COMMANDS_STREAM
        if pattern.kind is subjects.Kind.EVENT:
            assert pattern.stream == EVENTS_STREAM


def test_parse_functions_give_back_what_was_built() -> None:
    assert subjects.parse_request(subjects.request("alice", RID)) == ("alice", RID)
    assert subjects.parse_update(subjects.update("bob", SID)) == ("bob", SID)
    event = subjects.parse_session_event(subjects.session_event("carol", SID, "RUNNING"))
    assert (event.owner, event.session_id, event.phase) == ("carol", SID, "RUNNING")


@pytest.mark.parametrize(
    "subject",
    [
        "eb.requests.alice",  # too short
        f"eb.requests.alice.{RID}.extra",  # too long
        f"eb.updates.alice.{RID}",  # another area
        f"eb.requests.al!ce.{RID}",  # not a plain token (the filter lets it through, the parser not)
        f"eb.requests.*.{RID}",  # a wildcard is never a value
        "",
    ],
)
def test_parse_refuses_a_subject_of_another_shape(subject: str) -> None:
    with pytest.raises(SubjectError):
        subjects.parse_request(subject)


@pytest.mark.parametrize("value", ["a.b", "*", ">", "", "a b", "alice\n"])
def test_building_refuses_a_value_that_is_not_one_token(value: str) -> None:
    with pytest.raises(SubjectError):
        subjects.request(value, RID)
    with pytest.raises(SubjectError):
        subjects.session_event("alice", value, "RUNNING")


def test_filters_leave_unnamed_parameters_wild() -> None:
    assert subjects.session_events() == "eb.sessions.*.*.*"
    assert subjects.session_events("alice") == "eb.sessions.alice.*.*"
    assert subjects.session_events(session_id=SID) == f"eb.sessions.*.{SID}.*"
    with pytest.raises(SubjectError, match="no parameter"):
        subjects.SESSION.filter(pool="local")


def test_stream_for_refuses_what_no_stream_stores() -> None:
    for subject in (subjects.health("offers"), subjects.pools_info(), "eb.nothing.x.y", "other"):
        with pytest.raises(SubjectError):
            stream_for(subject)

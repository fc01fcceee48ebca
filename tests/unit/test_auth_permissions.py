"""A user's permissions name their own owner token and nothing of anyone else's, nor any service
subject or stream administration, by NATS matching rules (`matches` of test_subjects)."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from shared import subjects
from shared.auth import owners
from shared.auth.permissions import (
    FLOW_CONTROL,
    QUERIES,
    READABLE,
    WRITABLE,
    Permissions,
    consumer_create,
    inbox_prefix,
    user_permissions,
)
from tests.unit.test_subjects import matches

SERVICE_CONSUMERS = ("offers-requests", "scheduler-commands", "launcher-commands")
ids = st.text(st.sampled_from("abc019-_"), min_size=1, max_size=8)
names = st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=20)
tokens = st.one_of(
    st.builds(lambda n: owners.local(n).token, names),
    st.builds(lambda s: owners.oidc("https://idp.example", s).token, names),
)


def may_publish(p: Permissions, subject: str) -> bool:
    return any(matches(a, subject) for a in p.pub_allow) and not any(matches(d, subject) for d in p.pub_deny)


def may_subscribe(p: Permissions, subject: str) -> bool:
    return any(matches(a, subject) for a in p.sub_allow)


def concrete(pattern: subjects.Pattern, owner: str, value: str) -> str:
    values = {name: value for name in pattern.params}
    if "owner" in values:
        values["owner"] = owner
    return pattern.format(**values)


@given(tokens, tokens, ids)
def test_users_send_and_receive_only_their_own_subjects(mine: str, theirs: str, value: str) -> None:
    assume(mine != theirs)
    p = user_permissions(mine, service_consumers=SERVICE_CONSUMERS)
    for pattern in WRITABLE:
        assert may_publish(p, concrete(pattern, mine, value))
        assert not may_publish(p, concrete(pattern, theirs, value))
    for pattern in READABLE:
        assert may_subscribe(p, concrete(pattern, mine, value))
        assert may_subscribe(p, pattern.filter(owner=mine))
        assert not may_subscribe(p, concrete(pattern, theirs, value))
        assert not may_subscribe(p, pattern.filter())  # every owner's
        assert not may_subscribe(p, ".".join(pattern.tokens[:2]) + ".>")
    assert may_subscribe(p, f"{inbox_prefix(mine)}.{value}")
    assert not may_subscribe(p, f"{inbox_prefix(theirs)}.{value}")
    assert not may_subscribe(p, f"_INBOX.{value}")


@given(tokens, ids)
def test_users_publish_no_service_subject(mine: str, value: str) -> None:
    p = user_permissions(mine)
    for pattern in subjects.PATTERNS:
        if pattern not in WRITABLE and pattern not in QUERIES:
            assert not may_publish(p, concrete(pattern, mine, value)), pattern.template
    assert not may_subscribe(p, subjects.LAUNCHER_COMMAND.filter())
    assert not may_subscribe(p, subjects.DEAD_LETTER.filter())


@given(tokens, ids)
def test_users_cannot_read_the_operations_subjects(mine: str, value: str) -> None:
    """``eb.ops.>`` is the operators': not live, and not through a consumer of the events stream."""
    p = user_permissions(mine, service_consumers=SERVICE_CONSUMERS)
    ops = (subjects.OPS.filter(), subjects.ops_event(mine, subjects.OpsFact.STREAM_FILLING), "eb.ops.>")
    for subject in ops:
        assert not may_subscribe(p, subject), subject
        assert not may_publish(p, consumer_create(subjects.EVENTS_STREAM, value, subject)), subject


@given(tokens, tokens, ids)
def test_jetstream_reads_go_through_consumers_filtered_on_the_owner(
    mine: str, theirs: str, name: str
) -> None:
    assume(mine != theirs)
    p = user_permissions(mine, service_consumers=SERVICE_CONSUMERS)
    events = subjects.EVENTS_STREAM
    for pattern in READABLE:
        assert may_publish(p, consumer_create(events, name, pattern.filter(owner=mine)))
        assert not may_publish(p, consumer_create(events, name, pattern.filter(owner=theirs)))
        assert not may_publish(p, consumer_create(events, name, pattern.filter()))
        assert not may_publish(p, consumer_create(subjects.COMMANDS_STREAM, name, pattern.filter(owner=mine)))
    session = subjects.session_events(mine, "s1")
    assert may_publish(p, consumer_create(events, name, session))
    for durable in SERVICE_CONSUMERS:
        assert not may_publish(p, consumer_create(events, durable, session))
        assert not may_publish(p, f"$JS.API.CONSUMER.CREATE.{events}.{durable}")


@pytest.mark.parametrize(
    "subject",
    [
        "$JS.API.INFO",
        "$JS.API.STREAM.NAMES",
        "$JS.API.STREAM.LIST",
        f"$JS.API.STREAM.INFO.{subjects.EVENTS_STREAM}",
        f"$JS.API.STREAM.DELETE.{subjects.EVENTS_STREAM}",
        f"$JS.API.STREAM.PURGE.{subjects.COMMANDS_STREAM}",
        f"$JS.API.STREAM.UPDATE.{subjects.COMMANDS_STREAM}",
        f"$JS.API.STREAM.MSG.GET.{subjects.EVENTS_STREAM}",
        f"$JS.API.STREAM.MSG.DELETE.{subjects.EVENTS_STREAM}",
        f"$JS.API.DIRECT.GET.{subjects.EVENTS_STREAM}.eb.sessions.x.y.z",
        f"$JS.API.CONSUMER.CREATE.{subjects.EVENTS_STREAM}",
        f"$JS.API.CONSUMER.DURABLE.CREATE.{subjects.EVENTS_STREAM}.mine",
        f"$JS.API.CONSUMER.MSG.NEXT.{subjects.COMMANDS_STREAM}.offers-requests",
        f"$JS.API.CONSUMER.DELETE.{subjects.COMMANDS_STREAM}.offers-requests",
        f"$JS.API.CONSUMER.INFO.{subjects.COMMANDS_STREAM}.offers-requests",
        f"$JS.API.CONSUMER.NAMES.{subjects.COMMANDS_STREAM}",
        f"$JS.ACK.{subjects.COMMANDS_STREAM}.offers-requests.1.1.1.1.0",
        "$SYS.REQ.USER.AUTH",
        "$SYS.REQ.SERVER.PING",
    ],
)
def test_no_stream_administration_nor_other_consumers(subject: str) -> None:
    assert not may_publish(user_permissions(owners.local("alice").token), subject)


def test_the_claims_carry_explicit_allow_lists() -> None:
    alice = owners.local("alice").token
    claims = user_permissions(alice, service_consumers=["offers-requests"]).claims()
    assert claims["pub"]["allow"] == [
        "eb.requests.local==alice.*",
        "eb.updates.local==alice.*",
        "eb.info.pools",  # a request the scheduler answers: pools and their use, no one's sessions
        "$JS.API.CONSUMER.CREATE.EB_EVENTS.*.eb.offersets.local==alice.*",
        "$JS.API.CONSUMER.CREATE.EB_EVENTS.*.eb.replies.local==alice.*.*",
        "$JS.API.CONSUMER.CREATE.EB_EVENTS.*.eb.sessions.local==alice.*.*",
        FLOW_CONTROL,
    ]
    assert claims["pub"]["deny"] == [
        "$JS.API.CONSUMER.CREATE.*.offers-requests.>",
        "$JS.API.CONSUMER.CREATE.*.offers-requests",
    ]
    assert claims["sub"]["allow"][0] == "_INBOX_local==alice.>"
    assert claims["allowed_connection_types"] == ["STANDARD"]


def test_bad_names_and_empty_permissions_are_refused() -> None:
    with pytest.raises(ValueError, match="single subject token"):
        user_permissions("local:alice")
    with pytest.raises(ValueError, match="single subject token"):
        user_permissions("local==alice", service_consumers=["a.b"])
    with pytest.raises(ValueError, match="explicitly"):
        Permissions(pub_allow=(), pub_deny=(), sub_allow=("x",))

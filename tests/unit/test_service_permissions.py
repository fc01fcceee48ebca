"""The NATS permissions derived from the three services' real wirings (two pools): each publishes only
what it owns, pulls only from its own durables, reads only its inbox and its request subjects, and
none may create, delete or purge a stream. The server enforcing them is tested in
tests/integration/test_service_permissions.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared import subjects
from shared.bus.permissions import (
    DESTRUCTIVE_API,
    JS_ACK,
    JS_API,
    Permissions,
    inbox_prefix,
    service_permissions,
)
from shared.bus.wiring import Wiring
from shared.lifecycle import Phase
from shared.ops.embedded import SERVICES
from shared.service import installed_services
from shared.settings import Settings

POOLS = """
[[pools]]
name = "small"
platform = "local"
cores = 2
memory_gib = 4

[[pools]]
name = "big"
platform = "local"
cores = 8
memory_gib = 16
"""

#: Who publishes each phase (docs/architecture.md); OFFERED travels in the offer set, never alone.
PHASE_OWNERS = {
    Phase.ACCEPTED: "offers",
    Phase.REJECTED: "offers",
    Phase.EXPIRED: "offers",
    Phase.WAITING: "scheduler",
    Phase.PREPARING: "launcher",
    Phase.AVAILABLE: "launcher",
    Phase.RUNNING: "launcher",
    Phase.RELEASING: "launcher",
    Phase.COMPLETED: "launcher",
    Phase.FAILED: "launcher",
    Phase.CANCELLED: "launcher",
}


def overlaps(a: str, b: str) -> bool:
    """Whether two NATS subject patterns have a subject in common (``*`` one token, ``>`` the rest)."""
    left, right = a.split("."), b.split(".")
    for x, y in zip(left, right, strict=False):
        if ">" in (x, y):
            return True
        if "*" not in (x, y) and x != y:
            return False
    return len(left) == len(right)


def test_overlaps_follows_nats_rules() -> None:
    assert overlaps("a.*.c", "a.b.*")
    assert overlaps("a.>", "a.b.c")
    assert not overlaps("a.>", "a")
    assert not overlaps("a.*", "a.b.c")
    assert not overlaps("a.b", "a.c")


@pytest.fixture(scope="module")
def wirings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Wiring]:
    base = tmp_path_factory.mktemp("permissions")
    pools = base / "pools.toml"
    pools.write_text(POOLS)
    settings = Settings(data_dir=base / "data", pools=pools)
    return {name: entry.wiring(settings) for name, entry in installed_services().items()}


@pytest.fixture(scope="module")
def permissions(wirings: dict[str, Wiring]) -> dict[str, Permissions]:
    return {
        name: service_permissions(wiring, inbox_prefix=inbox_prefix(name)) for name, wiring in wirings.items()
    }


def may_publish(permissions: Permissions, subject: str) -> bool:
    """Whether some subject of ``subject`` (a pattern) may be published."""
    rules = permissions.publish
    return any(overlaps(allow, subject) for allow in rules.allow) and not any(
        overlaps(deny, subject) for deny in rules.deny if "*" not in subject and ">" not in subject
    )


def publishers(permissions: dict[str, Permissions], subject: str) -> set[str]:
    return {name for name, p in permissions.items() if may_publish(p, subject)}


def test_only_the_scheduler_commands_the_launcher_and_only_in_its_pools(
    permissions: dict[str, Permissions],
) -> None:
    assert publishers(permissions, subjects.LAUNCHER_COMMAND.filter()) == {"scheduler"}
    for verb in subjects.LauncherVerb:
        assert may_publish(permissions["scheduler"], subjects.launcher_command("big", verb))
        assert may_publish(permissions["scheduler"], subjects.launcher_command("small", verb))
        assert not may_publish(permissions["scheduler"], subjects.launcher_command("other", verb))


def test_only_offers_commands_the_scheduler(permissions: dict[str, Permissions]) -> None:
    assert publishers(permissions, subjects.SCHEDULER_COMMAND.filter()) == {"offers"}
    book_elsewhere = subjects.scheduler_command("other", subjects.SchedulerVerb.BOOK)
    assert not may_publish(permissions["offers"], book_elsewhere)


def test_each_phase_is_published_by_its_owner_only(permissions: dict[str, Permissions]) -> None:
    for phase in Phase:
        owner = PHASE_OWNERS.get(phase)
        expected = {owner} if owner else set()
        assert publishers(permissions, subjects.SESSION.filter(phase=phase.value)) == expected, phase


def test_the_facts_are_published_by_the_service_that_knows_them(permissions: dict[str, Permissions]) -> None:
    assert publishers(permissions, subjects.SCHEDULER_EVENT.filter()) == {"scheduler"}
    assert publishers(permissions, subjects.LAUNCHER_EVENT.filter()) == {"launcher"}
    assert publishers(permissions, subjects.OFFERSET.filter()) == {"offers"}
    assert publishers(permissions, subjects.UPDATE_RESULT.filter()) == {"offers"}
    for name in SERVICES:
        assert publishers(permissions, subjects.dead_letter(name)) == {name}
        assert publishers(permissions, subjects.ops_event(name, subjects.OpsFact.STREAM_FILLING)) == {name}


def test_no_service_reads_the_operations_subjects(permissions: dict[str, Permissions]) -> None:
    for name, granted in permissions.items():
        assert not any(overlaps(allowed, subjects.OPS.filter()) for allowed in granted.subscribe.allow), name


def test_no_service_speaks_for_a_user(permissions: dict[str, Permissions]) -> None:
    assert publishers(permissions, subjects.REQUEST.filter()) == set()
    assert publishers(permissions, subjects.UPDATE.filter()) == set()


def durable_of(allow: str) -> tuple[str, str] | None:
    """The (stream, durable) a JetStream grant names, or None for a stream-level grant. A grant for
    a start-up replay reader (`Consumer.replay_readers`) names the reader's durable."""
    tokens = allow.split(".")
    if allow.startswith(f"{JS_ACK}."):
        return tokens[2], tokens[3]
    if allow.startswith(f"{JS_API}.CONSUMER.CREATE."):
        return tokens[4], tokens[5].rsplit("-replay", 1)[0]
    if allow.startswith(f"{JS_API}.CONSUMER."):
        return tokens[-2], tokens[-1].rsplit("-replay", 1)[0]
    return None


def test_the_jetstream_calls_name_only_the_services_own_durables(
    wirings: dict[str, Wiring], permissions: dict[str, Permissions]
) -> None:
    for name, p in permissions.items():
        jetstream = [allow for allow in p.publish.allow if allow.startswith("$JS.")]
        durables = {(c.stream, c.durable) for c in wirings[name].consumers}
        assert {durable_of(allow) for allow in jetstream} - {None} == durables, name
        assert [allow for allow in jetstream if durable_of(allow) is None] == [
            f"{JS_API}.STREAM.INFO.{subjects.COMMANDS_STREAM}",
            f"{JS_API}.STREAM.INFO.{subjects.EVENTS_STREAM}",
        ]
        for stream, durable in durables:
            for needed in (
                f"{JS_API}.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
                f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{durable}",
                f"{JS_ACK}.{stream}.{durable}.>",
            ):
                assert needed in p.publish.allow, (name, needed)


def test_the_start_up_replay_reads_only_the_services_own_filter_subjects(
    wirings: dict[str, Wiring], permissions: dict[str, Permissions]
) -> None:
    """Each replay reader may be created on exactly one filter subject of its durable, named in the
    create subject (the server checks the request against it), and pulled from; nothing else."""
    for name, p in permissions.items():
        creates = {a for a in p.publish.allow if a.startswith(f"{JS_API}.CONSUMER.CREATE.")}
        pulls = {
            a for a in p.publish.allow if a.startswith(f"{JS_API}.CONSUMER.MSG.NEXT.") and "-replay" in a
        }
        readers = [(c.stream, reader) for c in wirings[name].consumers for reader in c.replay_readers]
        assert creates == {f"{JS_API}.CONSUMER.CREATE.{stream}.{n}.{f}" for stream, (n, f) in readers}, name
        assert pulls == {f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{n}" for stream, (n, _) in readers}, name
        assert not any(a.startswith(f"{JS_ACK}.") and "-replay" in a for a in p.publish.allow)
        foreign = subjects.offerset("mallory", "r1")  # a subject no service consumes
        for consumer in wirings[name].consumers:
            reader, own = consumer.replay_readers[0]
            create = f"{JS_API}.CONSUMER.CREATE.{consumer.stream}"
            assert not may_publish(p, f"{create}.{reader}")  # no filter named: any filter
            assert not may_publish(p, f"{create}.{reader}.{foreign}")
            assert not may_publish(p, f"{create}.{consumer.durable}.{own}")
            assert not may_publish(p, f"{create}.other.{own}")


def test_no_service_may_create_change_delete_or_purge_a_stream_or_a_foreign_durable(
    wirings: dict[str, Wiring], permissions: dict[str, Permissions]
) -> None:
    streams = (subjects.COMMANDS_STREAM, subjects.EVENTS_STREAM)
    all_durables = {c.durable: name for name, w in wirings.items() for c in w.consumers}
    for name, p in permissions.items():
        for stream in streams:
            assert may_publish(p, f"{JS_API}.STREAM.INFO.{stream}")
            for verb in ("CREATE", "UPDATE", "DELETE", "PURGE"):
                assert not may_publish(p, f"{JS_API}.STREAM.{verb}.{stream}"), (name, verb)
            for durable, owner in all_durables.items():
                if owner != name:
                    assert not may_publish(p, f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{durable}")
                    assert not may_publish(p, f"{JS_API}.CONSUMER.DURABLE.CREATE.{stream}.{durable}")
                    assert not may_publish(p, f"{JS_ACK}.{stream}.{durable}.1.1.1.0.0")
                assert not may_publish(p, f"{JS_API}.CONSUMER.DELETE.{stream}.{durable}")
        assert set(DESTRUCTIVE_API) <= set(p.publish.deny)
        # Nothing allowed is denied: the deny list only guards against a widened allow list.
        assert not any(overlaps(allow, deny) for allow in p.publish.allow for deny in p.publish.deny)


def test_a_service_subscribes_to_its_inbox_health_and_requests_only(
    wirings: dict[str, Wiring], permissions: dict[str, Permissions]
) -> None:
    for name, p in permissions.items():
        requests = {reply.subject for reply in wirings[name].replies}
        assert set(p.subscribe.allow) == {f"_INBOX_{name}.>", subjects.health(name)} | requests
        # Pull consumers deliver into the inbox: no stored subject is read by subscription.
        stored = subjects.COMMAND_SUBJECTS + subjects.EVENT_SUBJECTS
        assert not any(overlaps(allow, s) for allow in p.subscribe.allow for s in stored), name
        assert p.allow_responses  # the health and pools answers
    assert permissions["scheduler"].subscribe.allow[0] == subjects.pools_info()


def test_no_grant_is_wider_than_its_subject(permissions: dict[str, Permissions]) -> None:
    """A ``>`` only where the tokens after it are the server's (acks) or the service's own (inbox)."""
    for name, p in permissions.items():
        for allow in p.publish.allow + p.subscribe.allow:
            if allow.endswith(">"):
                assert allow.startswith(f"{JS_ACK}.") or allow == f"_INBOX_{name}.>", allow


def test_the_nats_config_block_is_plain_json(permissions: dict[str, Permissions]) -> None:
    block = permissions["launcher"].to_nats_config()
    assert json.loads(json.dumps(block)) == block
    assert block["publish"]["allow"] == list(permissions["launcher"].publish.allow)
    assert block["publish"]["deny"] == list(DESTRUCTIVE_API)
    assert block["subscribe"] == {"allow": ["eb.health.launcher", "_INBOX_launcher.>"]}
    assert block["allow_responses"] is True


@pytest.mark.parametrize(
    ("prefix", "why"),
    [
        ("_INBOX", "every client"),
        ("_INBOX.offers", "every client"),
        ("_INBOX_a.*", "wildcards"),
        ("_INBOX_a.>", "wildcards"),
        ("", "wildcards"),
        ("eb.inbox", "broker's subjects"),
    ],
)
def test_an_inbox_prefix_shared_or_wild_is_refused(wirings: dict[str, Wiring], prefix: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        service_permissions(wirings["offers"], inbox_prefix=prefix)


def test_the_permissions_follow_the_wiring(tmp_path: Path) -> None:
    """Built from the default settings (one pool, ``local``): no grant for a pool not configured."""
    wiring = installed_services()["scheduler"].wiring(Settings(data_dir=tmp_path / "data"))
    p = service_permissions(wiring, inbox_prefix=inbox_prefix("scheduler"))
    assert may_publish(p, subjects.launcher_command("local", subjects.LauncherVerb.LAUNCH))
    assert not may_publish(p, subjects.launcher_command("big", subjects.LauncherVerb.LAUNCH))

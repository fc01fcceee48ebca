"""The NATS permissions of a user: exactly their own owner's subjects, derived from the grammar.

For an owner token ``o`` (`shared.auth.owners`):

* publish their commands: `REQUEST` and `UPDATE` filtered on ``o`` (``eb.requests.o.*``, ...);
* receive their answers and events live: `OFFERSET`, `UPDATE_RESULT` and `SESSION` filtered on
  ``o``, plus their private reply inbox ``_INBOX_o.>`` (so the client must connect with
  ``inbox_prefix=inbox_prefix(o)``: with the default ``_INBOX.`` every request times out);
* read their history through JetStream only by creating a consumer whose filter is one of those
  readable subjects: the ``$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>`` form, which the server
  refuses unless the filter in the subject equals the one in the body (error 10131). nats-py uses
  that form only when ``ConsumerConfig.name`` is set;
* answer flow control of their push consumers (``$JS.FC.>``).

Nothing else: no other `$JS.API` subject (stream info, names, list, delete, purge, message get,
direct get, durable create, pull next, consumer delete), no service consumer name (denied
explicitly, since the consumer name is a wildcard in the create permission), no `eb.scheduler`,
`eb.launcher`, phase, health or dead-letter subject. docs/security-callout.md says what the server
cannot restrict this way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from shared import subjects
from shared.subjects import Pattern, is_token

#: What a user sends: their own commands.
WRITABLE: tuple[Pattern, ...] = (subjects.REQUEST, subjects.UPDATE)
#: What a user may ask anyone: the pools and their use (``broker pools``), answered by the scheduler.
QUERIES: tuple[Pattern, ...] = (subjects.POOLS_INFO,)
#: What a user receives: the answers and events of their own requests and sessions.
READABLE: tuple[Pattern, ...] = (subjects.OFFERSET, subjects.UPDATE_RESULT, subjects.SESSION)
#: The flow-control replies of push consumers (ordered consumers ask for flow control).
FLOW_CONTROL = "$JS.FC.>"
CONNECTION_TYPES = ("STANDARD",)


def inbox_prefix(owner_token: str) -> str:
    """The private reply-inbox prefix of an owner; the client passes it as ``inbox_prefix``."""
    return f"_INBOX_{owner_token}"


def consumer_create(stream: str, name: str, filter_subject: str) -> str:
    """The `$JS.API` subject that creates consumer `name` on `stream` with one filter subject."""
    return f"$JS.API.CONSUMER.CREATE.{stream}.{name}.{filter_subject}"


@dataclass(frozen=True)
class Permissions:
    pub_allow: tuple[str, ...]
    pub_deny: tuple[str, ...]
    sub_allow: tuple[str, ...]
    connection_types: tuple[str, ...] = CONNECTION_TYPES

    def __post_init__(self) -> None:
        # A user JWT with an empty allow list gets the account's defaults: everything.
        if not self.pub_allow or not self.sub_allow:
            raise ValueError("a user's permissions must allow something explicitly")

    def claims(self) -> dict[str, Any]:
        """The permission fields of the ``nats`` claim of a user JWT."""
        return {
            "pub": {"allow": list(self.pub_allow), "deny": list(self.pub_deny)},
            "sub": {"allow": list(self.sub_allow)},
            "allowed_connection_types": list(self.connection_types),
        }


def user_permissions(owner_token: str, *, service_consumers: Iterable[str] = ()) -> Permissions:
    """The permissions of owner `owner_token`.

    `service_consumers` are the durable names of every service's consumers (from their wiring
    tables): a create request naming one would update that durable, so each is denied by name.
    """
    if not is_token(owner_token):
        raise ValueError("an owner token must be a single subject token")
    creates = []
    for pattern in READABLE:
        assert pattern.stream is not None
        creates.append(consumer_create(pattern.stream, "*", pattern.filter(owner=owner_token)))
    denied = []
    for name in sorted(set(service_consumers)):
        if not is_token(name):
            raise ValueError(f"consumer name {name!r} is not a single subject token")
        # Exactly the create subjects naming it: with one filter (any number of tokens) or none.
        denied += [consumer_create("*", name, ">"), f"$JS.API.CONSUMER.CREATE.*.{name}"]
    return Permissions(
        pub_allow=(
            *(p.filter(owner=owner_token) for p in WRITABLE),
            *(p.filter() for p in QUERIES),
            *creates,
            FLOW_CONTROL,
        ),
        pub_deny=tuple(denied),
        sub_allow=(inbox_prefix(owner_token) + ".>", *(p.filter(owner=owner_token) for p in READABLE)),
    )

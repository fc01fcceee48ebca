"""A service's NATS permissions, derived from its `Wiring` and the streams of the subject grammar.

Least privilege, so that a leaked service key can do no more than the service itself: it may

- publish exactly the subjects its wiring publishes (the parameters the wiring fixes stay fixed, the
  others are wild: offers answers every owner, but commands only the pools it was built for);
- answer requests on its reply subjects and its health subject (``allow_responses``: once per
  request received, to that request's reply subject only, never into other clients' inboxes);
- make the JetStream API calls its runtime makes, and only for its own durables: STREAM.INFO of
  the streams, create/update (``CONSUMER.DURABLE.CREATE``, what nats-py sends for a consumer with
  only a durable name), INFO and MSG.NEXT of each durable, and acks (``$JS.ACK.<stream>.<durable>.>``);
- read the last minutes of its own filter subjects at start (`replay_api`): an ephemeral consumer
  per filter subject, created with that filter named in the request's subject, and pulled from;
- subscribe to its own inbox prefix, its reply subjects and its health subject, nothing else: pull
  consumers deliver into the inbox.

It may not create, update, delete or purge a stream (an operator identity does that before the
services start: see ``ServiceRuntime(manage_streams=False)``), and may not touch another service's
durables. The destructive JetStream calls are also denied explicitly: a deny wins over any allow, so
they stay refused even if an operator widens a service's allow list by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared import subjects
from shared.bus.wiring import Wiring

JS_API = "$JS.API"
JS_ACK = "$JS.ACK"
#: nats-py's default: shared by every client that sets none, so a subscription to it reads their replies.
SHARED_INBOX_PREFIX = "_INBOX"
#: What no service may ever do to the streams or the consumers.
DESTRUCTIVE_API = (
    f"{JS_API}.STREAM.DELETE.>",
    f"{JS_API}.STREAM.PURGE.>",
    f"{JS_API}.STREAM.MSG.DELETE.>",
    f"{JS_API}.CONSUMER.DELETE.>",
)


@dataclass(frozen=True)
class SubjectRules:
    """Subjects allowed and denied for one direction (publish or subscribe); a deny wins."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()

    def to_nats_config(self) -> dict[str, list[str]]:
        rules = {"allow": list(self.allow)}
        if self.deny:
            rules["deny"] = list(self.deny)
        return rules


@dataclass(frozen=True)
class Permissions:
    publish: SubjectRules
    subscribe: SubjectRules
    #: Lets the service answer a request it received on that request's reply subject (once).
    allow_responses: bool = True

    def to_nats_config(self) -> dict[str, Any]:
        """The ``permissions`` block of a nats-server user entry (JSON: the server's config reads it)."""
        block: dict[str, Any] = {
            "publish": self.publish.to_nats_config(),
            "subscribe": self.subscribe.to_nats_config(),
        }
        if self.allow_responses:
            block["allow_responses"] = True
        return block


def api_prefix(domain: str | None) -> str:
    """Where the JetStream API of ``domain`` is (None: this server's own)."""
    return JS_API if domain is None else f"$JS.{domain}.API"


def in_domain(subject: str, domain: str) -> str:
    """A ``$JS.API`` subject as a client of JetStream ``domain`` sends it (others unchanged)."""
    prefix = f"{JS_API}."
    return f"{api_prefix(domain)}.{subject[len(prefix) :]}" if subject.startswith(prefix) else subject


def inbox_prefix(service: str) -> str:
    """A service's private inbox prefix: its permissions let it read replies there and nowhere else."""
    return f"{SHARED_INBOX_PREFIX}_{service}"


def streams() -> tuple[str, ...]:
    """The streams of the grammar, which every service's runtime checks at start."""
    return tuple(sorted({p.stream for p in subjects.PATTERNS if p.stream is not None}))


def durable_api(stream: str, durable: str) -> tuple[str, ...]:
    """The JetStream subjects a runtime publishes to for one of its durables."""
    return (
        f"{JS_API}.CONSUMER.DURABLE.CREATE.{stream}.{durable}",  # create, and reconcile its settings
        f"{JS_API}.CONSUMER.INFO.{stream}.{durable}",
        f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{durable}",  # pull requests (shared.bus.pulling)
        f"{JS_ACK}.{stream}.{durable}.>",  # ack, in-progress and nak of each delivered message
    )


def replay_api(stream: str, readers: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    """The JetStream subjects the start-up replay (`shared.bus.replay`) publishes to: create each
    reader on exactly its filter subject (the server refuses a request whose filter differs from
    the one its subject names), and pull from it. No ack: the readers acknowledge nothing."""
    api: list[str] = []
    for name, subject in readers:
        api += [
            f"{JS_API}.CONSUMER.CREATE.{stream}.{name}.{subject}",
            f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{name}",
        ]
    return tuple(api)


def service_permissions(wiring: Wiring, *, inbox_prefix: str, js_domain: str | None = None) -> Permissions:
    """What the service of ``wiring`` may publish and subscribe to, and nothing more; its
    JetStream calls in ``js_domain`` (a service at a site uses the hub's: `shared.ops.site`)."""
    _check_inbox_prefix(inbox_prefix)
    publish = [p.subject for p in wiring.publishes]
    publish += [f"{JS_API}.STREAM.INFO.{stream}" for stream in streams()]
    for consumer in wiring.consumers:
        publish += durable_api(consumer.stream, consumer.durable)
        publish += replay_api(consumer.stream, consumer.replay_readers)
    deny: tuple[str, ...] = DESTRUCTIVE_API
    if js_domain is not None:
        publish = [in_domain(subject, js_domain) for subject in publish]
        deny = (*deny, *(in_domain(subject, js_domain) for subject in deny))
    subscribe = [reply.subject for reply in wiring.replies]
    subscribe += [wiring.health, f"{inbox_prefix}.>"]
    return Permissions(
        publish=SubjectRules(allow=_unique(publish), deny=deny),
        subscribe=SubjectRules(allow=_unique(subscribe)),
    )


def _check_inbox_prefix(prefix: str) -> None:
    tokens = prefix.split(".")
    if not all(subjects.is_token(token) for token in tokens):
        raise ValueError(f"inbox prefix {prefix!r} must be subject tokens without wildcards")
    if tokens[0] == SHARED_INBOX_PREFIX:
        raise ValueError(
            f"inbox prefix {prefix!r} is under {SHARED_INBOX_PREFIX}, which every client without its own "
            "prefix uses: a service allowed to read it would read their replies"
        )
    if tokens[0] == "eb":
        raise ValueError(f"inbox prefix {prefix!r} overlaps the broker's subjects")


def _unique(items: list[str]) -> tuple[str, ...]:
    """In first-seen order, so the derived lists read like the wiring table."""
    return tuple(dict.fromkeys(items))

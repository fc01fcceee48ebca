"""The bus contract as an AsyncAPI 3.0.0 document, derived from the services' wiring tables.

Nothing in it is written per subject: the channels are the subject patterns of `shared.subjects`,
the payload schemas come from the pydantic models the wirings declare, and each service's operations
are its consumers' routes (``receive``) and its publications (``send``). The user's side follows
from the grammar: a subject with an ``{owner}`` is the user's; the user sends its commands and
receives its events, with the payloads the services declare for them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version as distribution_version
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from shared import subjects
from shared.bus.wiring import Wiring
from shared.models.schema import KindedSchemas
from shared.service import installed_services
from shared.settings import Settings
from shared.subjects import Kind, Pattern

Action = Literal["send", "receive"]

ASYNCAPI = "3.0.0"
DISTRIBUTION = "execution-broker"
USER = "user"
#: The parameter every subject a user sends or receives carries, and permissions check.
OWNER = "owner"

PARAMETERS: Mapping[str, str] = {
    OWNER: "The user the subject belongs to: their identity, escaped into one subject token. "
    "A user may only send and receive subjects with their own owner token.",
    "request_id": "The request's id, chosen by the client (one subject token, e.g. a UUID).",
    "session_id": "The session's id: the id of the offer it was made from.",
    "update_id": "The id of the update this answers: the update's `Nats-Msg-Id` header (chosen by "
    "the client), also in the answer's `update_id` field.",
    "phase": "The phase the session entered.",
    "pool": "A resource pool: each pool has its own scheduler and launcher consumer.",
    "verb": "What the command asks for.",
    "fact": "What happened.",
    "service": "The service's name.",
}

_KIND = {
    Kind.COMMAND: "A command: one service acts on it. Stored in the {stream} stream.",
    Kind.EVENT: "An event: a fact, for any number of readers, its history kept. Stored in the {stream} "
    "stream.",
    Kind.REQUEST: "Core NATS request/reply, not stored: the answer goes to the request's reply subject.",
}

_HEADERS = {
    "type": "object",
    "properties": {
        "Nats-Msg-Id": {
            "type": "string",
            "description": "The message's id: the stream drops a second message with the same id "
            "within its duplicate window, so a sender may resend until it sees the answer.",
        },
        "traceparent": {"type": "string", "description": "W3C trace context of the action it belongs to."},
    },
}
_HEADERS_NAME = "JetStreamHeaders"


@dataclass(frozen=True)
class _Use:
    """One declaration naming a pattern: a route, a publication or a reply of one service."""

    service: str
    action: Action
    pattern: Pattern
    fixed: Mapping[str, str]
    payload: type[BaseModel] | None
    durable: str | None = None

    @property
    def subject(self) -> str:
        return self.pattern.filter(**self.fixed)


def document(wirings: Sequence[Wiring], *, version: str, host: str = "localhost:4222") -> dict[str, Any]:
    """The AsyncAPI document of the services wired as ``wirings``; ``version`` is the broker's."""
    uses = list(_uses(wirings))
    channel_ids = {pattern: _channel_id(pattern) for pattern in subjects.PATTERNS}
    if len(set(channel_ids.values())) != len(channel_ids):
        raise ValueError("two subject patterns share a channel id")
    models = sorted({use.payload for use in uses if use.payload is not None}, key=lambda m: m.__name__)
    if len({m.__name__ for m in models}) != len(models):
        raise ValueError("two payload models share a name")
    # One schema per model, as the models read a message: every message is read by the same model
    # that wrote it, so the schema is the contract at both ends (and keeps formats such as date-time).
    modes: list[tuple[type[BaseModel], JsonSchemaMode]] = [(m, "validation") for m in models]
    refs, definitions = models_json_schema(
        modes, ref_template="#/components/schemas/{model}", schema_generator=KindedSchemas
    )
    schemas = dict(definitions.get("$defs", {}))
    if _HEADERS_NAME in schemas:
        raise ValueError(f"a payload model is named {_HEADERS_NAME}")
    schemas[_HEADERS_NAME] = _HEADERS
    messages = {m.__name__: _message(m, refs[(m, mode)], stored=_stored(m, uses)) for m, mode in modes}
    channels = {
        channel_ids[pattern]: _channel(pattern, [u for u in uses if u.pattern == pattern])
        for pattern in subjects.PATTERNS
    }
    operations: dict[str, Any] = {}
    for key, operation in _operations(uses, channel_ids):
        if key in operations:
            raise ValueError(f"two operations are named {key}")
        operations[key] = operation
    return {
        "asyncapi": ASYNCAPI,
        "info": {
            "title": "IVOA Execution Broker: the bus",
            "version": version,
            "description": "Every subject of the broker on NATS JetStream, who sends it and who receives "
            "it, with its payload. A subject names its area after `eb`, then the owner (on a user's "
            "subjects) or the pool (on a service's); commands live in the EB_COMMANDS stream, events "
            "in EB_EVENTS. Users send requests and updates (JSON, or YAML) and receive offer sets, "
            "update results and session events, always on subjects with their own owner token.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "nats": {
                "host": "{host}",
                "protocol": "nats",
                "description": "The broker's NATS server with JetStream.",
                "variables": {"host": {"default": host, "description": "host:port of the NATS server"}},
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }


def installed_document(settings: Settings | None = None) -> dict[str, Any]:
    """The document of every installed service, as ``settings`` (the environment's) configure them."""
    settings = settings or Settings()
    wirings = [entry.wiring(settings) for entry in installed_services().values()]
    return document(wirings, version=distribution_version(DISTRIBUTION))


# -- reading the wirings ----------------------------------------------------------------------------


def _uses(wirings: Sequence[Wiring]) -> Iterable[_Use]:
    for wiring in wirings:
        for consumer in wiring.consumers:
            for route in consumer.routes:
                yield _Use(
                    wiring.service, "receive", route.pattern, route.fixed, route.payload, consumer.durable
                )
        for publication in wiring.publishes:
            yield _Use(wiring.service, "send", publication.pattern, publication.fixed, publication.payload)
        for reply in wiring.replies:
            yield _Use(wiring.service, "receive", reply.pattern, reply.fixed, None)
        # Every service answers on its health subject (the runtime subscribes it).
        yield _Use(wiring.service, "receive", subjects.HEALTH, {"service": wiring.service}, None)


def _channel_id(pattern: Pattern) -> str:
    """``eb.scheduler.{pool}.cmd.{verb}`` → ``scheduler-cmd``: the fixed tokens after ``eb``."""
    return "-".join(token for token in pattern.tokens[1:] if not token.startswith("{"))


def _stored(model: type[BaseModel], uses: Sequence[_Use]) -> bool:
    return any(use.payload is model and use.pattern.stream is not None for use in uses)


# -- the document's parts -----------------------------------------------------------------------------


def _message(model: type[BaseModel], payload: Mapping[str, Any], *, stored: bool) -> dict[str, Any]:
    doc = (model.__doc__ or "").strip()
    message: dict[str, Any] = {"name": model.__name__, "payload": dict(payload)}
    if doc:
        message["summary"] = doc.splitlines()[0]
    if stored:
        message["headers"] = {"$ref": f"#/components/schemas/{_HEADERS_NAME}"}
    return message


def _channel(pattern: Pattern, uses: Sequence[_Use]) -> dict[str, Any]:
    channel: dict[str, Any] = {
        "address": pattern.channel,
        "summary": pattern.summary,
        "description": _KIND[pattern.kind].format(stream=pattern.stream),
        "tags": [{"name": pattern.kind.value}],
    }
    if pattern.params:
        channel["parameters"] = {name: _parameter(pattern, name, uses) for name in pattern.params}
    models = sorted({u.payload.__name__ for u in uses if u.payload is not None})
    if models:
        channel["messages"] = {name: {"$ref": f"#/components/messages/{name}"} for name in models}
    return channel


def _parameter(pattern: Pattern, name: str, uses: Sequence[_Use]) -> dict[str, Any]:
    description = PARAMETERS.get(name)
    if description is None:
        raise ValueError(f"{pattern.template}: the parameter {name} has no description in PARAMETERS")
    parameter: dict[str, Any] = {"description": description}
    # The values on the wire are those published; a pattern nobody publishes is the users' to send.
    senders = [u for u in uses if u.action == "send"] or list(uses)
    if senders and all(name in u.fixed for u in senders):
        parameter["enum"] = sorted({u.fixed[name] for u in senders})
    return parameter


def _operations(uses: Sequence[_Use], channel_ids: Mapping[Pattern, str]) -> Iterable[tuple[str, Any]]:
    groups: dict[tuple[str, Action, str | None, Pattern], list[_Use]] = defaultdict(list)
    for use in uses:
        groups[(use.service, use.action, use.durable, use.pattern)].append(use)
    for (service, action, durable, pattern), group in groups.items():
        channel = channel_ids[pattern]
        operation = _operation(action, channel, pattern, group, service)
        operation["x-eb-subjects"] = list(dict.fromkeys(u.subject for u in group))
        listed = ", ".join(f"`{s}`" for s in operation["x-eb-subjects"])
        if durable is not None:
            operation["description"] = f"The durable `{durable}` on {pattern.stream} receives {listed}."
            operation["x-eb-durable"] = durable
            yield f"{service}.{durable}.{channel}", operation
        elif pattern.kind is Kind.REQUEST:
            operation["description"] = f"Answers requests on {listed}."
            yield f"{service}.answer.{channel}", operation
        else:
            operation["description"] = f"Publishes {listed}."
            yield f"{service}.send.{channel}", operation
    yield from _user_operations(uses, channel_ids)


def _user_operations(uses: Sequence[_Use], channel_ids: Mapping[Pattern, str]) -> Iterable[tuple[str, Any]]:
    """A user sends the commands on subjects with an owner, and receives the events."""
    for pattern in subjects.PATTERNS:
        if OWNER not in pattern.params or pattern.kind is Kind.REQUEST:
            continue
        action: Action = "send" if pattern.kind is Kind.COMMAND else "receive"
        # What a user sends, a service receives (and the other way round): same payloads.
        peer = "receive" if action == "send" else "send"
        group = [u for u in uses if u.pattern == pattern and u.action == peer]
        operation = _operation(action, channel_ids[pattern], pattern, group, USER)
        operation["description"] = (
            f"A user {'publishes' if action == 'send' else 'receives'} `{pattern.channel}` with "
            "their own owner token only."
        )
        yield f"{USER}.{action}.{channel_ids[pattern]}", operation


def _operation(
    action: Action, channel: str, pattern: Pattern, group: Sequence[_Use], tag: str
) -> dict[str, Any]:
    models = sorted({u.payload.__name__ for u in group if u.payload is not None})
    operation: dict[str, Any] = {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel}"},
        "summary": pattern.summary,
        "tags": [{"name": tag}],
    }
    if models:
        operation["messages"] = [{"$ref": f"#/channels/{channel}/messages/{name}"} for name in models]
    return operation

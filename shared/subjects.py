"""Every subject and stream of the broker, in one grammar: ``eb.<area>.<owner-or-pool>.<id>…``.

The token NATS permissions must check (the owner of a user's subject, the pool of a service's) is
always the third, so a permission is one wildcard pattern. The owner is in every subject a user
sends *or receives*, so the server itself can keep users apart. Handlers never read tokens by
position: they call the typed ``parse_*`` functions, which reject a subject of the wrong shape.

Commands (imperative, one consumer acts on them) live in the commands stream; events (facts, any
number of readers, history kept) live in the events stream. Core request/reply subjects (health,
pools) are not stored.

Operations subjects (``eb.ops.<service>.<fact>``, e.g. a stream filling up) are events about the
installation, not about a user's work: their third token is the service that noticed, and only
operators read them (``eb.ops.>``); no user's permissions name them (`shared.auth.permissions`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

COMMANDS_STREAM = "EB_COMMANDS"
EVENTS_STREAM = "EB_EVENTS"

_TOKEN = re.compile(r"^[A-Za-z0-9_\-=@]+$")
_PARAM = re.compile(r"^\{([a-z_]+)\}$")


def is_token(value: str) -> bool:
    """A NATS subject token must not contain dots, wildcards or whitespace."""
    return bool(_TOKEN.fullmatch(value))


class SubjectError(ValueError):
    """A subject that does not have the shape its handler expects (never trusted, never guessed)."""


class Kind(StrEnum):
    COMMAND = "command"
    EVENT = "event"
    REQUEST = "request"  # core request/reply, not stored


@dataclass(frozen=True)
class Pattern:
    """One subject shape, e.g. ``eb.requests.{owner}.{request_id}``.

    ``format`` builds a concrete subject (each value must be a single token), ``filter`` a
    subscription subject with ``*`` for every parameter not given, ``parse`` the parameters back.
    """

    template: str
    kind: Kind
    stream: str | None
    summary: str
    tokens: tuple[str, ...] = field(init=False, repr=False)
    params: tuple[str, ...] = field(init=False, repr=False)
    # Per token: the parameter's name, or None for a literal. Built once: subjects are built and
    # parsed for every message.
    _slots: tuple[str | None, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        tokens = tuple(self.template.split("."))
        slots = tuple(m.group(1) if (m := _PARAM.match(t)) else None for t in tokens)
        object.__setattr__(self, "tokens", tokens)
        object.__setattr__(self, "params", tuple(name for name in slots if name is not None))
        object.__setattr__(self, "_slots", slots)

    def format(self, **values: str) -> str:
        return self._fill(values, wildcard=False)

    def filter(self, **values: str) -> str:
        return self._fill(values, wildcard=True)

    def _fill(self, values: dict[str, str], *, wildcard: bool) -> str:
        unknown = set(values) - set(self.params)
        if unknown:
            raise SubjectError(f"{self.template} has no parameter {', '.join(sorted(unknown))}")
        out = []
        for token, name in zip(self.tokens, self._slots, strict=True):
            if name is None:
                out.append(token)
                continue
            value = values.get(name)
            if value is None or (wildcard and value == "*"):
                if not wildcard:
                    raise SubjectError(f"{self.template} needs {name}")
                out.append("*")
            elif is_token(value):
                out.append(value)
            else:
                raise SubjectError(f"{name} {value!r} is not a single subject token")
        return ".".join(out)

    def parse(self, subject: str) -> dict[str, str]:
        parts = subject.split(".")
        if len(parts) != len(self.tokens):
            raise SubjectError(f"{subject!r} is not a {self.template} subject")
        values: dict[str, str] = {}
        for token, name, part in zip(self.tokens, self._slots, parts, strict=True):
            if name is None:
                if part != token:
                    raise SubjectError(f"{subject!r} is not a {self.template} subject")
            elif is_token(part):
                values[name] = part
            else:
                raise SubjectError(f"{subject!r}: {name} is not a single token")
        return values

    @property
    def channel(self) -> str:
        """The AsyncAPI channel address: parameters in braces."""
        return self.template


def _p(template: str, kind: Kind, stream: str | None, summary: str) -> Pattern:
    return Pattern(template, kind, stream, summary)


_C, _E, _R = Kind.COMMAND, Kind.EVENT, Kind.REQUEST
REQUEST = _p(
    "eb.requests.{owner}.{request_id}", _C, COMMANDS_STREAM, "An ExecutionRequest, as the user wrote it"
)
OFFERSET = _p("eb.offersets.{owner}.{request_id}", _E, EVENTS_STREAM, "The offer set answering a request")
UPDATE = _p(
    "eb.updates.{owner}.{session_id}", _C, COMMANDS_STREAM, "A session update (accept, reject, cancel)"
)
UPDATE_RESULT = _p(
    "eb.replies.{owner}.{session_id}.{update_id}", _E, EVENTS_STREAM, "The answer to one session update"
)
SESSION = _p("eb.sessions.{owner}.{session_id}.{phase}", _E, EVENTS_STREAM, "A session entered a phase")
SCHEDULER_COMMAND = _p(
    "eb.scheduler.{pool}.cmd.{verb}", _C, COMMANDS_STREAM, "A command to a pool's scheduler"
)
SCHEDULER_EVENT = _p("eb.scheduler.{pool}.evt.{fact}", _E, EVENTS_STREAM, "A fact from a pool's scheduler")
LAUNCHER_COMMAND = _p("eb.launcher.{pool}.cmd.{verb}", _C, COMMANDS_STREAM, "A command to a pool's launcher")
LAUNCHER_EVENT = _p("eb.launcher.{pool}.evt.{fact}", _E, EVENTS_STREAM, "A fact from a pool's launcher")
DEAD_LETTER = _p("eb.dead.{service}", _E, EVENTS_STREAM, "A message a service could never process")
OPS = _p(
    "eb.ops.{service}.{fact}", _E, EVENTS_STREAM, "An operational fact a service noticed, for operators only"
)
HEALTH = _p("eb.health.{service}", _R, None, "Answers while the service is up and consuming")
POOLS_INFO = _p("eb.info.pools", _R, None, "The pools, their configuration and current use")

PATTERNS: tuple[Pattern, ...] = (
    REQUEST,
    OFFERSET,
    UPDATE,
    UPDATE_RESULT,
    SESSION,
    SCHEDULER_COMMAND,
    SCHEDULER_EVENT,
    LAUNCHER_COMMAND,
    LAUNCHER_EVENT,
    DEAD_LETTER,
    OPS,
    HEALTH,
    POOLS_INFO,
)


def stream_subjects(stream: str) -> tuple[str, ...]:
    """What a stream stores: every pattern of it with all parameters wild (they never overlap)."""
    return tuple(p.filter() for p in PATTERNS if p.stream == stream)


COMMAND_SUBJECTS = stream_subjects(COMMANDS_STREAM)
EVENT_SUBJECTS = stream_subjects(EVENTS_STREAM)


class SchedulerVerb(StrEnum):
    QUOTE = "quote"
    BOOK = "book"
    RELEASE = "release"
    CANCEL = "cancel"


class SchedulerFact(StrEnum):
    QUOTED = "quoted"


class LauncherVerb(StrEnum):
    LAUNCH = "launch"
    STOP = "stop"
    FAIL = "fail"


class LauncherFact(StrEnum):
    MEASURED = "measured"


class OpsFact(StrEnum):
    #: A stream holds most of its ``max_bytes`` (`shared.bus.upkeep`).
    STREAM_FILLING = "stream_filling"


# -- building subjects ----------------------------------------------------------------------------


def request(owner: str, request_id: str) -> str:
    return REQUEST.format(owner=owner, request_id=request_id)


def offerset(owner: str, request_id: str) -> str:
    return OFFERSET.format(owner=owner, request_id=request_id)


def update(owner: str, session_id: str) -> str:
    return UPDATE.format(owner=owner, session_id=session_id)


def update_result(owner: str, session_id: str, update_id: str) -> str:
    return UPDATE_RESULT.format(owner=owner, session_id=session_id, update_id=update_id)


def session_event(owner: str, session_id: str, phase: str) -> str:
    return SESSION.format(owner=owner, session_id=session_id, phase=phase)


def session_events(owner: str = "*", session_id: str = "*") -> str:
    """A subscription to one owner's (or everyone's) events of one session (or of all)."""
    return SESSION.filter(owner=owner, session_id=session_id)


def scheduler_command(pool: str, verb: SchedulerVerb) -> str:
    return SCHEDULER_COMMAND.format(pool=pool, verb=verb.value)


def scheduler_event(pool: str, fact: SchedulerFact) -> str:
    return SCHEDULER_EVENT.format(pool=pool, fact=fact.value)


def launcher_command(pool: str, verb: LauncherVerb) -> str:
    return LAUNCHER_COMMAND.format(pool=pool, verb=verb.value)


def launcher_event(pool: str, fact: LauncherFact) -> str:
    return LAUNCHER_EVENT.format(pool=pool, fact=fact.value)


def dead_letter(service: str) -> str:
    return DEAD_LETTER.format(service=service)


def ops_event(service: str, fact: OpsFact) -> str:
    return OPS.format(service=service, fact=fact.value)


def health(service: str) -> str:
    return HEALTH.format(service=service)


def pools_info() -> str:
    return POOLS_INFO.format()


def phase_msg_id(session_id: str, phase: str) -> str:
    """A phase happens at most once per session, so this id lets the stream drop any resend."""
    return f"{session_id}:{phase}"


# -- reading subjects -----------------------------------------------------------------------------


class RequestSubject(NamedTuple):
    owner: str
    request_id: str


class UpdateSubject(NamedTuple):
    owner: str
    session_id: str


class SessionSubject(NamedTuple):
    owner: str
    session_id: str
    phase: str


def parse_request(subject: str) -> RequestSubject:
    v = REQUEST.parse(subject)
    return RequestSubject(v["owner"], v["request_id"])


def parse_offerset(subject: str) -> RequestSubject:
    v = OFFERSET.parse(subject)
    return RequestSubject(v["owner"], v["request_id"])


def parse_update(subject: str) -> UpdateSubject:
    v = UPDATE.parse(subject)
    return UpdateSubject(v["owner"], v["session_id"])


def parse_session_event(subject: str) -> SessionSubject:
    v = SESSION.parse(subject)
    return SessionSubject(v["owner"], v["session_id"], v["phase"])


# The area token (and for the pool areas the cmd/evt token) decides the stream. This runs for every
# published message, so it is a dictionary look-up rather than a pattern match.
_POOL_AREAS = {"scheduler", "launcher"}
_POOL_STREAM = {"cmd": COMMANDS_STREAM, "evt": EVENTS_STREAM}


def stream_for(subject: str) -> str:
    """The stream that stores a subject (raises for a subject no stream stores)."""
    parts = subject.split(".", 4)
    area = parts[1] if len(parts) > 1 and parts[0] == "eb" else ""
    stream = (
        _POOL_STREAM.get(parts[3]) if area in _POOL_AREAS and len(parts) > 3 else _STREAM_OF_AREA.get(area)
    )
    if stream is None:
        raise SubjectError(f"no stream stores {subject!r}")
    return stream


_STREAM_OF_AREA: dict[str, str] = {
    p.tokens[1]: p.stream for p in PATTERNS if p.stream is not None and p.tokens[1] not in _POOL_AREAS
}

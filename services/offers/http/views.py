"""Documents of the API, built from the offers read model: the stored offer as it was made, with
its CURRENT phase, the options legal in that phase, every message so far, connectors and outputs."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from services.offers.domain import session_options
from services.offers.store import OffersetRow, SessionRow
from shared.auth.identities import USERNAME
from shared.lifecycle import TERMINAL
from shared.models import (
    EnumValueOption,
    MessageItem,
    OfferSetResponse,
    ScheduledExecutionSession,
    format_datetime,
    to_jsonable,
)

#: Outputs (a result file, a log) are listed as finished connectors of this kind plus their name.
OUTPUT_CONNECTOR_KIND = "urn:execution-broker:connectors/output/"


class ErrorResponse(BaseModel):
    """Every 4xx/5xx body: what went wrong, as schema message items."""

    messages: list[MessageItem]
    #: With a refused update of a session the caller owns: the updates legal in its phase now (as
    #: the session's ``meta.options``); absent when none is.
    options: list[EnumValueOption] | None = None


class SessionList(BaseModel):
    sessions: list[ScheduledExecutionSession] = Field(default_factory=list)


class SessionHistory(BaseModel):
    """The phases a session went through, from the events stream, and where to see its trace."""

    session: str
    trace_id: str | None = None
    trace_url: str | None = None
    events: list[dict[str, Any]] = Field(default_factory=list)


class IdentityRequest(BaseModel):
    """A new local identity; ``admin`` makes it an administrator too."""

    username: str = Field(pattern=USERNAME.pattern)
    password: str = Field(min_length=1)
    admin: bool = False


class PasswordRequest(BaseModel):
    """A new password for a local identity (it stays disabled if it was)."""

    password: str = Field(min_length=1)


class IdentityView(BaseModel):
    """A local identity as the administrator sees it: never its password hash."""

    username: str
    admin: bool
    disabled: bool


class IdentityList(BaseModel):
    identities: list[IdentityView] = Field(default_factory=list)


class EventToken(BaseModel):
    token: str
    expires: int


class WhoAmI(BaseModel):
    username: str
    owner: str
    admin: bool
    jaeger_url: str
    public_reads: bool


def _connectors(row: SessionRow) -> list[dict[str, str]]:
    connectors = [dict(c) for c in row.connectors]
    if row.phase in TERMINAL:
        # A connector reported while the session ran (a notebook's URL) leads nowhere once it ended.
        connectors = [c | {"status": "FINISHED"} for c in connectors]
    for name, location in sorted(row.outputs.items()):
        protocol = location.split("://", 1)[0].upper() if "://" in location else "FILE"
        connectors.append(
            {
                "kind": OUTPUT_CONNECTOR_KIND + name,
                "status": "FINISHED",
                "protocol": protocol,
                "location": location,
            }
        )
    return connectors


def session_model(row: SessionRow) -> ScheduledExecutionSession:
    document = dict(row.document)
    document["phase"] = row.phase.value
    meta = dict(document.get("meta") or {})
    messages = list(meta.get("messages") or []) + list(row.messages)
    meta["messages"] = messages or None
    options = session_options(row.phase)
    meta["options"] = [to_jsonable(o) for o in options] or None
    meta["modified"] = format_datetime(row.updated_at)
    document["meta"] = meta
    connectors = _connectors(row)
    if connectors:
        document["connectors"] = connectors
    return ScheduledExecutionSession.model_validate(document)


def session_document(row: SessionRow) -> dict[str, Any]:
    return to_jsonable(session_model(row))


def offerset_document(row: OffersetRow, sessions: dict[str, SessionRow]) -> dict[str, Any]:
    document = dict(row.document)
    offers = []
    for offer in document.get("offers") or []:
        session = sessions.get(str((offer.get("meta") or {}).get("uuid")))
        offers.append(session_document(session) if session is not None else offer)
    if offers:
        document["offers"] = offers
    return to_jsonable(OfferSetResponse.model_validate(document))


def component_document(row: SessionRow, role: str) -> dict[str, Any] | None:
    component = getattr(session_model(row), role, None)
    return to_jsonable(component) if isinstance(component, BaseModel) else None

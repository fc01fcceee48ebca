"""The limits of shared/models/limits.py as a client meets them: one message per problem up to
`MAX_MESSAGES`, then their number; a list past its limit is one message, whatever its items."""

from __future__ import annotations

import json

from services.offers.domain import NeedsQuote, Rejected, decide_request
from shared.models import SIMPLE_DATA_KIND
from shared.models.limits import MAX_COMPONENTS, MAX_MESSAGES
from tests.unit.offers_policy import NOW, POLICY

NOTEBOOK = {
    "kind": "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/executable/jupyter-notebook.yaml",
    "location": "/nb.ipynb",
}


def texts(decision: Rejected | NeedsQuote) -> list[tuple[str, str]]:
    assert isinstance(decision, Rejected), decision
    meta = decision.offerset.meta
    assert meta is not None
    return [(m.kind, m.message or "") for m in meta.messages or []]


def test_a_hundred_problems_are_fifty_messages_and_a_count() -> None:
    document = {"executable": NOTEBOOK, "data": [{"kind": f"urn:nope-{i}"} for i in range(100)]}
    found = texts(decide_request(json.dumps(document).encode(), "r", "alice", NOW, POLICY))
    assert len(found) == MAX_MESSAGES + 1
    assert all(kind == "uri:unknown-type" for kind, _ in found[:MAX_MESSAGES])
    assert found[-1] == ("urn:input-too-large", "… and 50 more problems, not listed")


def test_the_component_limit_is_inclusive() -> None:
    item = {"kind": SIMPLE_DATA_KIND, "location": "/d"}
    at_limit = {"executable": NOTEBOOK, "data": [item] * MAX_COMPONENTS}
    decision = decide_request(json.dumps(at_limit).encode(), "r", "alice", NOW, POLICY)
    assert isinstance(decision, NeedsQuote), decision
    past = {"executable": NOTEBOOK, "data": [item] * (MAX_COMPONENTS + 1)}
    assert texts(decide_request(json.dumps(past).encode(), "r", "alice", NOW, POLICY)) == [
        ("urn:input-too-large", "Too many items at data: 257, more than the limit of 256")
    ]


def test_eighty_thousand_bad_items_cost_one_message() -> None:
    document = {"executable": NOTEBOOK, "data": [{"kind": "x"}] * 80_000}
    payload = json.dumps(document, separators=(",", ":")).encode()  # under 1 MiB
    assert texts(decide_request(payload, "r", "alice", NOW, POLICY)) == [
        ("urn:input-too-large", "Too many items at data: 80000, more than the limit of 256")
    ]

"""The malformed-input corpus (issue 3) through the offers service's pure decision.

Every case in ``tests/data/malformed/expected.yaml`` (plus the generated > 1 MiB payload) must be
`Rejected` with a message of the expected kind whose rendered text names the problem, and nothing
may raise. Cases only the scheduler can judge (pool capacity) are checked over the bus instead.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from services.offers.domain import Rejected, decide_request
from shared.models import MAX_DOCUMENT_BYTES, OfferSetResponse
from tests.unit.offers_policy import NOW, POLICY

CORPUS = Path(__file__).resolve().parents[1] / "data" / "malformed"


@dataclass(frozen=True)
class Case:
    name: str
    kind: str
    contains: str
    judge: str = "offers"

    def payload(self) -> bytes:
        if self.name == TOO_LARGE_NAME:
            return too_large_payload()
        return (CORPUS / self.name).read_bytes()


TOO_LARGE_NAME = "generated: valid JSON just over 1 MiB"


def too_large_payload() -> bytes:
    """A request that would be valid but for its size: a long description pads it past 1 MiB."""
    head = (
        b'{"executable": {"kind": "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/'
        b'executable/jupyter-notebook.yaml", "location": "/srv/hello.ipynb", "meta": {"description": "'
    )
    tail = b'"}}}'
    padding = MAX_DOCUMENT_BYTES + 1 - len(head) - len(tail)
    payload = head + b"x" * padding + tail
    assert len(payload) == MAX_DOCUMENT_BYTES + 1
    return payload


TOO_LARGE_CASE = Case(
    TOO_LARGE_NAME, "urn:input-too-large", f"more than the limit of {MAX_DOCUMENT_BYTES} bytes"
)


def load_cases() -> list[Case]:
    expected = yaml.safe_load((CORPUS / "expected.yaml").read_text(encoding="utf-8"))
    return [Case(name, **spec) for name, spec in expected.items()] + [TOO_LARGE_CASE]


CASES = load_cases()
OFFERS_CASES = [case for case in CASES if case.judge == "offers"]


def messages_of(offerset: OfferSetResponse) -> list[tuple[str, str]]:
    meta = offerset.meta
    return [(m.kind, m.message or "") for m in (meta.messages or [])] if meta else []


def assert_specific_no(offerset: OfferSetResponse, case: Case) -> None:
    assert offerset.result == "NO", f"{case.name}: {offerset}"
    assert not offerset.offers
    found = messages_of(offerset)
    assert found and all(text.strip() for _, text in found), f"{case.name}: {found}"
    assert any(kind == case.kind and case.contains in text for kind, text in found), (
        f"{case.name}: expected {case.kind} containing {case.contains!r}, got {found}"
    )


def test_the_corpus_is_complete() -> None:
    names = {path.name for path in CORPUS.iterdir()} - {"expected.yaml"}
    listed = {case.name for case in CASES}
    assert names <= listed, f"corpus files without an expectation: {sorted(names - listed)}"
    assert listed - {TOO_LARGE_NAME} <= names, f"expectations without a file: {sorted(listed - names)}"
    assert len(CASES) >= 35


@pytest.mark.parametrize("case", OFFERS_CASES, ids=[case.name for case in OFFERS_CASES])
def test_each_malformed_input_gets_its_specific_message(case: Case) -> None:
    decision = decide_request(case.payload(), "req-1", "alice", NOW, POLICY)
    assert isinstance(decision, Rejected), f"{case.name} was not rejected: {decision}"
    assert_specific_no(decision.offerset, case)
    # The answer must survive the trip to the wire (a lone surrogate once broke the JSON encoder).
    OfferSetResponse.model_validate_json(decision.offerset.model_dump_json())


def test_deep_nesting_does_not_need_a_deep_stack() -> None:
    # Run with a stack only a little deeper than here: the service's handler runs a few dozen frames
    # deep, and deep nesting must be refused without relying on spare recursion room.
    payload = (CORPUS / "deep-nesting.json").read_bytes()
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(200)
    try:
        decision = decide_request(payload, "req-1", "alice", NOW, POLICY)
    finally:
        sys.setrecursionlimit(old)
    assert isinstance(decision, Rejected)
    assert_specific_no(decision.offerset, next(c for c in CASES if c.name == "deep-nesting.json"))

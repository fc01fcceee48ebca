"""Dead letters keep a short excerpt of a message, never its secrets."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from shared.bus.redact import JSON_EXCERPT_CHARS, REDACTED, TEXT_EXCERPT_CHARS, excerpt

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXBhcnQ"
SEED = "SU" + "A" * 56


def test_secret_keys_and_token_shaped_strings_are_replaced() -> None:
    request = {
        "executable": {
            "kind": "urn:local-command",
            "command": ["sh", "-c", f"curl -H 'Authorization: Bearer {JWT}' https://x"],
            "environment": {"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI", "HOME": "/h"},
        },
        "Api-Key": "k-123",
        "notes": f"my seed is {SEED}",
    }
    text = excerpt(json.dumps(request).encode())
    for secret in ("wJalrXUtnFEMI", JWT, SEED, "k-123"):
        assert secret not in text
    assert text.count(REDACTED) >= 4
    assert "urn:local-command" in text  # what the message was stays readable


def test_text_bodies_are_cut_shorter_and_scrubbed() -> None:
    body = f"password=hunter2 token: {JWT} " + "x" * 5000
    text = excerpt(body.encode())
    assert "hunter2" not in text and JWT not in text
    assert len(text) <= TEXT_EXCERPT_CHARS


def test_deep_or_broken_json_is_an_excerpt_too() -> None:
    deep = ("[" * 100_000 + "]" * 100_000).encode()
    assert len(excerpt(deep)) <= TEXT_EXCERPT_CHARS
    assert excerpt(b"\xff\xfe{not json") != ""


@given(st.binary(max_size=4000))
def test_any_bytes_give_a_bounded_excerpt(payload: bytes) -> None:
    assert len(excerpt(payload)) <= JSON_EXCERPT_CHARS


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=40),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
        max_leaves=30,
    )
)
def test_any_json_gives_a_bounded_excerpt(document: object) -> None:
    assert len(excerpt(json.dumps(document).encode())) <= JSON_EXCERPT_CHARS

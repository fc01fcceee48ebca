"""Owners as subject tokens: the escaping is injective, reversible and canonical, and owners of
different sources (or issuers) never share a token."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.auth import owners
from shared.auth.owners import MAX_TOKEN_CHARS, Owner, OwnerError, Source
from shared.subjects import is_token

ISSUER = "https://idp.example.org/realms/science"
names = st.text(
    st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=owners.MAX_USERNAME_CHARS
)


@given(st.text())
def test_escape_is_reversed_by_unescape_and_is_a_token(text: str) -> None:
    token = owners.escape(text)
    assert owners.unescape(token) == text
    assert token == "" or is_token(token)


@given(st.text(), st.text())
def test_escape_is_injective(a: str, b: str) -> None:
    if a != b:
        assert owners.escape(a) != owners.escape(b)


@given(st.text(st.sampled_from("=:_-@aZ09.%\u00e9"), max_size=12))
def test_unescape_accepts_only_canonical_tokens(token: str) -> None:
    """Any token `unescape` accepts is the escape of what it returns: one spelling per text."""
    try:
        text = owners.unescape(token)
    except OwnerError:
        return
    assert owners.escape(text) == token


@pytest.mark.parametrize(
    "token",
    ["=41", "=3A", "=2e", "=", "=2", "=G1", "a.b", "a*b", "=C3", "=FF", "\u00e9"],
    ids=[
        "safe-escaped",
        "colon-escaped",
        "lower-hex",
        "bare",
        "short",
        "not-hex",
        "dot",
        "star",
        "cut-utf8",
        "bad-utf8",
        "non-ascii",
    ],
)
def test_unescape_refuses_non_canonical_or_invalid_tokens(token: str) -> None:
    with pytest.raises(OwnerError):
        owners.unescape(token)


def test_escape_keeps_common_names_readable() -> None:
    assert owners.local("alice").token == "local==alice"
    assert owners.local("alice.smith@uni.example").token == "local==alice=2Esmith@uni=2Eexample"
    assert owners.local("j_doe-2").token == "local==j_doe-2"
    carol = owners.oidc(ISSUER, "f:2b1c:carol")
    assert carol.token == f"oidc=={owners.issuer_hash(ISSUER)}==f==2b1c==carol"
    assert str(carol) == f"oidc:{owners.issuer_hash(ISSUER)}:f:2b1c:carol"


@given(names, names)
def test_a_local_user_and_an_oidc_user_never_share_an_owner(username: str, sub: str) -> None:
    local, remote = owners.local(username), owners.oidc(ISSUER, sub)
    assert local.token != remote.token
    assert owners.from_token(local.token) == local
    assert owners.from_token(remote.token) == remote


@given(names)
def test_the_same_sub_at_two_issuers_is_two_owners(sub: str) -> None:
    assert owners.oidc(ISSUER, sub).token != owners.oidc("https://other.example", sub).token


@given(names)
def test_owner_text_round_trips(name: str) -> None:
    for owner in (owners.local(name), owners.oidc(ISSUER, name)):
        assert owners.parse(str(owner)) == owner


@given(st.text(max_size=40))
def test_from_token_accepts_only_owner_tokens(token: str) -> None:
    try:
        owner = owners.from_token(token)
    except OwnerError:
        return
    assert owner.token == token


@pytest.mark.parametrize(
    "make",
    [
        lambda: owners.local(""),
        lambda: owners.local("a" * (owners.MAX_USERNAME_CHARS + 1)),
        lambda: owners.local("al\nice"),
        lambda: owners.local("\ud800"),
        lambda: owners.oidc(ISSUER, ""),
        lambda: owners.oidc(ISSUER, "s" * (owners.MAX_SUB_CHARS + 1)),
        lambda: owners.oidc(ISSUER, "\U0001f52d" * 100),  # 1200 characters as a token
        lambda: Owner(Source.OIDC, "carol", "not-a-hash"),
        lambda: Owner(Source.LOCAL, "alice", owners.issuer_hash(ISSUER)),
        lambda: owners.parse("alice"),
        lambda: owners.parse("ldap:alice"),
        lambda: owners.parse("oidc:carol"),
    ],
)
def test_what_is_not_an_owner_is_refused(make: object) -> None:
    assert callable(make)
    with pytest.raises(OwnerError):
        make()


def test_the_longest_owners_fit_the_token_limit() -> None:
    assert len(owners.oidc(ISSUER, "." * owners.MAX_SUB_CHARS).token) <= MAX_TOKEN_CHARS
    assert len(owners.local("\U0001f52d" * owners.MAX_USERNAME_CHARS).token) <= MAX_TOKEN_CHARS

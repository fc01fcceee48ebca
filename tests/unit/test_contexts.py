"""Where client commands find the bus and their credentials: flags and variables first, then a
credentials file, then a context (nats CLI conventions), each file private."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from shared.auth import owners
from shared.auth.credentials import Credentials, CredentialsError
from shared.ops import contexts
from shared.settings import DEFAULT_NATS_URL


@pytest.fixture(autouse=True)
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config" / "execution-broker"


def token_for(issuer: str, sub: str) -> str:
    def part(document: dict[str, str]) -> str:
        return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part({'iss': issuer, 'sub': sub})}.c2lnbmF0dXJl"


def resolve(**given: object) -> contexts.Connection:
    options: dict[str, object] = {"url": None, "user": None, "password": None, "token": None, "context": None}
    options.update(given)
    return contexts.resolve(**options)  # type: ignore[arg-type]


def test_a_saved_context_is_private_current_and_loads_back(config_home: Path) -> None:
    path = contexts.save("local", "nats://127.0.0.1:4333", Credentials.login("alice", "s3cret"))
    creds = config_home / "credentials" / "local.json"
    for folder in (config_home, config_home / "context", config_home / "credentials"):
        assert folder.stat().st_mode & 0o777 == 0o700
    for file in (path, creds, config_home / "context.txt"):
        assert file.stat().st_mode & 0o777 == 0o600
    assert "s3cret" not in path.read_text()  # the context names the credentials file
    found = resolve()
    assert found.url == "nats://127.0.0.1:4333"
    assert found.credentials.user == "alice"
    assert (
        found.credentials.password is not None and found.credentials.password.get_secret_value() == "s3cret"
    )


def test_flags_beat_a_token_beat_a_credentials_file_beat_the_context(tmp_path: Path) -> None:
    contexts.save("local", "nats://ctx:1", Credentials.login("ctx-user", "p"))
    creds = contexts.save_credentials(tmp_path / "bob.json", Credentials.login("bob", "b"))
    token = token_for("https://idp.example", "carol")
    assert resolve(user="alice", password="a", token=token, creds=creds).credentials.user == "alice"
    assert resolve(token=token, creds=creds).credentials.owner == owners.oidc("https://idp.example", "carol")
    by_file = resolve(creds=creds)
    assert by_file.credentials.user == "bob" and by_file.url == DEFAULT_NATS_URL
    by_context = resolve(url="nats://flag:2")
    assert by_context.credentials.user == "ctx-user" and by_context.url == "nats://flag:2"


def test_another_context_is_picked_by_name() -> None:
    contexts.save("local", "nats://one:1", Credentials.login("one", "1"))
    contexts.save("other", "nats://two:2", Credentials.login("two", "2"), select=False)
    assert resolve().credentials.user == "one"
    assert resolve(context="other").credentials.user == "two"
    with pytest.raises(contexts.ContextError, match="no context 'missing'"):
        resolve(context="missing")
    with pytest.raises(contexts.ContextError, match="a context name is"):
        resolve(context="../../etc/passwd")


def test_without_any_credentials_the_message_says_what_to_do() -> None:
    with pytest.raises(
        contexts.ContextError, match=r"EB_NATS_USER.*EB_NATS_TOKEN or EB_NATS_CREDS.*broker up"
    ):
        resolve()
    with pytest.raises(contexts.ContextError, match="go together"):
        resolve(user="alice")


def test_a_broken_credentials_file_is_named_and_its_secret_is_not(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"user": "alice", "pasword": "hunter2"}')
    with pytest.raises(contexts.ContextError) as refused:
        resolve(creds=broken)
    assert str(broken) in str(refused.value) and "hunter2" not in str(refused.value)
    broken.write_text("not json hunter2")
    with pytest.raises(contexts.ContextError, match="is not JSON") as refused:
        resolve(creds=broken)
    assert "hunter2" not in str(refused.value)


def test_credentials_name_their_owner_and_inbox() -> None:
    alice = Credentials.login("alice", "pw-of-alice")
    assert alice.owner == owners.local("alice")
    assert alice.inbox_prefix == f"_INBOX_{owners.local('alice').token}"
    assert alice.connect_options()["user"] == "alice"
    carol = Credentials(token=SecretStr(token_for("https://idp.example", "carol")))
    assert carol.owner.token.startswith("oidc==")
    assert "pw-of-alice" not in repr(alice) and "pw-of-alice" not in alice.describe()
    for bad in ("not-a-jwt", "a.b.c", token_for("https://idp.example", "")):
        with pytest.raises(CredentialsError):
            _ = Credentials(token=SecretStr(bad)).owner
    with pytest.raises(CredentialsError):
        Credentials(user="alice")

"""The `*_FILE` rule of every plugin's settings, the file-backed secret, and the token source."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from shared.http.tokens import TokenSource, TokenUnavailable
from shared.secret_settings import FileSecret, SecretFileError, SecretSettings


class ExampleSettings(SecretSettings):
    model_config = SettingsConfigDict(env_prefix="EB_EXAMPLE_")
    label = "example"

    url: str = ""
    token: SecretStr | None = None
    attempts: int = 3


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("from-the-file\n")
    return path


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("URL", "TOKEN", "TOKEN_FILE", "ATTEMPTS"):
        monkeypatch.delenv(f"EB_EXAMPLE_{name}", raising=False)


def secret(settings: ExampleSettings) -> str:
    assert settings.token is not None
    return settings.token.get_secret_value()


def test_a_secret_comes_from_its_variable_or_its_file_variable(
    monkeypatch: pytest.MonkeyPatch, token_file: Path
) -> None:
    monkeypatch.setenv("EB_EXAMPLE_TOKEN", "from-the-variable")
    assert secret(ExampleSettings.from_keywords({})) == "from-the-variable"
    monkeypatch.setenv("EB_EXAMPLE_TOKEN_FILE", str(token_file))
    settings = ExampleSettings.from_keywords({})
    assert isinstance(settings.token, FileSecret)  # at one level the file wins
    assert secret(settings) == "from-the-file"


def test_keywords_win_over_the_environment(monkeypatch: pytest.MonkeyPatch, token_file: Path) -> None:
    monkeypatch.setenv("EB_EXAMPLE_TOKEN_FILE", str(token_file))
    assert secret(ExampleSettings.from_keywords({"token": "kw"})) == "kw"
    monkeypatch.delenv("EB_EXAMPLE_TOKEN_FILE")
    monkeypatch.setenv("EB_EXAMPLE_TOKEN", "from-the-variable")
    assert secret(ExampleSettings.from_keywords({"token_file": token_file})) == "from-the-file"
    # None and the settings of other plugins are ignored.
    assert secret(ExampleSettings.from_keywords({"token": None, "other": 1})) == "from-the-variable"


def test_empty_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EB_EXAMPLE_ATTEMPTS", "")
    monkeypatch.setenv("EB_EXAMPLE_TOKEN_FILE", "")
    settings = ExampleSettings.from_keywords({})
    assert settings.attempts == 3 and settings.token is None


def test_an_invalid_setting_is_named_by_its_variable_without_the_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EB_EXAMPLE_ATTEMPTS", "many-secret-attempts")
    with pytest.raises(ValueError, match="invalid example settings: EB_EXAMPLE_ATTEMPTS: ") as caught:
        ExampleSettings.from_keywords({"token": "tok-do-not-show"})
    assert "many-secret-attempts" not in str(caught.value) and "tok-do-not-show" not in str(caught.value)


def test_secrets_never_show_in_a_repr(token_file: Path) -> None:
    shown = repr(ExampleSettings.from_keywords({"token": "tok-do-not-show"}))
    assert "tok-do-not-show" not in shown and "**********" in shown
    from_file = ExampleSettings.from_keywords({"token_file": token_file})
    assert secret(from_file) == "from-the-file"
    assert "from-the-file" not in repr(from_file) + str(from_file.token)
    assert str(token_file) in repr(from_file)  # where it is, not what it is


def test_a_file_secret_is_read_again_when_the_file_changes(token_file: Path) -> None:
    now = [0.0]
    value = FileSecret(token_file, recheck_s=30.0, clock=lambda: now[0])
    assert value.get_secret_value() == "from-the-file"
    token_file.write_text("renewed, and longer\n")
    now[0] = 29.0
    assert value.get_secret_value() == "from-the-file"  # not looked at before recheck_s
    now[0] = 30.0
    assert value.get_secret_value() == "renewed, and longer"
    token_file.write_text("renewed again\n")
    value.reload()  # the server refused it: read at once
    assert value.get_secret_value() == "renewed again"


def test_an_unreadable_or_empty_file_is_named_in_the_error(tmp_path: Path, token_file: Path) -> None:
    with pytest.raises(SecretFileError, match=f"cannot read the secret file {tmp_path / 'missing'}"):
        FileSecret(tmp_path / "missing").get_secret_value()
    token_file.write_text("  \n")
    with pytest.raises(SecretFileError, match="is empty"):
        FileSecret(token_file).get_secret_value()


def test_the_token_source_says_where_the_token_is_never_what(token_file: Path) -> None:
    static = TokenSource(SecretStr("tok-static"), label="X token", variable="EB_X_TOKEN")
    assert static.describe() == "the token in EB_X_TOKEN" and not static.refreshable
    assert static.current() == "tok-static" and not static.refresh()
    assert static.redact("echo tok-static back") == "echo <redacted> back"
    assert "tok-static" not in repr(static)
    from_file = TokenSource(FileSecret(token_file), label="X token", variable="EB_X_TOKEN")
    assert from_file.describe() == f"the token file {token_file} (EB_X_TOKEN_FILE)"
    assert from_file.refreshable and from_file.current() == "from-the-file"
    jwt = TokenSource(SecretStr("SLURM_JWT=abc\n"), label="Slurm token", variable="EB_D_TOKEN",
                      parse=lambda text: text.strip().removeprefix("SLURM_JWT="))  # fmt: skip
    assert jwt.current() == "abc"


def test_no_token_or_an_unreadable_one_is_a_clear_error(tmp_path: Path) -> None:
    for missing in (None, SecretStr("")):
        with pytest.raises(
            TokenUnavailable, match="no X token configured: set EB_X_TOKEN or EB_X_TOKEN_FILE"
        ):
            TokenSource(missing, label="X token", variable="EB_X_TOKEN").current()
    gone = TokenSource(
        FileSecret(tmp_path / "gone"), label="X token", variable="EB_X_TOKEN", unreadable_is_transient=True
    )
    with pytest.raises(TokenUnavailable, match=f"cannot read the X token file {tmp_path / 'gone'}") as caught:
        gone.current()
    assert caught.value.transient

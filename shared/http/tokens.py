"""The one token source of every client that sends a credential (CANFAR, slurmrestd, JBO, Rucio).

A token is a `SecretStr` from the client's settings: a static one, or a `FileSecret` (from `*_FILE`),
which is re-read when the file changes and at once when the server refuses the token. A subclass may
obtain its tokens from a server instead (`ready` renews them before they end; Rucio's userpass). Messages say
where the token comes from, never what it is, and `redact` takes it out of any text from a server.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import SecretStr

from shared.http.retry import HttpLayerError
from shared.secret_settings import FileSecret, SecretFileError


class TokenUnavailable(HttpLayerError):
    """No token to send: none configured, or its file cannot be read."""


class TokenSource:
    def __init__(
        self,
        secret: SecretStr | None,
        *,
        label: str,
        variable: str,
        parse: Callable[[str], str] = str.strip,
        unreadable_is_transient: bool = False,
    ) -> None:
        """`label` names the token in messages ("CANFAR token"); `variable` is its setting
        (EB_CANFAR_TOKEN), whose `_FILE` twin is named with it; `parse` turns what was read into the
        token (e.g. strips `SLURM_JWT=`)."""
        self._secret = (
            secret if secret is None or isinstance(secret, FileSecret) or secret.get_secret_value() else None
        )
        self.label = label
        self.variable = variable
        self._parse = parse
        self._transient = unreadable_is_transient
        self._seen: set[str] = set()

    @property
    def configured(self) -> bool:
        return self._secret is not None

    @property
    def refreshable(self) -> bool:
        """True when the token comes from a file, which someone may have renewed."""
        return isinstance(self._secret, FileSecret)

    def describe(self) -> str:
        """Where the token comes from, for messages; never the token itself."""
        if isinstance(self._secret, FileSecret):
            return f"the token file {self._secret.path} ({self.variable}_FILE)"
        if self._secret is not None:
            return f"the token in {self.variable}"
        return f"no token (set {self.variable} or {self.variable}_FILE)"

    async def ready(self) -> None:
        """Make sure `current` has a token worth sending; called before every request. A static or
        file token has nothing to do here (a file is re-read by `current` when it changed); a source
        that obtains tokens from a server renews one that is about to end."""
        return None

    def current(self) -> str:
        if self._secret is None:
            raise TokenUnavailable(
                f"no {self.label} configured: set {self.variable} or {self.variable}_FILE", transient=False
            )
        try:
            token = self._parse(self._secret.get_secret_value())
        except SecretFileError as error:
            raise TokenUnavailable(
                error.message.replace("secret file", f"{self.label} file"), transient=self._transient
            ) from None
        if not token:
            raise TokenUnavailable(
                f"the {self.label} in {self.describe()} is empty", transient=self._transient
            )
        self._seen.add(token)
        return token

    def refresh(self) -> bool:
        """Re-read a token file now (the server refused the token); False when there is none to re-read."""
        if not isinstance(self._secret, FileSecret):
            return False
        try:
            self._secret.reload()
        except SecretFileError as error:
            raise TokenUnavailable(
                error.message.replace("secret file", f"{self.label} file"), transient=self._transient
            ) from None
        return True

    def redact(self, text: str) -> str:
        """`text` (an answer from a server, say) without any token this source has handed out."""
        for token in self._seen:
            text = text.replace(token, "<redacted>")
        return text

    def __repr__(self) -> str:
        return f"TokenSource({self.describe()})"

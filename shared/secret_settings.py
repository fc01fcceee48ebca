"""Settings with secrets: one pydantic-settings base class for every plugin (and Rucio).

The rule stated once here: each `SecretStr` field `x` of a settings class with prefix `EB_P_` can be
given as `EB_P_X` (the secret itself) or as `EB_P_X_FILE` (a file that holds it, such as a mounted
secret or a token that a renewer rewrites); a keyword argument `x` or `x_file` does the same. At one
level the file wins over the value; keyword arguments win over the environment. A secret from a file
is a `FileSecret`: its value is read when first needed, again when the file has changed, and at once
after `reload()` (the server refused it). Empty variables count as unset.

Secrets never appear in a repr, and `invalid_settings` words a validation error without the values
that were given, so no message can carry one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

from pydantic import SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources import PydanticBaseEnvSettingsSource

FILE_SUFFIX = "_file"
# How often a secret file is looked at for a change; a refusal by the server re-reads it at once.
DEFAULT_RECHECK_S = 30.0


class SecretFileError(Exception):
    """A secret file that cannot be read, or is empty. The message names the file, never its content."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class FileSecret(SecretStr):
    """A secret kept in a file, re-read when the file changes (checked at most every `recheck_s`)."""

    def __init__(
        self,
        path: str | Path,
        *,
        recheck_s: float = DEFAULT_RECHECK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__("")
        self.path = Path(path).expanduser()
        self._recheck_s = recheck_s
        self._clock = clock
        self._value: str | None = None
        self._stamp: tuple[int, int] | None = None
        self._checked_at = 0.0

    def get_secret_value(self) -> str:
        if self._value is None or self._clock() - self._checked_at >= self._recheck_s:
            self._refresh(force=False)
        assert self._value is not None
        return self._value

    def reload(self) -> None:
        """Read the file again now, whatever its time stamp says (the server refused the old value)."""
        self._refresh(force=True)

    def _refresh(self, *, force: bool) -> None:
        try:
            info = self.path.stat()
            stamp = (info.st_mtime_ns, info.st_size)
            if force or self._value is None or stamp != self._stamp:
                text = self.path.read_text().strip()
                if not text:
                    raise SecretFileError(f"the secret file {self.path} is empty")
                self._value, self._stamp = text, stamp
        except OSError as error:
            raise SecretFileError(
                f"cannot read the secret file {self.path}: {error.strerror or type(error).__name__}"
            ) from None
        self._checked_at = self._clock()

    def __repr__(self) -> str:
        return f"FileSecret(path={str(self.path)!r})"

    def __str__(self) -> str:
        return f"<secret in {self.path}>"

    def __len__(self) -> int:
        return 0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FileSecret) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)


def _secret_fields(settings_cls: type[BaseSettings]) -> list[str]:
    names = []
    for name, field in settings_cls.model_fields.items():
        annotation = field.annotation
        members = getattr(annotation, "__args__", (annotation,))
        if any(isinstance(m, type) and issubclass(m, SecretStr) for m in members):
            names.append(name)
    return names


class _SecretFileVariables(PydanticBaseEnvSettingsSource):
    """`<PREFIX><NAME>_FILE` for each secret field, as a `FileSecret` (read when first needed)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        prefix = str(self.config.get("env_prefix") or "")
        found: dict[str, Any] = {}
        for name in _secret_fields(self.settings_cls):
            path = os.environ.get(f"{prefix}{name}{FILE_SUFFIX}".upper())
            if path:
                found[name] = FileSecret(path)
        return found


class SecretSettings(BaseSettings):
    """Base class of a plugin's settings: `EB_<PLUGIN>_*` variables, keyword arguments first."""

    model_config = SettingsConfigDict(extra="ignore", env_ignore_empty=True)
    #: The plugin's name, for messages ("invalid canfar settings: ...").
    label: ClassVar[str] = "plugin"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Earlier sources win: keywords, then X_FILE, then X, so at one level the file wins.
        return (init_settings, _SecretFileVariables(settings_cls), env_settings)

    @model_validator(mode="before")
    @classmethod
    def _secret_file_keywords(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for name in _secret_fields(cls):
            path = data.pop(f"{name}{FILE_SUFFIX}", None)
            if path:  # at one level, the file wins over the value
                data[name] = path if isinstance(path, FileSecret) else FileSecret(path)
        return data

    @classmethod
    def from_keywords(cls, keywords: Mapping[str, Any]) -> Self:
        """The settings from keyword arguments (those of other plugins, and None, are ignored) and the
        environment. Raises ValueError naming the variables at fault, never the values given."""
        known = set(cls.model_fields) | {f"{name}{FILE_SUFFIX}" for name in _secret_fields(cls)}
        given = {key: value for key, value in keywords.items() if key in known and value is not None}
        try:
            return cls(**given)
        except ValidationError as error:
            raise ValueError(invalid_settings(cls, error)) from None

    @classmethod
    def variable(cls, name: str) -> str:
        """The environment variable of a field, e.g. `EB_CANFAR_TOKEN`."""
        return f"{cls.model_config.get('env_prefix') or ''}{name}".upper()


def invalid_settings(cls: type[SecretSettings], error: ValidationError) -> str:
    problems = []
    for item in error.errors(include_input=False, include_url=False, include_context=False):
        field = ".".join(str(part) for part in item["loc"]) or "settings"
        variable = cls.variable(field) if field in cls.model_fields else field
        problems.append(f"{variable}: {item['msg']}")
    return f"invalid {cls.label} settings: " + "; ".join(problems)

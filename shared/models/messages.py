"""Message items: how validation results and lifecycle events are reported to clients."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Self

from shared.models.base import UtcDateTime, WireModel

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.-]*)\}")


class MessageLevel(StrEnum):
    DEBUG = "DEBUG"
    WARN = "WARN"
    ERROR = "ERROR"
    INFO = "INFO"
    OTHER = "OTHER"


def render_template(template: str, values: Mapping[str, str]) -> str:
    """Expand `${name}` placeholders; unknown names are left visible rather than silently dropped."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


class MessageItem(WireModel):
    kind: str
    time: UtcDateTime | None = None
    level: MessageLevel = MessageLevel.INFO
    template: str | None = None
    values: dict[str, str] | None = None
    message: str | None = None

    @classmethod
    def make(
        cls,
        level: MessageLevel,
        kind: str,
        template: str,
        /,
        *,
        time: datetime | None = None,
        **values: object,
    ) -> Self:
        """Build a message with its text rendered (the reference server only ever sent templates)."""
        as_text = {name: str(value) for name, value in values.items()}
        return cls(
            kind=kind,
            time=time,
            level=level,
            template=template,
            values=as_text or None,
            message=render_template(template, as_text),
        )

    # `kind` and `template` are positional-only so that a template may itself use ${kind}.
    @classmethod
    def error(cls, kind: str, template: str, /, *, time: datetime | None = None, **values: object) -> Self:
        return cls.make(MessageLevel.ERROR, kind, template, time=time, **values)

    @classmethod
    def warn(cls, kind: str, template: str, /, *, time: datetime | None = None, **values: object) -> Self:
        return cls.make(MessageLevel.WARN, kind, template, time=time, **values)

    @classmethod
    def info(cls, kind: str, template: str, /, *, time: datetime | None = None, **values: object) -> Self:
        return cls.make(MessageLevel.INFO, kind, template, time=time, **values)

    @classmethod
    def debug(cls, kind: str, template: str, /, *, time: datetime | None = None, **values: object) -> Self:
        return cls.make(MessageLevel.DEBUG, kind, template, time=time, **values)

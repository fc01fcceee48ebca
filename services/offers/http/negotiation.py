"""Content negotiation: JSON and YAML both ways, YAML when a request names neither.

The draft standard makes YAML the default when a request carries neither ``Content-Type`` nor
``Accept``; a response follows ``Accept`` first, then the request body's own type.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

import yaml

JSON_TYPES = frozenset({"application/json"})
YAML_TYPES = frozenset({"application/yaml", "text/yaml", "application/yml", "text/yml", "application/x-yaml"})


class Format(StrEnum):
    JSON = "application/json"
    YAML = "application/yaml"


def _media_type(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def format_of(media_type: str | None) -> Format | None:
    """JSON or YAML for a media type we speak (``application/*+json`` / ``*+yaml`` too), else None."""
    if not media_type:
        return None
    media = _media_type(media_type)
    if media in JSON_TYPES or (media.startswith("application/") and media.endswith("+json")):
        return Format.JSON
    if media in YAML_TYPES or (media.startswith("application/") and media.endswith("+yaml")):
        return Format.YAML
    return None


def _accept_ranges(accept: str) -> list[tuple[float, int, str]]:
    ranges: list[tuple[float, int, str]] = []
    for index, part in enumerate(accept.split(",")):
        pieces = [p.strip() for p in part.split(";")]
        media = pieces[0].lower()
        if not media:
            continue
        quality = 1.0
        for param in pieces[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        ranges.append((quality, index, media))
    return ranges


def response_format(accept: str | None, content_type: str | None) -> Format:
    """The format of a response: the best JSON/YAML type ``Accept`` names, else the body's, else YAML."""
    if accept:
        named = [
            (quality, -index, fmt)
            for quality, index, media in _accept_ranges(accept)
            if quality > 0 and (fmt := format_of(media)) is not None
        ]
        if named:
            return max(named)[2]
    return format_of(content_type) or Format.YAML


def render(document: Any, fmt: Format) -> bytes:
    if fmt is Format.JSON:
        return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return text.encode("utf-8")

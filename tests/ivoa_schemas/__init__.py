"""Validation of the broker's IVOA documents against the schemas of this folder (see README.md)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Literal

import xmlschema

FOLDER = Path(__file__).parent
Kind = Literal["capabilities", "availability", "record"]
_ENTRY = {
    "capabilities": "VOSICapabilities-v1.0.xsd",
    "availability": "VOSIAvailability-v1.0.xsd",
    "record": "RegistryInterface-v1.0.xsd",
}


@cache
def schema(kind: Kind) -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(FOLDER / _ENTRY[kind]))


def validate(kind: Kind, document: bytes | str) -> None:
    """Raises ``xmlschema.XMLSchemaValidationError`` when `document` does not validate."""
    text = document.decode() if isinstance(document, bytes) else document
    schema(kind).validate(text)

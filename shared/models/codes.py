"""The `kind` of each message the request parser and the legacy translation write (`MessageItem.kind`).

One place, so the parser (`shared.models.parsing`) and the translation (`shared.models.legacy`) name
the same problem the same way; the Java reference server's spellings are kept where it had one.
"""

from __future__ import annotations

from typing import Final

SYNTAX_FAIL: Final = "urn:input-syntax-fail"
TOO_LARGE: Final = "urn:input-too-large"
UNKNOWN_TYPE: Final = "uri:unknown-type"
EXECUTABLE_REQUIRED: Final = "urn:executable-required"
INVALID_VALUE: Final = "urn:invalid-value"
MISSING_VALUE: Final = "urn:missing-required-value"
DUPLICATE_RESOURCE: Final = "urn:duplicate-resource"
RESOURCE_NOT_FOUND: Final = "uri:resource-not-found"
#: A WARN: the document was written in an older generation of the schema and translated to 1.0.7.
LEGACY_FORM: Final = "urn:legacy-form-translated"
#: The document says one thing in two generations' words (`kind` and `type`, `compute` and `computer`).
MIXED_GENERATIONS: Final = "urn:mixed-generations"

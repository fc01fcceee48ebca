"""Turning models into JSON/YAML documents and documents back into Python data."""

from __future__ import annotations

import json
import re
from typing import Any, Final

import yaml
from pydantic import BaseModel

#: Largest request document the broker will read.
MAX_DOCUMENT_BYTES: Final = 1024 * 1024

#: Deepest nesting of mappings and lists a document may have (a request needs about eight levels).
MAX_DOCUMENT_DEPTH: Final = 64
#: What the schema of a document a client sends says of it (JSON Schema has no keyword for either):
#: extension keywords, so a client can read the limits `load_document` checks before any field.
DOCUMENT_LIMITS: Final = {"x-max-bytes": MAX_DOCUMENT_BYTES, "x-max-depth": MAX_DOCUMENT_DEPTH}

# Byte order marks of the encodings a client might send by mistake; JSON on the wire is UTF-8.
_FOREIGN_BOMS: Final = (
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\xfe\xff", "UTF-16"),
    (b"\xff\xfe", "UTF-16"),
)


class DocumentError(ValueError):
    """The raw bytes are not a usable JSON/YAML mapping; `reason` says why, for the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DocumentTooLarge(DocumentError):
    def __init__(self, size: int, limit: int = MAX_DOCUMENT_BYTES) -> None:
        super().__init__(f"the document is {size} bytes, more than the limit of {limit} bytes")
        self.size = size
        self.limit = limit


def to_jsonable(model: BaseModel) -> dict[str, Any]:
    """A JSON-ready dict: aliases, no nulls, datetimes as ISO-8601 `...Z` strings."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def dump_text(model: BaseModel) -> str:
    """`to_jsonable` as compact JSON text, serialised by pydantic's compiled core in one pass (the
    dict-then-`json.dumps` route was a tenth of the offers service's time per request)."""
    return model.model_dump_json(by_alias=True, exclude_none=True)


def dump_json(model: BaseModel) -> bytes:
    return dump_text(model).encode("utf-8")


def dump_yaml(model: BaseModel) -> str:
    """YAML with field order kept, no `---` marker and nulls omitted, like the reference server."""
    return yaml.safe_dump(to_jsonable(model), sort_keys=False, allow_unicode=True, default_flow_style=False)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1's surprises.

    * timestamps stay strings: schedule fields are ISO-8601 *strings* and must reach the parser
      verbatim (a bare `2025-11-25T05:24:00Z` would otherwise become a datetime);
    * only true/false are booleans: `result: NO` must stay the string "NO";
    * aliases are refused: a small document with nested aliases expands into a huge object graph
      (the "billion laughs" attack) that validation would then walk.
    """

    yaml_implicit_resolvers = {
        first: [
            (tag, regexp)
            for tag, regexp in resolvers
            if tag not in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:bool")
        ]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "YAML aliases are not supported")
        return super().compose_node(parent, index)


_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _describe(error: Exception) -> str:
    text = str(error).strip().replace("\n", " ")
    return re.sub(r"\s+", " ", text)[:300] or type(error).__name__


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def _path_text(path: tuple[str | int, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "the top level"


def _lone_surrogate(text: str) -> str | None:
    for char in text:
        if "\ud800" <= char <= "\udfff":
            return f"\\u{ord(char):04x}"
    return None


def check_structure(document: Any) -> None:
    """Refuse what would hurt later stages: deep nesting, and strings that cannot be UTF-8 encoded.

    Iterative, so that the check itself cannot exhaust the stack.
    """
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(document, ())]
    while stack:
        value, path = stack.pop()
        if len(path) > MAX_DOCUMENT_DEPTH:
            where = _path_text(path[:8])
            raise DocumentError(
                f"the document is nested more than {MAX_DOCUMENT_DEPTH} levels deep (at {where}...)"
            )
        if isinstance(value, str):
            found = _lone_surrogate(value)
            if found:
                raise DocumentError(
                    f"the text at {_path_text(path)} contains a lone UTF-16 surrogate ({found}), "
                    "which is not a character"
                )
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and _lone_surrogate(key):
                    raise DocumentError(
                        f"a key at {_path_text(path)} contains a lone UTF-16 surrogate "
                        f"({_lone_surrogate(key)}), which is not a character"
                    )
                stack.append((item, (*path, str(key))))
        elif isinstance(value, list):
            stack.extend((item, (*path, index)) for index, item in enumerate(value))


def load_document(raw: bytes | str, content_type: str | None = None) -> Any:
    """Parse a JSON or YAML document that must be a mapping.

    JSON is tried first (exact, fast, and the common case); anything else is read as YAML unless
    the content type insists on JSON. Raises `DocumentError` with a client-presentable reason.
    """
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "surrogatepass"))
    if size > MAX_DOCUMENT_BYTES:
        raise DocumentTooLarge(size)
    if isinstance(raw, bytes):
        for bom, encoding in _FOREIGN_BOMS:
            if raw.startswith(bom):
                raise DocumentError(
                    f"the document is {encoding} encoded (it starts with a {encoding} byte order mark); "
                    "send it as UTF-8"
                )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DocumentError(
                f"the document is not valid UTF-8 ({error.reason} at byte {error.start})"
            ) from None
    else:
        text = raw
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise DocumentError("the document is empty")
    too_deep = DocumentError(f"the document is nested more than {MAX_DOCUMENT_DEPTH} levels deep")
    json_only = content_type is not None and "json" in content_type.lower()
    was_json = True
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        # The YAML reader recurses per level too: no point in trying it.
        raise too_deep from None
    except ValueError as json_error:
        if json_only:
            raise DocumentError(f"invalid JSON: {_describe(json_error)}") from None
        was_json = False
        try:
            document = yaml.load(text, Loader=_StrictLoader)
        except RecursionError:
            raise too_deep from None
        except (yaml.YAMLError, ValueError, TypeError) as yaml_error:
            # A document that starts like JSON was meant as JSON: its JSON error is the useful one.
            if text.lstrip()[:1] in ("{", "["):
                raise DocumentError(f"invalid JSON: {_describe(json_error)}") from None
            raise DocumentError(f"invalid YAML: {_describe(yaml_error)}") from None
    if not isinstance(document, dict):
        raise DocumentError(f"the document must be a mapping (an object), not {_kind_of(document)}")
    if not (was_json and _plainly_sound_json(text)):
        check_structure(document)
    return document


def _plainly_sound_json(text: str) -> bool:
    """True when the JSON text alone shows the structure check cannot fail, so the walk over every
    value (a tenth of the cost of handling a request) is skipped: each level of JSON nesting takes
    a bracket, so fewer brackets than the depth limit cannot nest deeper than it; and a lone
    surrogate can only come from a `\\u` escape (UTF-8 text cannot carry one). Not for YAML,
    which nests by indentation."""
    return "\\" not in text and text.count("{") + text.count("[") <= MAX_DOCUMENT_DEPTH

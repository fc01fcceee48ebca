"""Turning a raw ExecutionRequest into a model, or into specific client-facing messages.

Nothing here raises anything but `InvalidRequest`: pydantic errors are translated, one message
per problem, each naming where in the document it is. ISO-8601 schedule syntax and pool limits
are deliberately left to the offers service, which has the context to explain them.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from shared.models.codes import (
    DUPLICATE_RESOURCE,
    EXECUTABLE_REQUIRED,
    INVALID_VALUE,
    MISSING_VALUE,
    RESOURCE_NOT_FOUND,
    SYNTAX_FAIL,
    TOO_LARGE,
    UNKNOWN_TYPE,
)
from shared.models.kinds import KNOWN_KINDS
from shared.models.legacy import Untranslatable, translate
from shared.models.limits import MAX_CORES, MAX_GIB, MAX_MESSAGES
from shared.models.messages import MessageItem
from shared.models.runnable import runnable_problems
from shared.models.serialise import MAX_DOCUMENT_BYTES, DocumentError, DocumentTooLarge, load_document
from shared.models.sessions import ExecutionRequest

_MAX_VALUE_TEXT: Final = 80


class InvalidRequest(Exception):
    """The request cannot be turned into offers; `messages` says why, ready for `meta.messages`."""

    def __init__(self, messages: Sequence[MessageItem]) -> None:
        self.messages: list[MessageItem] = list(messages)
        super().__init__("; ".join(m.message or m.kind for m in self.messages))


def format_path(loc: Iterable[int | str]) -> str:
    """`("data", 0, "meta", "name")` -> `data[0].meta.name`, dropping discriminator tags."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in KNOWN_KINDS:
            continue
        else:
            text += f".{part}" if text else part
    return text or "(document)"


# Control (Cc), format (Cf: bidi overrides, zero-width joiners) and surrogate (Cs) characters.
_INVISIBLE_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs"})


def _invisible(text: str) -> str | None:
    """The first character of `text` that a reader cannot see or that reorders the text, as U+XXXX."""
    for char in text:
        if unicodedata.category(char) in _INVISIBLE_CATEGORIES:
            return f"U+{ord(char):04X}"
    return None


def _visible(text: str) -> str:
    """`text` with invisible characters spelt as `\\uXXXX`, so a message shows what was really sent."""
    return "".join(
        f"\\u{ord(c):04x}" if unicodedata.category(c) in _INVISIBLE_CATEGORIES else c for c in text
    )


def _show(value: Any) -> str:
    # JSON spelling, so that a string "5" is visibly different from the number 5.
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= _MAX_VALUE_TEXT else text[: _MAX_VALUE_TEXT - 3] + "..."


def _message_for(error: ErrorDetails, now: datetime | None) -> MessageItem:
    where = format_path(error["loc"])
    kind_of_error = error["type"]
    value = error.get("input")
    if kind_of_error == "union_tag_invalid" or kind_of_error == "unknown_kind":
        sent = value.get("kind") if isinstance(value, dict) else value
        if kind_of_error == "unknown_kind":
            where = where.removesuffix(".kind")
        return MessageItem.error(
            UNKNOWN_TYPE,
            "Unknown kind [${kind}] for the ${where} component",
            time=now,
            kind=_visible(sent) if isinstance(sent, str) else _show(sent),
            where=where,
        )
    if kind_of_error == "union_tag_not_found":
        if isinstance(value, dict) and "type" in value:
            # Drafts before schema 1.0 called the discriminator `type`.
            return MessageItem.error(
                MISSING_VALUE,
                "The ${where} component has no kind: it has a 'type' field [${value}], the old name "
                "of the discriminator; send it as 'kind'",
                time=now,
                where=where,
                value=_visible(value["type"]) if isinstance(value["type"], str) else _show(value["type"]),
            )
        return MessageItem.error(MISSING_VALUE, "The ${where} component has no kind", time=now, where=where)
    if kind_of_error == "missing":
        return MessageItem.error(MISSING_VALUE, "Missing required value at ${path}", time=now, path=where)
    if kind_of_error == "too_many_items":
        # Not the value itself: it is the long list.
        context = error.get("ctx") or {}
        return MessageItem.error(
            TOO_LARGE,
            "Too many items at ${path}: ${count}, more than the limit of ${limit}",
            time=now,
            path=where,
            count=context.get("count"),
            limit=context.get("limit"),
        )
    return MessageItem.error(
        INVALID_VALUE,
        "Invalid value [${value}] at ${path}: ${reason}",
        time=now,
        value=_show(value),
        path=where,
        reason=error["msg"],
    )


def _names(items: Sequence[Any] | None) -> list[tuple[int, str | None, str | None]]:
    return [
        (index, item.meta.name if item.meta else None, item.meta.uuid if item.meta else None)
        for index, item in enumerate(items or [])
    ]


_MORE: Final = "… and ${count} more problems, not listed"


def capped(messages: Sequence[MessageItem], now: datetime | None = None) -> list[MessageItem]:
    """At most `MAX_MESSAGES` problems, then one message counting the rest: an answer must stay far
    below the bus's payload limit however many mistakes a request makes. Capping a capped list
    changes nothing (the count carries over)."""
    if len(messages) <= MAX_MESSAGES:
        return list(messages)
    rest = 0
    for message in messages[MAX_MESSAGES:]:
        counted = message.values.get("count") if message.template == _MORE and message.values else None
        rest += int(counted) if counted is not None and counted.isdigit() else 1
    return [
        *messages[:MAX_MESSAGES],
        MessageItem.error(TOO_LARGE, _MORE, time=now or messages[0].time, count=rest),
    ]


def _check_positive(
    block: Any,
    path: str,
    fields: Sequence[str],
    now: datetime | None,
    *,
    minimum: int,
    maximum: int,
    unit: str,
) -> list[MessageItem]:
    messages: list[MessageItem] = []
    if block is None:
        return messages
    for field in fields:
        value = getattr(block, field)
        if value is not None and value > maximum:
            messages.append(
                MessageItem.error(
                    INVALID_VALUE,
                    "Invalid value [${value}] at ${path}: must be at most ${maximum} ${unit}",
                    time=now,
                    value=_show(value),
                    path=f"{path}.{field}",
                    maximum=maximum,
                    unit=unit,
                )
            )
        elif value is not None and value < minimum:
            messages.append(
                MessageItem.error(
                    INVALID_VALUE,
                    "Invalid value [${value}] at ${path}: must be at least ${minimum}",
                    time=now,
                    value=value,
                    path=f"{path}.{field}",
                    minimum=minimum,
                )
            )
    if block.min is not None and block.max is not None and block.max < block.min:
        messages.append(
            MessageItem.error(
                INVALID_VALUE,
                "Invalid value [${value}] at ${path}: max is less than min [${min}]",
                time=now,
                value=block.max,
                path=f"{path}.max",
                min=block.min,
            )
        )
    return messages


def _check_names(request: ExecutionRequest, now: datetime | None) -> list[MessageItem]:
    """Names and references must not hide characters: `input\u200ddata` looks like `input-data`."""
    named: list[tuple[str, Any]] = [("executable", request.executable), ("compute", request.compute)]
    named += [(f"storage[{i}]", s) for i, s in enumerate(request.storage or [])]
    named += [(f"data[{i}]", d) for i, d in enumerate(request.data or [])]
    texts: list[tuple[str, str | None]] = [
        (f"{where}.meta.name", component.meta.name if component is not None and component.meta else None)
        for where, component in named
    ]
    if request.compute is not None:
        volumes = request.compute.volumes or []
        texts += [(f"compute.volumes[{i}].resource", v.resource) for i, v in enumerate(volumes)]
    texts += [(f"data[{i}].storage", d.storage) for i, d in enumerate(request.data or [])]
    messages: list[MessageItem] = []
    for path, text in texts:
        found = _invisible(text) if text else None
        if found:
            messages.append(
                MessageItem.error(
                    INVALID_VALUE,
                    "Invalid value [${value}] at ${path}: it contains the invisible or control character "
                    "${char}",
                    time=now,
                    value=_visible(text or ""),
                    path=path,
                    char=found,
                )
            )
    return messages


def _check_semantics(request: ExecutionRequest, now: datetime | None) -> list[MessageItem]:
    messages: list[MessageItem] = _check_names(request, now)
    compute = request.compute
    if compute is not None:
        messages += _check_positive(
            compute.cores, "compute.cores", ("min", "max"), now, minimum=1, maximum=MAX_CORES, unit="cores"
        )
        messages += _check_positive(
            compute.memory, "compute.memory", ("min", "max"), now, minimum=1, maximum=MAX_GIB, unit="GiB"
        )
    for index, storage in enumerate(request.storage or []):
        messages += _check_positive(
            storage.size,
            f"storage[{index}].size",
            ("min", "max"),
            now,
            minimum=0,
            maximum=MAX_GIB,
            unit="GiB",
        )

    # Names must be unique across data *and* storage: a volume mount names one of either kind.
    resources = [("storage", i, n, u) for i, n, u in _names(request.storage)] + [
        ("data", i, n, u) for i, n, u in _names(request.data)
    ]
    seen: dict[str, str] = {}
    for family, index, name, _ in resources:
        if name is None:
            continue
        where = f"{family}[{index}]"
        if name in seen:
            messages.append(
                MessageItem.error(
                    DUPLICATE_RESOURCE,
                    "Duplicate resource name [${name}] at ${where} (already used by ${first})",
                    time=now,
                    name=name,
                    where=where,
                    first=seen[name],
                )
            )
        else:
            seen[name] = where
    storage_refs = {ref for family, _, n, u in resources if family == "storage" for ref in (n, u) if ref}
    data_refs = {ref for family, _, n, u in resources if family == "data" for ref in (n, u) if ref}

    def not_found(reference: str, where: str, wanted: str) -> MessageItem:
        return MessageItem.error(
            RESOURCE_NOT_FOUND,
            "No ${wanted} resource named [${resource}] for ${where}",
            time=now,
            resource=reference,
            where=where,
            wanted=wanted,
        )

    if compute is not None:
        for index, volume in enumerate(compute.volumes or []):
            where = f"compute.volumes[{index}].resource"
            if volume.resource is None:
                messages.append(
                    MessageItem.error(
                        MISSING_VALUE, "Missing required value at ${path}", time=now, path=where
                    )
                )
            elif volume.resource not in storage_refs | data_refs:
                messages.append(not_found(volume.resource, where, "data or storage"))
    for index, data in enumerate(request.data or []):
        if data.storage is not None and data.storage not in storage_refs:
            messages.append(not_found(data.storage, f"data[{index}].storage", "storage"))
    for index, storage in enumerate(request.storage or []):
        for position, reference in enumerate(storage.data or []):
            if reference not in data_refs:
                messages.append(not_found(reference, f"storage[{index}].data[{position}]", "data"))
    # What no platform could run (a port protocol the schema does not list, data that says nowhere
    # where it is) is refused here, whatever the pool; pool-dependent rules are the offers service's.
    messages += runnable_problems(request, now)
    return messages


def parse_execution_request(
    raw: bytes | str | Mapping[str, Any],
    *,
    now: datetime | None = None,
    content_type: str | None = None,
) -> ExecutionRequest:
    """Decode, translate (`shared.models.legacy`) and validate an ExecutionRequest; raise
    `InvalidRequest` with specific messages. A translated request says so in `translated` (WARNs),
    and a refused one lists those WARNs first, since its paths are the 1.0.7 ones.

    `now` stamps the messages' `time` (domain code passes its clock; None leaves it unset).
    """
    if isinstance(raw, Mapping):
        document: Any = dict(raw)
    else:
        try:
            document = load_document(raw, content_type)
        except DocumentTooLarge as error:
            raise InvalidRequest(
                [
                    MessageItem.error(
                        TOO_LARGE,
                        "The request is ${size} bytes, more than the limit of ${limit} bytes",
                        time=now,
                        size=error.size,
                        limit=MAX_DOCUMENT_BYTES,
                    )
                ]
            ) from None
        except DocumentError as error:
            raise InvalidRequest(
                [
                    MessageItem.error(
                        SYNTAX_FAIL,
                        "The request could not be parsed as JSON or YAML: ${reason}",
                        time=now,
                        reason=error.reason,
                    )
                ]
            ) from None

    # Only the parser sets it: a client cannot put words in the broker's mouth.
    document.pop("translated", None)
    try:
        translation = translate(document, now)
    except Untranslatable as untranslatable:
        raise InvalidRequest(capped(untranslatable.messages, now)) from None
    document = translation.document
    messages: list[MessageItem] = list(translation.warnings)
    if document.get("executable") is None:
        messages.append(
            MessageItem.error(EXECUTABLE_REQUIRED, "The request must include an executable", time=now)
        )
    try:
        request = ExecutionRequest.model_validate(document)
    except ValidationError as error:
        messages += [_message_for(detail, now) for detail in error.errors(include_url=False)]
        raise InvalidRequest(capped(messages, now)) from None
    except (TypeError, ValueError, RecursionError) as error:
        # Belt and braces: pydantic should only raise ValidationError, but bad input must never
        # escape as anything other than InvalidRequest.
        messages.append(
            MessageItem.error(
                SYNTAX_FAIL,
                "The request could not be parsed as JSON or YAML: ${reason}",
                time=now,
                reason=type(error).__name__,
            )
        )
        raise InvalidRequest(messages) from None
    messages += _check_semantics(request, now)
    if len(messages) > len(translation.warnings):
        raise InvalidRequest(capped(messages, now))
    if translation.warnings:
        request.translated = list(translation.warnings)
    return request

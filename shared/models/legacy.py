"""Older generations of client documents, translated to schema 1.0.7 before they are validated.

Clients of the prototype still write two older forms (see docs/models.md, "Older documents"):

* the **v1.0 form** (Nov 2025 to Mar 2026): volume mounts are declared in a top-level `volumes`
  list and `compute.volumes` names them;
* the **earlier form** (before Nov 2025): components are told apart by `type` rather than `kind`,
  the compute resource is `computer`, and a component's name is a flat `name`, not `meta.name`.

Both are translated here, on the raw mapping, so that the models and everything after them see only
1.0.7; what was translated comes back as WARN messages for the answer. A document that says one
thing in two generations' words, or mounts a volume it does not declare, cannot be translated
faithfully: `Untranslatable` says exactly why. The translated document is held to the same bounds
as the one the client sent (depth, size, counts). Pure: no I/O, no clock (`now` stamps messages).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from shared.models.codes import (
    DUPLICATE_RESOURCE,
    INVALID_VALUE,
    LEGACY_FORM,
    MISSING_VALUE,
    MIXED_GENERATIONS,
    RESOURCE_NOT_FOUND,
    SYNTAX_FAIL,
    TOO_LARGE,
)
from shared.models.limits import MAX_COMPONENTS
from shared.models.messages import MessageItem
from shared.models.serialise import MAX_DOCUMENT_BYTES, DocumentError, check_structure

EARLIER_FORM: Final = "the earlier form (before Nov 2025)"
V1_0_FORM: Final = "the v1.0 form (Nov 2025 to Mar 2026)"

#: Names listed in one message; the rest are counted.
_LISTED: Final = 5


class Untranslatable(Exception):
    """The document mixes generations or references what it does not declare; `messages` say where."""

    def __init__(self, messages: Sequence[MessageItem]) -> None:
        self.messages: list[MessageItem] = list(messages)
        super().__init__("; ".join(m.message or m.kind for m in self.messages))


@dataclass(frozen=True)
class Translation:
    #: A new mapping (the caller's is never changed), in the 1.0.7 form.
    document: dict[str, Any]
    #: One WARN per rule applied, naming the legacy form; empty when the document was 1.0.7 already.
    warnings: tuple[MessageItem, ...]


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_LISTED])
    return shown if len(items) <= _LISTED else f"{shown} and {len(items) - _LISTED} more"


def _warn(now: datetime | None, form: str, change: str) -> MessageItem:
    return MessageItem.warn(
        LEGACY_FORM,
        "The request uses ${form}: ${change}; it was translated to schema 1.0.7",
        time=now,
        form=form,
        change=change,
    )


def _mixed(now: datetime | None, template: str, /, **values: object) -> MessageItem:
    return MessageItem.error(
        MIXED_GENERATIONS, "The request mixes schema generations: " + template, time=now, **values
    )


def _copied_components(document: dict[str, Any], compute_path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each component mapping, copied into `document` so that it can be changed, with its path as the
    client wrote it. A list past its limit is left alone: the parser refuses it, naming the limit."""
    for key, path in (("executable", "executable"), ("compute", compute_path)):
        value = document.get(key)
        if isinstance(value, dict):
            document[key] = dict(value)
            yield path, document[key]
    compute = document.get("compute")
    places: list[tuple[dict[str, Any], str, str]] = [
        (document, key, key) for key in ("storage", "data", "volumes")
    ]
    if isinstance(compute, dict):
        places.append((compute, "volumes", f"{compute_path}.volumes"))
    for holder, key, path in places:
        items = holder.get(key)
        if not isinstance(items, list) or len(items) > MAX_COMPONENTS:
            continue
        holder[key] = [dict(item) if isinstance(item, dict) else item for item in items]
        for index, item in enumerate(holder[key]):
            if isinstance(item, dict):
                yield f"{path}[{index}]", item


def _rename_compute(document: dict[str, Any], problems: list[MessageItem], now: datetime | None) -> bool:
    if "computer" not in document:
        return False
    if "compute" in document:
        problems.append(
            _mixed(
                now,
                "it has both 'compute' (schema 1.0.7) and 'computer', from ${form}; send only 'compute'",
                form=EARLIER_FORM,
            )
        )
        return False
    document["compute"] = document.pop("computer")
    return True


def _translate_discriminators(
    components: Sequence[tuple[str, dict[str, Any]]], problems: list[MessageItem], now: datetime | None
) -> list[str]:
    """`type` becomes `kind` when every component uses `type`; the paths translated."""
    with_kind: list[str] = []
    with_type: list[str] = []
    for path, component in components:
        if "kind" in component and "type" in component:
            problems.append(
                _mixed(
                    now,
                    "${where} has both 'kind' (schema 1.0.7) and 'type', from ${form}; send only 'kind'",
                    where=path,
                    form=EARLIER_FORM,
                )
            )
        elif "type" in component:
            with_type.append(path)
        elif "kind" in component:
            with_kind.append(path)
    if problems:
        return []
    if with_type and with_kind:
        problems.append(
            _mixed(
                now,
                "'type' at ${legacy} is from ${form}, but 'kind' at ${current} is schema 1.0.7; "
                "send 'kind' everywhere",
                form=EARLIER_FORM,
                legacy=_listing(with_type),
                current=_listing(with_kind),
            )
        )
        return []
    by_path = dict(components)
    for path in with_type:
        by_path[path]["kind"] = by_path[path].pop("type")
    return with_type


def _translate_names(
    components: Sequence[tuple[str, dict[str, Any]]], problems: list[MessageItem], now: datetime | None
) -> list[str]:
    """A flat string `name` moves into `meta.name`; the paths translated."""
    moved: list[str] = []
    for path, component in components:
        name = component.get("name")
        meta = component.get("meta")
        if not isinstance(name, str) or not (meta is None or isinstance(meta, dict)):
            continue  # not the legacy name, or a `meta` the parser refuses anyway
        meta = meta or {}
        if "name" in meta and meta["name"] != name:
            problems.append(
                _mixed(
                    now,
                    "${where} has a flat 'name' [${name}], from ${form}, and a different 'meta.name' "
                    "[${meta}] (schema 1.0.7); send only 'meta.name'",
                    where=path,
                    name=name,
                    form=EARLIER_FORM,
                    meta=meta["name"],
                )
            )
            continue
        component["meta"] = {**meta, "name": name}
        del component["name"]
        moved.append(path)
    return moved


def _declared_volumes(
    declared: list[Any], problems: list[MessageItem], now: datetime | None
) -> dict[str, tuple[int, dict[str, Any]]]:
    """The top-level volume mounts by name, with their positions."""
    by_name: dict[str, tuple[int, dict[str, Any]]] = {}
    for index, volume in enumerate(declared):
        meta = volume.get("meta") if isinstance(volume, dict) else None
        name = meta.get("name") if isinstance(meta, dict) else None
        if not isinstance(volume, dict):
            problems.append(
                MessageItem.error(
                    INVALID_VALUE,
                    "Invalid value at ${path}: a volume mount must be a mapping",
                    time=now,
                    path=f"volumes[{index}]",
                )
            )
        elif not isinstance(name, str):
            problems.append(
                MessageItem.error(
                    MISSING_VALUE,
                    "The volume mount volumes[${index}] has no meta.name, so compute.volumes cannot name it",
                    time=now,
                    index=index,
                )
            )
        elif name in by_name:
            problems.append(
                MessageItem.error(
                    DUPLICATE_RESOURCE,
                    "Duplicate volume name [${name}] at volumes[${index}] "
                    "(already used by volumes[${first}])",
                    time=now,
                    name=name,
                    index=index,
                    first=by_name[name][0],
                )
            )
        else:
            by_name[name] = (index, volume)
    return by_name


def _translate_volumes(
    document: dict[str, Any], compute_path: str, problems: list[MessageItem], now: datetime | None
) -> list[str]:
    """Top-level `volumes` become the mounts of the compute resource that names them; the names moved."""
    compute = document.get("compute")
    mounts = compute.get("volumes") if isinstance(compute, dict) else None
    where = f"{compute_path}.volumes"
    if "volumes" not in document:
        # The v1.0 form without its declarations: each name refers to nothing.
        if isinstance(mounts, list) and len(mounts) <= MAX_COMPONENTS:
            problems += [
                MessageItem.error(
                    RESOURCE_NOT_FOUND,
                    "No volume named [${name}] is declared for ${where}[${index}] (a name there refers to "
                    "the top-level volumes of ${form}; schema 1.0.7 puts the volume mount itself there)",
                    time=now,
                    name=name,
                    where=where,
                    index=index,
                    form=V1_0_FORM,
                )
                for index, name in enumerate(mounts)
                if isinstance(name, str)
            ]
        return []
    declared = document.pop("volumes")
    if not isinstance(declared, list):
        problems.append(
            MessageItem.error(
                INVALID_VALUE, "Invalid value at volumes: it must be a list of volume mounts", time=now
            )
        )
        return []
    if not declared and not (isinstance(mounts, list) and any(isinstance(m, str) for m in mounts)):
        return []  # an empty declaration names nothing: no form to translate, none mixed
    for path, items in (("volumes", declared), (where, mounts)):
        if isinstance(items, list) and len(items) > MAX_COMPONENTS:
            problems.append(
                MessageItem.error(
                    TOO_LARGE,
                    "Too many items at ${path}: ${count}, more than the limit of ${limit}",
                    time=now,
                    path=path,
                    count=len(items),
                    limit=MAX_COMPONENTS,
                )
            )
            return []
    by_name = _declared_volumes(declared, problems, now)
    if mounts is None:
        mounts = []
    if not isinstance(mounts, list):
        problems.append(
            MessageItem.error(
                INVALID_VALUE,
                "Invalid value at ${path}: it must list the names of declared volumes",
                time=now,
                path=where,
            )
        )
        return []
    mounted: list[dict[str, Any]] = []
    named: dict[str, int] = {}
    for index, name in enumerate(mounts):
        if isinstance(name, dict):
            problems.append(
                _mixed(
                    now,
                    "it declares top-level 'volumes', from ${form}, but ${where}[${index}] is a volume mount "
                    "(schema 1.0.7) rather than the name of one; use one form",
                    form=V1_0_FORM,
                    where=where,
                    index=index,
                )
            )
        elif not isinstance(name, str):
            problems.append(
                MessageItem.error(
                    INVALID_VALUE,
                    "Invalid value at ${path}: it must be the name of a declared volume",
                    time=now,
                    path=f"{where}[{index}]",
                )
            )
        elif name in named:
            # Mounting one volume twice would also let a small document grow past its size limit.
            problems.append(
                MessageItem.error(
                    DUPLICATE_RESOURCE,
                    "${where}[${index}] names volume [${name}] again (already at ${where}[${first}])",
                    time=now,
                    where=where,
                    index=index,
                    name=name,
                    first=named[name],
                )
            )
        elif name not in by_name:
            problems.append(
                MessageItem.error(
                    RESOURCE_NOT_FOUND,
                    "No volume named [${name}] is declared in the top-level volumes, for ${where}[${index}]",
                    time=now,
                    name=name,
                    where=where,
                    index=index,
                )
            )
        else:
            named[name] = index
            mounted.append(by_name[name][1])
    for name, (index, _) in by_name.items():
        if name not in named:
            problems.append(
                MessageItem.error(
                    RESOURCE_NOT_FOUND,
                    "The volume [${name}] declared at volumes[${index}] is not named in ${where}: a declared "
                    "volume is mounted only where compute names it",
                    time=now,
                    name=name,
                    index=index,
                    where=where,
                )
            )
    if problems:
        return []
    if not isinstance(compute, dict):
        return []  # nothing declared and nothing named: an empty list, dropped
    compute["volumes"] = mounted
    return list(named)


def _check_bounds(document: dict[str, Any], forms: str, now: datetime | None) -> None:
    """The translated document within the bounds the client's had to meet: nesting (a flat name moves one
    level down) and size (each `meta` adds a few bytes). Counts are the models' (`at_most`)."""
    try:
        check_structure(document)
        size = len(
            json.dumps(document, ensure_ascii=False, separators=(",", ":"), default=str).encode(
                "utf-8", "surrogatepass"
            )
        )
    except (DocumentError, TypeError, ValueError, RecursionError) as error:
        reason = error.reason if isinstance(error, DocumentError) else type(error).__name__
        raise Untranslatable(
            [
                MessageItem.error(
                    SYNTAX_FAIL,
                    "Translated from ${forms} to schema 1.0.7, the request is not usable: ${reason}",
                    time=now,
                    forms=forms,
                    reason=reason,
                )
            ]
        ) from None
    if size > MAX_DOCUMENT_BYTES:
        raise Untranslatable(
            [
                MessageItem.error(
                    TOO_LARGE,
                    "Translated from ${forms} to schema 1.0.7, the request is ${size} bytes, more than the "
                    "limit of ${limit} bytes",
                    time=now,
                    forms=forms,
                    size=size,
                    limit=MAX_DOCUMENT_BYTES,
                )
            ]
        )


def _components(document: Mapping[str, Any]) -> Iterator[Any]:
    compute = document.get("compute")
    yield document.get("executable")
    yield compute
    lists = [document.get("storage"), document.get("data")]
    if isinstance(compute, dict):
        lists.append(compute.get("volumes"))
    for items in lists:
        if isinstance(items, list) and len(items) <= MAX_COMPONENTS:
            yield from items


def _looks_current(document: Mapping[str, Any]) -> bool:
    """No mark of an older form anywhere: the common case, decided without copying anything."""
    if "computer" in document or "volumes" in document:
        return False
    return not any(
        isinstance(item, str) or (isinstance(item, dict) and ("type" in item or "name" in item))
        for item in _components(document)
    )


def translate(document: Mapping[str, Any], now: datetime | None = None) -> Translation:
    """`document` in the 1.0.7 form, with a WARN per legacy rule applied; raise `Untranslatable`
    (and nothing else) when it mixes generations or names a volume it does not declare."""
    result = dict(document)
    if _looks_current(result):
        return Translation(result, ())
    problems: list[MessageItem] = []
    renamed = _rename_compute(result, problems, now)
    compute_path = "computer" if renamed else "compute"
    components = list(_copied_components(result, compute_path))
    typed = _translate_discriminators(components, problems, now)
    named = _translate_names(components, problems, now)
    volumes = _translate_volumes(result, compute_path, problems, now) if not problems else []
    if problems:
        raise Untranslatable(problems)
    warnings: list[MessageItem] = []
    if renamed:
        warnings.append(_warn(now, EARLIER_FORM, "'computer' is now 'compute'"))
    if typed:
        warnings.append(_warn(now, EARLIER_FORM, f"'type' is now 'kind' (at {_listing(typed)})"))
    if named:
        warnings.append(_warn(now, EARLIER_FORM, f"a flat 'name' is now 'meta.name' (at {_listing(named)})"))
    if volumes:
        warnings.append(
            _warn(
                now,
                V1_0_FORM,
                f"the top-level volumes are now mounted in compute.volumes ({_listing(volumes)})",
            )
        )
    if warnings:
        forms = " and ".join(sorted({w.values["form"] for w in warnings if w.values}))
        _check_bounds(result, forms, now)
    return Translation(result, tuple(warnings))

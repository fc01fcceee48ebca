"""SRCNet data products as Rucio DIDs: the `ivo://` identifier of an `IvoaDataResource` and the
namespace/objectname of an `SkaoDataResource` both name a Rucio data identifier, `scope:name`.

Pure parsing, no I/O. An SRCNet data product identifier follows the pattern

    ivo://<authority>/<path>?<scope>:<name>        e.g.  ivo://skao.int/data?testing:PTF10tce.fits

(the IVOA resource that publishes the product, then the product within it as the query). The
authority and path follow IVOA Identifiers 2.0; scope and name follow Rucio's default naming rules
(scope: at most 25 letters, digits and `._-`; name: at most 250 characters, a letter or digit first,
then letters, digits and `._-/`). Everything else is refused with a reason a user can act on: no
percent-encoding (one DID, one spelling), no second `?`, no `&`, `=`, `#` or space in the query (an
identifier is not a place for parameters), no `..` path segments in a name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from shared.models.kinds import IVOA_DATA_KIND, SKAO_DATA_KIND, normalise_kind

SCHEME: Final = "ivo://"
#: The longest data product identifier accepted: an authority and path of an IVOA identifier
#: (at most 255 characters, as the registry stores them) plus `?`, a scope and a name.
MAX_IVOID_LENGTH: Final = 255 + 1 + 25 + 1 + 250
#: Rucio's default limits (`SCOPE_LENGTH`, `NAME_LENGTH` of its generic naming schema).
MAX_SCOPE_LENGTH: Final = 25
MAX_NAME_LENGTH: Final = 250

_AUTHORITY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~\-()'!*+=]{2,}")
_PATH = re.compile(r"(/[A-Za-z0-9._~\-!*'()+=]+)+")
_SCOPE = re.compile(r"[A-Za-z0-9._\-]+")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-/]*")


class NotADataProduct(ValueError):
    """The identifier does not name a Rucio DID; `reason` says why, for the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class DataProductDid:
    """A Rucio data identifier; `origin` is what named it (an ivoid, or None for namespace/objectname)."""

    scope: str
    name: str
    origin: str | None = None

    @property
    def did(self) -> str:
        return f"{self.scope}:{self.name}"


def _shown(value: str, limit: int = 80) -> str:
    """The value for a message: cut, and with control characters escaped (it may be hostile)."""
    text = value if len(value) <= limit else value[:limit] + "…"
    return text.encode("unicode_escape").decode("ascii")


def scope_problem(scope: str) -> str | None:
    if not scope:
        return "the scope is empty"
    if len(scope) > MAX_SCOPE_LENGTH:
        return f"the scope is {len(scope)} characters long, more than Rucio's limit of {MAX_SCOPE_LENGTH}"
    if not _SCOPE.fullmatch(scope):
        return f"the scope '{_shown(scope)}' may hold only letters, digits and ._-"
    return None


def name_problem(name: str) -> str | None:
    if not name:
        return "the name is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"the name is {len(name)} characters long, more than Rucio's limit of {MAX_NAME_LENGTH}"
    if not _NAME.fullmatch(name):
        return (
            f"the name '{_shown(name)}' must start with a letter or digit and hold only letters, "
            "digits and ._-/"
        )
    if any(part in ("", ".", "..") for part in name.split("/")):
        return f"the name '{_shown(name)}' has an empty, '.' or '..' path segment"
    return None


def did_from_ivoid(ivoid: str) -> DataProductDid:
    """The Rucio DID that an SRCNet data product identifier names; `NotADataProduct` otherwise."""
    pattern = "ivo://<authority>/<path>?<scope>:<name>"
    if len(ivoid) > MAX_IVOID_LENGTH:
        raise NotADataProduct(
            f"is {len(ivoid)} characters long, more than the limit of {MAX_IVOID_LENGTH}"
        )
    if ivoid[: len(SCHEME)].lower() != SCHEME:
        raise NotADataProduct(f"must start with ivo:// (an SRCNet data product is {pattern})")
    rest = ivoid[len(SCHEME) :]
    if "%" in rest:
        raise NotADataProduct("must not be percent-encoded: write the scope and name as they are")
    resource, mark, product = rest.partition("?")
    if not mark:
        raise NotADataProduct(
            f"names no data product: it has no ?<scope>:<name> part (an SRCNet data product is {pattern})"
        )
    authority, slash, path = resource.partition("/")
    if not _AUTHORITY.fullmatch(authority):
        raise NotADataProduct(
            "must have an authority of at least 3 characters, a letter or digit first, then letters, "
            "digits and ._~-()'!*+= only"
        )
    if not slash or not _PATH.fullmatch(slash + path):
        raise NotADataProduct(
            f"must have a resource path of non-empty /-separated parts after the authority ({pattern})"
        )
    if any(c in product for c in "?&=#") or any(c.isspace() for c in product):
        raise NotADataProduct(
            "must have exactly one <scope>:<name> after the ?, with no further ?, &, =, # or spaces"
        )
    scope, colon, name = product.partition(":")
    if not colon:
        raise NotADataProduct(f"must name the data product as <scope>:<name> after the ? ({pattern})")
    problem = scope_problem(scope) or name_problem(name)
    if problem is not None:
        raise NotADataProduct(f"does not name a Rucio data identifier: {problem}")
    return DataProductDid(scope, name, origin=ivoid)


def did_from_skao(namespace: str, objectname: str) -> DataProductDid:
    """The Rucio DID of an SKAO data resource: namespace is the scope, objectname the name."""
    problem = scope_problem(namespace)
    if problem is not None:
        raise NotADataProduct(f"has a namespace that is no Rucio scope: {problem}")
    problem = name_problem(objectname)
    if problem is not None:
        raise NotADataProduct(f"has an objectname that is no Rucio name: {problem}")
    return DataProductDid(namespace, objectname)


def shown_ivoid(ivoid: str) -> str:
    """An identifier from a request, safe to put in a message (cut, control characters escaped)."""
    return _shown(ivoid, 120)


def data_product_did(component: Mapping[str, Any]) -> DataProductDid | None:
    """The Rucio DID a data resource (as JSON, by alias) names through SRCNet identifiers, or None.

    * `SkaoDataResource`: `skao.namespace:skao.objectname` when both are given, else its `ivoa.ivoid`;
    * `IvoaDataResource`: its `ivoa.ivoid`, when given;
    * every other kind (a `RucioDataResource` names its DID plainly): None.

    Raises `NotADataProduct` when a given identifier names no DID; the reason starts with what was
    wrong ("the identifier ivo://… must …"), for a message about the named resource.
    """
    raw_kind = component.get("kind")
    kind = normalise_kind(raw_kind) if isinstance(raw_kind, str) else ""
    if kind not in (IVOA_DATA_KIND, SKAO_DATA_KIND):
        return None
    if kind == SKAO_DATA_KIND:
        skao = component.get("skao")
        skao = skao if isinstance(skao, Mapping) else {}
        namespace, objectname = skao.get("namespace"), skao.get("objectname")
        if isinstance(namespace, str) and namespace and isinstance(objectname, str) and objectname:
            try:
                return did_from_skao(namespace, objectname)
            except NotADataProduct as error:
                raise NotADataProduct(f"the SKAO data object {error.reason}") from None
    ivoa = component.get("ivoa")
    ivoid = ivoa.get("ivoid") if isinstance(ivoa, Mapping) else None
    if not isinstance(ivoid, str):
        return None
    try:
        return did_from_ivoid(ivoid)
    except NotADataProduct as error:
        raise NotADataProduct(f"the identifier '{shown_ivoid(ivoid)}' {error.reason}") from None

"""The OpenAPI document: what the routes declare, plus what FastAPI cannot infer from them.

Routes read their bodies themselves (JSON or YAML, within a size limit), so their request schemas,
the YAML twin of every JSON response and the security schemes are added here.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from services.offers.http import views
from services.offers.http.origins import UNSAFE_METHODS
from shared.models import MAX_DOCUMENT_BYTES, EnumValueUpdate, ExecutionRequest
from shared.models.serialise import MAX_DOCUMENT_DEPTH

_ERROR_TEXTS = {
    400: "Missing or invalid fields",
    401: "Not authenticated (see WWW-Authenticate)",
    403: "Authenticated, but not the owner (or not an administrator); or a write from another origin",
    404: "No such resource",
    409: "Conflict: an illegal transition, an expired offer or an existing identity",
    413: "The document is too large",
    415: "A body that is neither JSON nor YAML (or has no Content-Type)",
    422: "Unparsable or invalid input",
    429: "Too many failed logins for the user name or from the address (see Retry-After)",
    504: "The broker's services did not answer in time",
}

_LOCATION = {"Location": {"required": True, "schema": {"type": "string", "format": "uri"}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def body(name: str) -> dict[str, Any]:
    """``openapi_extra`` of a route that reads a document of schema ``name``, in JSON or YAML."""
    schema = _ref(name)
    return {
        "requestBody": {
            "required": True,
            # OpenAPI has no keyword for a body's size: the guard answers 413 past it (`guard`).
            "description": f"A JSON or YAML document of at most {MAX_DOCUMENT_BYTES} bytes (413 beyond), "
            f"nested at most {MAX_DOCUMENT_DEPTH} levels deep.",
            "content": {"application/json": {"schema": schema}, "application/yaml": {"schema": schema}},
        }
    }


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": views.ErrorResponse, "description": _ERROR_TEXTS[code]} for code in codes}


def see_other(model: type, description: str) -> dict[str, Any]:
    return {"model": model, "description": description, "headers": _LOCATION}


def install(app: FastAPI) -> None:
    """Serve the completed document at /openapi.json (built once, on first use)."""

    def openapi() -> dict[str, Any]:
        if not app.openapi_schema:
            app.openapi_schema = document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def document(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        routes=app.routes,
        description="JSON and YAML in both directions; YAML when a request names neither "
        "Content-Type nor Accept. Authenticate with HTTP Basic or an OIDC bearer token.",
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    _, extra = models_json_schema(
        [
            (ExecutionRequest, "validation"),
            (EnumValueUpdate, "validation"),
            (views.IdentityRequest, "validation"),
            (views.PasswordRequest, "validation"),
        ],
        ref_template="#/components/schemas/{model}",
    )
    for name, definition in extra.get("$defs", {}).items():
        components.setdefault(name, definition)
    schemes = schema["components"].setdefault("securitySchemes", {})
    schemes["basic"] = {"type": "http", "scheme": "basic"}
    schemes["bearer"] = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    for path in schema.get("paths", {}).values():
        for method, operation in path.items():
            operation["security"] = [{"basic": []}, {"bearer": []}]
            _guard_errors(method, operation.setdefault("responses", {}))
            for response in operation.get("responses", {}).values():
                content = response.get("content") or {}
                if "application/json" in content:
                    content.setdefault("application/yaml", content["application/json"])
    stream = schema["paths"].get("/events", {}).get("get", {}).get("responses", {}).get("200", {})
    stream["content"] = {"text/event-stream": {"schema": {"type": "string"}}}
    return schema


def _guard_errors(method: str, responses: dict[str, Any]) -> None:
    """What the guard middleware and the login limits may answer on any route, declared on each."""
    unauthenticated = responses.get("401")
    if unauthenticated is None:
        return
    content = unauthenticated.get("content", {})
    if method.upper() in UNSAFE_METHODS:
        for code in (403, 413, 415):
            responses.setdefault(str(code), {"description": _ERROR_TEXTS[code], "content": content})
    responses.setdefault(
        "429",
        {
            "description": _ERROR_TEXTS[429],
            "content": content,
            "headers": {"Retry-After": {"required": True, "schema": {"type": "integer"}}},
        },
    )

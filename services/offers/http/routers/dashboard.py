"""The dashboard: its page (the static files are mounted by ``create_app``), the example request it
offers to load, and who the signed-in caller is."""

from __future__ import annotations

from importlib.resources import as_file
from pathlib import Path

import yaml
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from services.offers.http import openapi, views
from services.offers.http.access import User
from services.offers.http.context import Context
from services.offers.http.responses import PAGE_HEADERS, respond
from shared import examples

STATIC = Path(__file__).resolve().parent.parent / "static"

router = APIRouter()


@router.get(
    "/whoami",
    tags=["dashboard"],
    summary="The authenticated caller",
    response_model=None,
    responses={200: {"model": views.WhoAmI, "description": "The caller"}, **openapi.errors(401)},
)
async def whoami(request: Request, identity: User, ctx: Context) -> Response:
    me = views.WhoAmI(
        username=identity.username,
        owner=identity.owner,
        admin=identity.admin,
        jaeger_url=ctx.settings.jaeger_url,
        public_reads=ctx.settings.public_reads,
    )
    return respond(request, me.model_dump())


@router.get("/", include_in_schema=False)
async def dashboard() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=PAGE_HEADERS)


@router.get("/dashboard/example", include_in_schema=False)
async def dashboard_example() -> Response:
    from shared.client import read_request_file

    with as_file(examples.example("hello-notebook.yaml")) as path:
        document = read_request_file(path)
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return Response(text, media_type="application/yaml")

"""The VOSI endpoints (IVOA VOSI 1.1): ``GET /capabilities`` and ``GET /availability``.

Public, as VOSI endpoints are (a registry harvests them without credentials), and with nothing in
them that is not in the configuration an operator publishes anyway: the identifier, the URLs and
the ways to authenticate. Availability follows cadc-vosi: the document is 200 even when the broker
is unavailable (``available`` says so), and ``?detail=min`` answers with the status only, 200 or 503.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from services.offers.http.context import Context, HttpContext
from shared.ivoa import documents

router = APIRouter()

MEDIA_TYPE = "text/xml"
#: Never cached on the way: availability changes, and capabilities change with the configuration.
HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def broker_service(ctx: HttpContext) -> documents.BrokerService:
    settings = ctx.settings
    return documents.BrokerService(
        ivoid=settings.ivoid,
        base_url=ctx.base_url,
        security=documents.security_methods(
            oidc=ctx.auth.oidc is not None, public_reads=settings.public_reads
        ),
    )


@router.get("/capabilities", include_in_schema=False)
async def capabilities(ctx: Context) -> Response:
    return Response(documents.capabilities(broker_service(ctx)), media_type=MEDIA_TYPE, headers=HEADERS)


@router.get("/availability", include_in_schema=False)
async def availability(ctx: Context, detail: Literal["min", "max"] | None = Query(None)) -> Response:
    report = await ctx.availability.report()
    if detail == "min":
        return Response(status_code=200 if report.available else 503, headers=HEADERS)
    return Response(documents.availability(report), media_type=MEDIA_TYPE, headers=HEADERS)

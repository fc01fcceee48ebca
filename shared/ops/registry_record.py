"""``broker registry-record``: the broker's VOResource record, for an operator to publish in an IVOA
registry. The capabilities are those ``GET /capabilities`` serves with the same EB_* settings."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console

from shared.ivoa import documents
from shared.settings import Settings

err = Console(stderr=True)
#: The HTTP API's address when EB_PUBLIC_URL is unset (as the offers service's HttpSettings).
LOCAL_URL = "http://127.0.0.1:8082"


def command(
    title: Annotated[str, typer.Option(help="The record's title.")] = "Execution Broker",
    publisher: Annotated[str, typer.Option(help="Who publishes the service (an organisation).")] = "",
    contact_name: Annotated[str, typer.Option(help="Who to ask about it.")] = "Broker operator",
    contact_email: Annotated[str | None, typer.Option(help="The contact's e-mail address.")] = None,
    public_url: Annotated[
        str | None, typer.Option(envvar="EB_PUBLIC_URL", help="The HTTP API's public base URL.")
    ] = None,
    public_reads: Annotated[
        bool, typer.Option(envvar="EB_PUBLIC_READS", help="Reads need no login (anonymous access).")
    ] = False,
) -> None:
    """Print the broker's VOResource record (an ri:Resource of type vr:Service: EB_IVOID, curation,
    content and its VOSI and Execution Broker capabilities) for an IVOA registry."""
    try:
        settings = Settings()
    except ValidationError as exc:  # the messages only: an input may be a secret
        for error in exc.errors():
            err.print(f"[red]error:[/red] {error['msg']}", markup=True, highlight=False)
        raise typer.Exit(1) from None
    service = documents.BrokerService(
        ivoid=settings.ivoid,
        base_url=(public_url or LOCAL_URL).rstrip("/"),
        security=documents.security_methods(oidc=bool(settings.oidc_issuer), public_reads=public_reads),
    )
    authority = settings.ivoid.split("/")[2]
    curation = documents.Curation(
        title=title,
        publisher=publisher or authority,
        contact_name=contact_name,
        contact_email=contact_email,
    )
    record = documents.resource_record(service, curation, now=datetime.now(UTC))
    typer.echo(record.decode("utf-8"))

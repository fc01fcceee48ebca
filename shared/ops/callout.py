"""The auth callout as a process of its own (``broker callout``): it answers nats-server's questions
about connecting users with the installation's local identities and, when one is configured, an
OIDC issuer's tokens.

It is a process apart from the services so that a user can log in while a service restarts, and so
that no service holds the key that signs every user's permissions.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable

import nats
from pydantic import SecretStr

from shared.auth import identities
from shared.auth.callout import Admit, CalloutConfig, CalloutResponder, Decision, Refuse, Verifiers
from shared.auth.oidc import OidcVerifier
from shared.auth.verifiers import OidcTokens
from shared.bus.servers import server_urls
from shared.ops.secured import APP_ACCOUNT, CALLOUT, SecuredBus, service_consumers, write_secret
from shared.service import installed_services
from shared.settings import Settings

log = logging.getLogger("shared.ops.callout")
#: The callout retries a lost server five times as often as a reconnecting client
#: (`shared.client.RECONNECT_WAIT_S`), so it is subscribed again before they log in.
CALLOUT_RECONNECT_WAIT_S = 0.1
#: The one answer to a wrong password, an unknown user and a disabled one alike.
WRONG_LOGIN = "unknown user, wrong password or disabled identity"


def password_checker(store: identities.IdentityStore) -> Callable[[str, SecretStr], Awaitable[Decision]]:
    async def check(username: str, password: SecretStr) -> Decision:
        try:
            identities.check_username(username)
        except identities.IdentityError as exc:
            return Refuse(str(exc))
        found = await asyncio.to_thread(store.verify, username, password.get_secret_value())
        return Refuse(WRONG_LOGIN) if found is None else Admit(found.owner)

    return check


def token_checker(settings: Settings) -> Callable[[SecretStr], Awaitable[Decision]] | None:
    """OIDC access tokens of the configured issuer, or None: tokens are refused."""
    issuer, audience = settings.oidc_issuer, settings.oidc_audience
    if not issuer:
        return None
    if not audience:
        raise ValueError("EB_OIDC_ISSUER is set but EB_OIDC_AUDIENCE is not: the audience is required")
    return OidcTokens(OidcVerifier(issuer, audience, leeway_s=settings.oidc_leeway_s)).token


def responder(settings: Settings) -> CalloutResponder:
    bus = SecuredBus(settings.data_dir)
    wirings = [entry.wiring(settings) for entry in installed_services().values()]
    config = CalloutConfig(
        issuer_seed=bus.keys.issuer_seed,
        account=APP_ACCOUNT,
        xkey_seed=bus.keys.xkey_seed,
        service_consumers=service_consumers(wirings),
    )
    store = identities.store_in(settings.data_dir)
    return CalloutResponder(
        config, Verifiers(check_password=password_checker(store), check_token=token_checker(settings))
    )


async def run(settings: Settings, stop: asyncio.Event) -> None:
    bus = SecuredBus(settings.data_dir)
    answer = responder(settings)

    async def quiet(exc: Exception) -> None:
        log.warning("auth callout connection: %s", exc)

    nc = await nats.connect(
        server_urls(settings.nats_url),
        name="eb-callout",
        nkeys_seed=str(bus.keys.seed_file(CALLOUT)),
        max_reconnect_attempts=-1,
        # Back before any client: a password client that reconnects to a restarted server before
        # the callout has subscribed again is refused, and nats-py then closes it for good.
        reconnect_time_wait=CALLOUT_RECONNECT_WAIT_S,
        error_cb=quiet,
    )
    try:
        await answer.start(nc)
        await nc.flush()  # the server has the subscription: logins from now on reach us
        write_secret(bus.callout_ready_file, str(os.getpid()).encode())
        log.info("auth callout answering on %s", settings.nats_url)
        await stop.wait()
    finally:
        bus.callout_ready_file.unlink(missing_ok=True)
        await answer.stop()
        await nc.close()

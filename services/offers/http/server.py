"""Run the HTTP API inside the offers process: uvicorn on the service's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from services.offers.http.app import create_app
from services.offers.http.bus import NatsBus
from services.offers.http.context import HttpContext
from services.offers.http.migration import move_legacy_identities
from services.offers.http.settings import HttpSettings
from services.offers.store import ReadModel
from shared.bus.store import Store

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The service owns SIGTERM/SIGINT; it stops this server through ``should_exit``.
        yield


class HttpServer:
    def __init__(self, settings: HttpSettings, nats_url: str, database: Path | Store, data_dir: Path) -> None:
        self.settings = settings
        self.data_dir = data_dir
        if settings.http_nats_nkey_seed_file is None:
            raise ValueError(
                "the HTTP API needs its own key on the bus: set EB_HTTP_NATS_NKEY_SEED_FILE "
                "(broker up writes one into <data dir>/bus/http.nk)"
            )
        self.bus = NatsBus(nats_url, settings.http_nats_nkey_seed_file)
        self.read_model = ReadModel(database)
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.read_model.open()
        await self.bus.connect()
        app = create_app(
            self.settings, self.read_model, self.bus, data_dir=self.data_dir, health=self.bus.answers
        )
        self._context: HttpContext = app.state.ctx
        await move_legacy_identities(self.read_model, self._context.auth.identities)
        config = uvicorn.Config(
            app,
            host=self.settings.http_host,
            port=self.settings.http_port or 8082,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=3,
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(), name="offers-http")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises the bind error, for example
                raise OSError(f"the HTTP server on port {config.port} stopped at start")
            await asyncio.sleep(0.05)
        log.info("HTTP API and dashboard on %s", self.settings.base_url())

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._context.closing.set()
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 10)
        await self.bus.close()
        await self.read_model.close()

"""Wires the engine into a Litestar app: started in its lifespan, injected into handlers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from litestar import Litestar
from litestar.config.app import AppConfig
from litestar.config.csrf import CSRFConfig
from litestar.di import NamedDependency, Provide
from litestar.plugins import InitPluginProtocol

from skiplock.api.openapi import with_security_scheme
from skiplock.api.security import AuthState
from skiplock.auth import KeyStore, TokenVerifier, decide_for
from skiplock.queue.client import Client
from skiplock.queue.engine import Engine

log = structlog.get_logger("skiplock.api")

#: Handler parameter types for the two dependencies this plugin provides.
ClientDep = NamedDependency[Client]
EngineDep = NamedDependency[Engine]


class SkiplockPlugin(InitPluginProtocol):
    """Adds ``engine`` and ``client`` dependencies and runs the engine for the app's lifetime."""

    def __init__(self, engine: Engine, csrf: CSRFConfig | None = None) -> None:
        self.engine = engine
        self.csrf = csrf

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.dependencies["engine"] = Provide(self._engine, sync_to_thread=False)
        app_config.dependencies["client"] = Provide(self._client, sync_to_thread=False)
        app_config.lifespan.append(self._lifespan)
        app_config.signature_types.extend([Engine, Client])
        if app_config.openapi_config is not None:  # the scheme the routes' security names
            with_security_scheme(app_config.openapi_config)
        return app_config

    def _engine(self) -> Engine:
        return self.engine

    def _client(self) -> Client:
        return self.engine.client

    @asynccontextmanager
    async def _lifespan(self, app: Litestar) -> AsyncIterator[None]:
        async with self.engine:
            keys = KeyStore(self.engine.pool)
            settings = self.engine.settings
            mode = await decide_for(settings, keys)
            app.state.auth = AuthState(mode=mode, keys=keys, tokens=TokenVerifier.from_settings(settings))
            # Uploads spool to disk, then each holds a pooled connection to write: a bounded share.
            app.state.upload_slots = asyncio.Semaphore(max(1, settings.pool_max_size // 4))
            if self.csrf is not None:  # the installation's secret: every replica accepts every token
                self.csrf.secret = await keys.secret()
            log.info("auth_mode", mode=mode.value, host=settings.host)
            yield

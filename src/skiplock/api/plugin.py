"""Wires the engine into a Litestar app: started in its lifespan, injected into handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.config.app import AppConfig
from litestar.di import NamedDependency, Provide
from litestar.plugins import InitPluginProtocol

from skiplock.queue.client import Client
from skiplock.queue.engine import Engine

#: Handler parameter types for the two dependencies this plugin provides.
ClientDep = NamedDependency[Client]
EngineDep = NamedDependency[Engine]


class SkiplockPlugin(InitPluginProtocol):
    """Adds ``engine`` and ``client`` dependencies and runs the engine for the app's lifetime."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.dependencies["engine"] = Provide(self._engine, sync_to_thread=False)
        app_config.dependencies["client"] = Provide(self._client, sync_to_thread=False)
        app_config.lifespan.append(self._lifespan)
        app_config.signature_types.extend([Engine, Client])
        return app_config

    def _engine(self) -> Engine:
        return self.engine

    def _client(self) -> Client:
        return self.engine.client

    @asynccontextmanager
    async def _lifespan(self, _app: Litestar) -> AsyncIterator[None]:
        async with self.engine:
            yield

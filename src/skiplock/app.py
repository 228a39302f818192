"""The composition root: the Litestar application assembled from the JSON API (``api/``), the
dashboard (``ui/``) and the tasks (``tasks/`` and ``SKIPLOCK_TASK_MODULES``), the engine in its
lifespan, with the app-wide middleware, error handling and OpenAPI. No part imports this module."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from litestar import Controller, Litestar
from litestar.handlers import HTTPRouteHandler, WebsocketRouteHandler
from litestar.types import ControllerRouterHandler

from skiplock import tracing
from skiplock._version import __version__
from skiplock.api import SkiplockPlugin, api_routes
from skiplock.api.bounds import BoundedRequest, url_nul_middleware
from skiplock.api.errors import DRIVER_ERRORS, database_error_handler, skiplock_error_handler
from skiplock.api.metrics import prometheus
from skiplock.api.middleware import request_id_middleware
from skiplock.api.openapi import openapi_config
from skiplock.api.protection import compression, cors, rate_limit
from skiplock.api.security import auth_middleware, csrf_config, scope_guard
from skiplock.errors import ConfigError, SkiplockError
from skiplock.queue.engine import Engine
from skiplock.queue.tasks import Task
from skiplock.settings import Settings
from skiplock.tasks import load_registry
from skiplock.ui import api_docs_plugins, dashboard_routes, template_config

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

MAX_BODY_BYTES = 10 * 1024 * 1024


def _paths(handlers: Iterable[ControllerRouterHandler]) -> list[str]:
    paths: list[str] = []
    for handler in handlers:
        if isinstance(handler, type) and issubclass(handler, Controller):
            paths.append(str(getattr(handler, "path", "/")))
        elif isinstance(handler, HTTPRouteHandler | WebsocketRouteHandler):
            paths.extend(handler.paths)
    return paths


def _tracing_plugins(settings: Settings, given: TracerProvider | None) -> list[Any]:
    provider = tracing.configure(settings, given)
    if provider is None:
        return []
    from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin

    quiet = [r"^/health$", r"^/ready$", r"^/metrics$", r"^/ui/static/"]
    return [OpenTelemetryPlugin(OpenTelemetryConfig(tracer_provider=provider, exclude=quiet))]


def create_app(
    settings: Settings | None = None,
    *,
    tasks: Iterable[Task[Any]] | None = None,
    tracer_provider: TracerProvider | None = None,
) -> Litestar:
    """The HTTP API and the dashboard with the engine (workers included unless ``settings.worker`` is off).

    ``settings.database_url`` must be set (the CLI sets it to the embedded server when unset).
    ``tasks`` replaces the ``@task``-registered tasks (the built-ins are always there).
    ``tracer_provider`` replaces the OTLP exporter tracing would otherwise set up (tests).
    """
    settings = settings or Settings.load()
    if not settings.database_url:
        raise ConfigError("create_app needs settings.database_url (or DATABASE_URL)")
    engine = Engine(settings, load_registry(settings.task_modules, tasks), settings.database_url)
    api = api_routes()
    csrf = csrf_config(_paths(api))
    return Litestar(
        route_handlers=[*api, *dashboard_routes()],
        template_config=template_config(),
        plugins=[SkiplockPlugin(engine, csrf), *_tracing_plugins(settings, tracer_provider)],
        middleware=[
            request_id_middleware,
            url_nul_middleware,  # before anything reads the query or the path
            prometheus().middleware,
            auth_middleware(),
            # After auth: a budget per verified key, not per whatever token a caller makes up.
            *([limits.middleware] if (limits := rate_limit(settings)) else []),
        ],
        cors_config=cors(settings),
        compression_config=compression(),
        guards=[scope_guard],
        csrf_config=csrf,
        exception_handlers={
            SkiplockError: skiplock_error_handler,
            **dict.fromkeys(DRIVER_ERRORS, database_error_handler),
        },
        request_max_body_size=MAX_BODY_BYTES,
        # Litestar's own logging config would put a handler of its format on the root logger:
        # its records (and uvicorn's) go through skiplock.logging's structlog handler instead.
        logging_config=None,
        request_class=BoundedRequest,  # JSON bodies decoded with depth, UTF-8 and NUL checks
        openapi_config=openapi_config(__version__, api_docs_plugins()),
    )

"""The live dashboard at /ui: server-rendered pages, static files, and the template engine; and the
API's Swagger UI and ReDoc pages, whose assets it serves itself (no CDN: they work offline)."""

from __future__ import annotations

from pathlib import Path

from litestar import Router
from litestar.datastructures import CacheControlHeader
from litestar.openapi.plugins import OpenAPIRenderPlugin, RedocRenderPlugin, SwaggerRenderPlugin
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from litestar.types import ControllerRouterHandler

from skiplock.ui.health import read_health
from skiplock.ui.pages import DashboardController, LoginController, limits_in_words, root, when
from skiplock.ui.workers import WorkersPage

HERE = Path(__file__).parent
#: Shipped in static/vendor/ as their npm packages publish them (see the README there).
SWAGGER_UI = "/ui/static/vendor/swagger-ui-5.32.0"
REDOC = "/ui/static/vendor/redoc-2.5.4"
#: The render plugins would otherwise fetch Litestar's favicon from a CDN.
NO_FAVICON = "<link rel='icon' href='data:,'>"

__all__ = ["api_docs_plugins", "dashboard_routes", "template_config"]


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    """The templates, with ``when(moment)`` (a readable ``<time>``) and ``limits_in_words``
    available to every page."""

    def add_globals(engine: JinjaTemplateEngine) -> None:
        engine.engine.globals.update(when=when, limits_in_words=limits_in_words)

    return TemplateConfig(
        directory=HERE / "templates", engine=JinjaTemplateEngine, engine_callback=add_globals
    )


def api_docs_plugins() -> list[OpenAPIRenderPlugin]:
    """Swagger UI at /schema/swagger and ReDoc at /schema/redoc, from this process's own files."""
    return [
        SwaggerRenderPlugin(
            js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
            css_url=f"{SWAGGER_UI}/swagger-ui.css",
            standalone_preset_js_url=f"{SWAGGER_UI}/swagger-ui-standalone-preset.js",
            favicon=NO_FAVICON,
        ),
        RedocRenderPlugin(js_url=f"{REDOC}/redoc.standalone.js", google_fonts=False, favicon=NO_FAVICON),
    ]


def dashboard_routes() -> list[ControllerRouterHandler]:
    """The pages, the redirect from /, and /ui/static (cached for an hour)."""
    static = create_static_files_router(
        path="/ui/static",
        directories=[HERE / "static"],
        cache_control=CacheControlHeader(max_age=3600, public=True),
        include_in_schema=False,
    )
    pages = Router(
        path="/",
        route_handlers=[root, DashboardController, WorkersPage, LoginController],
        before_request=read_health,  # the database's warnings, in every page's banner
        include_in_schema=False,
    )
    return [pages, static]

"""The live dashboard at /ui: server-rendered pages, static files, and the template engine."""

from __future__ import annotations

from pathlib import Path

from litestar.datastructures import CacheControlHeader
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from litestar.types import ControllerRouterHandler

from skiplock.ui.pages import DashboardController, LoginController, root

HERE = Path(__file__).parent

__all__ = ["dashboard_routes", "template_config"]


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    return TemplateConfig(directory=HERE / "templates", engine=JinjaTemplateEngine)


def dashboard_routes() -> list[ControllerRouterHandler]:
    """The pages, the redirect from /, and /ui/static (cached for an hour)."""
    static = create_static_files_router(
        path="/ui/static",
        directories=[HERE / "static"],
        cache_control=CacheControlHeader(max_age=3600, public=True),
        include_in_schema=False,
    )
    return [root, DashboardController, LoginController, static]

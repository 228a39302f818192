"""scrape: fetch a page and keep its metadata (title, description, h1-h3, links) in ``pages``."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urldefrag, urljoin, urlsplit

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, HttpUrl
from selectolax.lexbor import LexborHTMLParser, LexborNode

from skiplock.errors import BadResponseError
from skiplock.fetcher import Fetched
from skiplock.queue.context import Context
from skiplock.queue.tasks import task
from skiplock.tasks._statements import PAGES

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_TEXT_CHARS = 1000  # a title, heading or link text longer than this is cut


class ScrapeArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: HttpUrl = Field(description="An http or https page.")
    timeout_s: float = Field(default=30, gt=0, le=600, description="For the whole request.")


class Heading(BaseModel):
    level: int
    text: str


class Link(BaseModel):
    url: str
    text: str


class PageMeta(BaseModel):
    """What a page's HTML says about it."""

    title: str | None = None
    description: str | None = None
    headings: list[Heading] = Field(default_factory=list)
    links: list[Link] = Field(default_factory=list)


class Page(PageMeta):
    """A scraped page as stored."""

    url: str
    final_url: str
    status: int
    content_type: str
    scraped_at: datetime


def _text(node: LexborNode | None) -> str | None:
    if node is None:
        return None
    return " ".join(node.text(separator=" ").split())[:_TEXT_CHARS]


def _join(base: str, href: str) -> str | None:
    try:
        return urljoin(base, href)
    except ValueError:  # e.g. "http://[oops/": an invalid IPv6 host
        return None


def parse_page(html: str, page_url: str) -> PageMeta:
    """Title, meta description, h1-h3 in document order, and http(s) links made absolute
    (against ``<base href>`` when there is one) with fragments dropped, each once (first text wins)."""
    tree = LexborHTMLParser(html)
    base_node = tree.css_first("base[href]")
    declared = _join(page_url, (base_node.attributes.get("href") or "").strip()) if base_node else None
    base = declared or page_url
    description_node = tree.css_first('meta[name="description" i]')
    description = (description_node.attributes.get("content") or "").strip() if description_node else ""
    headings = [
        Heading(level=int((node.tag or "h0")[1]), text=_text(node) or "") for node in tree.css("h1, h2, h3")
    ]
    links: dict[str, Link] = {}
    for node in tree.css("a[href]"):
        href = (node.attributes.get("href") or "").strip()
        joined = _join(base, href)
        if joined is None:
            continue  # a malformed href costs that link, not the page
        absolute, _fragment = urldefrag(joined)
        if urlsplit(absolute).scheme not in ("http", "https") or absolute in links:
            continue  # mailto:, javascript:, tel: … are not pages
        links[absolute] = Link(url=absolute, text=_text(node) or "")
    return PageMeta(
        title=_text(tree.css_first("title")) or None,
        description=description or None,
        headings=headings,
        links=list(links.values()),
    )


def html_of(answer: Fetched) -> str:
    """The answer's HTML, or BadResponseError when it is something else."""
    if answer.content_type not in HTML_TYPES:
        kind = answer.content_type or "no content-type"
        raise BadResponseError(f"{answer.url} is not an HTML page ({kind})", content_type=kind)
    return answer.text()


async def store_page(pool: asyncpg.Pool, url: str, answer: Fetched, meta: PageMeta) -> None:
    await pool.execute(
        PAGES.page_upsert,
        url,
        answer.url,
        answer.status,
        answer.content_type,
        meta.title,
        meta.description,
        [heading.model_dump() for heading in meta.headings],
        [link.model_dump() for link in meta.links],
    )


async def get_page(pool: asyncpg.Pool, url: str) -> Page | None:
    row = await pool.fetchrow(PAGES.page_get, url)
    return None if row is None else Page.model_validate(dict(row))


@task("scrape", args=ScrapeArgs, max_attempts=3)
async def scrape(ctx: Context, args: ScrapeArgs) -> dict[str, Any]:
    """Fetch ``url`` and store its title, description, h1-h3 and links in pages (one row per URL).
    Non-HTML answers and pages over the size cap fail at once."""
    url = str(args.url)
    answer = await ctx.http.get(url, timeout_s=args.timeout_s)
    meta = parse_page(html_of(answer), answer.url)
    await store_page(ctx.pool, url, answer, meta)
    return {
        "url": url,
        "final_url": answer.url,
        "status": answer.status,
        "title": meta.title,
        "headings": len(meta.headings),
        "links": len(meta.links),
    }

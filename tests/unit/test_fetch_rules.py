"""The pure rules of the fetching tasks: which addresses are refused, what counts as an item,
what a page's HTML yields."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from skiplock.errors import BadResponseError, FetchRefusedError
from skiplock.fetcher import FetchPolicy, why_blocked
from skiplock.tasks.fetch_api import extract_items, keyed_items
from skiplock.tasks.scrape import parse_page


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.9.9.9", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "private"),  # carrier-grade NAT
        ("169.254.169.254", "link-local"),  # the cloud metadata service
        ("fe80::1", "link-local"),
        ("fd00:ec2::254", "private"),  # AWS's IPv6 metadata address
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_addresses_refused_by_default(address: str, reason: str | None) -> None:
    verdict = why_blocked(ipaddress.ip_address(address))
    if reason is None:
        assert verdict is None
    else:
        assert verdict is not None
        assert reason in verdict


@given(st.ip_addresses(v=4))
def test_an_ipv4_address_and_its_mapped_form_get_one_verdict(
    address: ipaddress.IPv4Address,
) -> None:
    mapped = ipaddress.IPv6Address(f"::ffff:{address}")
    assert (why_blocked(address) is None) == (why_blocked(mapped) is None)


def test_the_policy_trusts_allow_listed_hosts_and_private_mode() -> None:
    strict = FetchPolicy(allow_hosts=frozenset({"internal.example"}))
    strict.check_addresses("internal.example", ["10.0.0.1"])
    strict.check_addresses("public.example", ["93.184.215.14"])
    with pytest.raises(FetchRefusedError, match=r"10\.0\.0\.1 is a private"):
        strict.check_addresses("other.example", ["93.184.215.14", "10.0.0.1"])
    with pytest.raises(FetchRefusedError, match="loopback"):
        strict.check_literal("[::1]")
    strict.check_literal("example.org")  # names are the resolver's to check
    FetchPolicy(allow_private=True).check_literal("127.0.0.1")


def test_items_come_from_an_array_a_key_or_one_object() -> None:
    assert extract_items([1, 2], None) == [1, 2]
    assert extract_items({"data": [{"id": 1}]}, "data") == [{"id": 1}]
    assert extract_items({"id": 1}, None) == [{"id": 1}]
    with pytest.raises(BadResponseError, match="'data'"):
        extract_items([1], "data")
    with pytest.raises(BadResponseError, match="array or object"):
        extract_items("text", None)


def test_items_are_keyed_by_their_id_and_a_later_duplicate_wins() -> None:
    items = [{"id": 1, "v": "a"}, {"id": "1", "v": "b"}, {"id": True}, {"id": ""}, {"x": 1}, 7, {"id": 2.5}]
    keyed, skipped = keyed_items(items, "id")
    assert keyed == {"1": {"id": "1", "v": "b"}, "2.5": {"id": 2.5}}
    assert skipped == 4


def test_a_page_without_metadata_yields_empty_fields() -> None:
    meta = parse_page("<p>just text</p>", "http://example.org/")
    assert (meta.title, meta.description, meta.headings, meta.links) == (None, None, [], [])


def test_links_resolve_against_base_href_and_are_kept_once() -> None:
    html = """<head><base href="https://cdn.example/docs/"></head>
    <a href="a.html#top">  A
    link </a><a href="a.html">again</a><a href="//other.example/b">B</a><a href="#only-fragment">F</a>
    <a href="tel:123">T</a><a>no href</a>"""
    meta = parse_page(html, "http://example.org/page")
    assert [(link.url, link.text) for link in meta.links] == [
        ("https://cdn.example/docs/a.html", "A link"),
        ("https://other.example/b", "B"),
        ("https://cdn.example/docs/", "F"),
    ]


def test_a_malformed_link_or_base_costs_that_link_not_the_page() -> None:
    html = '<base href="http://[bad/"><a href="http://[oops/">broken</a><a href="/ok">fine</a>'
    meta = parse_page(html, "http://example.org/page")
    assert [(link.url, link.text) for link in meta.links] == [("http://example.org/ok", "fine")]

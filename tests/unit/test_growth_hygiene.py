"""Growth hygiene rules on plain strings: each rule passes a clean page and fails each defect."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from readiness.core.check import Status
from readiness.phases.activation.growth_hygiene import (
    check_analytics,
    check_canonical,
    check_noindex,
    check_open_graph,
    check_robots,
    hygiene_checks,
    normalize_url,
    page_facts,
    parse_sitemap,
)

BASE = "https://www.example.test"
NS = "http://www.sitemaps.org/schemas/sitemap/0.9"
MARKER = "script[data-analytics-site]"
OG = ["og:title", "og:description", "og:image", "og:url"]
IMAGE = f"{BASE}/og.png"
SCRIPT = f"{BASE}/assets/analytics.js"
ASSETS = {IMAGE: "200 image/png", SCRIPT: "200 text/javascript"}


def html(path: str = "/pricing", *, canonical: str | None = "self", robots: str | None = None,
         og: dict[str, str] | None = None, analytics: bool = True, extra_head: str = "", body: str = "") -> str:
    """A page with everything right unless told otherwise."""
    url = f"{BASE}{path}"
    props = {"og:title": "Pricing", "og:description": "Plans", "og:image": IMAGE, "og:url": url} if og is None else og
    head = [f'<link rel="canonical" href="{url if canonical == "self" else canonical}">'] if canonical else []
    head += [f'<meta name="robots" content="{robots}">'] if robots else []
    head += [f'<meta property="{k}" content="{v}">' for k, v in props.items()]
    head += ['<script defer src="/assets/analytics.js" data-analytics-site="shop"></script>'] if analytics else []
    return (f'<!doctype html><html><head><title>Pricing</title>{"".join(head)}{extra_head}</head>'
            f"<body><h1>Pricing</h1>{body}</body></html>")


def facts(page: str, url: str = f"{BASE}/pricing", headers: dict[str, str] | None = None):  # noqa: ANN201
    return page_facts(url, page, headers or {}, MARKER)


def sitemap(*locs: str, ns: str = NS, root: str = "urlset") -> bytes:
    urls = "".join(f"<url><loc>{loc}</loc></url>" for loc in locs)
    return f'<?xml version="1.0" encoding="UTF-8"?><{root} xmlns="{ns}">{urls}</{root}>'.encode()


# -- sitemap ------------------------------------------------------------------------------------
def test_valid_sitemap_lists_its_urls() -> None:
    assert parse_sitemap(sitemap(f"{BASE}/", f"{BASE}/pricing"), f"{BASE}/sitemap.xml") == \
        ([f"{BASE}/", f"{BASE}/pricing"], [])


@pytest.mark.parametrize(("body", "problem"), [
    (sitemap(f"{BASE}/", ns="http://example.test/other"),
     "root element is '{http://example.test/other}urlset', expected urlset in the namespace "
     "http://www.sitemaps.org/schemas/sitemap/0.9"),
    (sitemap(root="sitemapindex"), "is a sitemap index, not a urlset: list the pages in a urlset"),
    (sitemap("/pricing"), "<loc> '/pricing' is not an absolute http(s) URL"),
    (sitemap("https://elsewhere.test/pricing"),
     "<loc> https://elsewhere.test/pricing is not on the sitemap's origin https://www.example.test"),
    (sitemap(f"{BASE}/a", f"{BASE}/a"), "<loc> https://www.example.test/a is listed twice"),
    (sitemap(), "the urlset lists no URL"),
    (f'<urlset xmlns="{NS}"><url></url></urlset>'.encode(), "<url> #1 has 0 <loc> elements, expected one non-empty"),
])
def test_bad_sitemaps_are_named(body: bytes, problem: str) -> None:
    assert problem in parse_sitemap(body, f"{BASE}/sitemap.xml")[1]


def test_malformed_and_hostile_xml_is_refused() -> None:
    _, problems = parse_sitemap(b"<urlset><url>", f"{BASE}/sitemap.xml")
    assert problems[0].startswith("not well-formed XML: ")
    bomb = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>'
            b'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">&lol2;</urlset>')
    assert parse_sitemap(bomb, f"{BASE}/sitemap.xml") == \
        ([], ["refused: the XML uses EntitiesForbidden (EntitiesForbidden(name='lol', system_id=None, "
              "public_id=None))"])


# -- robots.txt ---------------------------------------------------------------------------------
ROBOTS = f"User-agent: *\nAllow: /\nDisallow: /api/\n\nSitemap: {BASE}/sitemap.xml\n"


def test_robots_allowing_the_site_and_naming_the_sitemap_passes() -> None:
    result = check_robots(ROBOTS, f"{BASE}/robots.txt", f"{BASE}/sitemap.xml", [f"{BASE}/pricing"], ["*", "Googlebot"])
    assert result.ok and result.evidence.startswith(f"Sitemap: {BASE}/sitemap.xml")


@pytest.mark.parametrize(("text", "problems"), [
    (None, ["https://www.example.test/robots.txt did not answer 200"]),
    ("User-agent: *\nDisallow: /\n",
     ["disallows the whole site to *", "disallows https://www.example.test/pricing to *",
      "disallows the whole site to Googlebot", "disallows https://www.example.test/pricing to Googlebot",
      "does not name the sitemap https://www.example.test/sitemap.xml"]),
    # the longest match wins (as search engines read it), not the first matching line
    (f"User-agent: *\nAllow: /\nDisallow: /pricing\nSitemap: {BASE}/sitemap.xml\n",
     ["disallows https://www.example.test/pricing to *", "disallows https://www.example.test/pricing to Googlebot"]),
    (f"User-agent: Googlebot\nDisallow: /pricing\n\nUser-agent: *\nAllow: /\nSitemap: {BASE}/sitemap.xml\n",
     ["disallows https://www.example.test/pricing to Googlebot"]),
])
def test_robots_defects(text: str | None, problems: list[str]) -> None:
    result = check_robots(text, f"{BASE}/robots.txt", f"{BASE}/sitemap.xml", [f"{BASE}/pricing"], ["*", "Googlebot"])
    assert not result.ok and list(result.problems) == problems


# -- canonical ----------------------------------------------------------------------------------
def test_self_canonical_passes_and_urls_normalize() -> None:
    assert check_canonical(f"{BASE}/pricing", facts(html()), {}, [f"{BASE}/pricing"]).ok
    assert normalize_url("HTTPS://WWW.Example.test:443/pricing#plans") == f"{BASE}/pricing"
    assert normalize_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080/"


@pytest.mark.parametrize(("page", "problem"), [
    (html(canonical=None), "no <link rel=canonical>"),
    (html(canonical="/pricing"), "canonical '/pricing' is not an absolute URL"),
    (html(extra_head=f'<link rel="canonical" href="{BASE}/plans">'),
     "2 canonical links (search engines ignore conflicting ones)"),
    (html(canonical=f"{BASE}/elsewhere"),
     "canonical points at https://www.example.test/elsewhere, which is not an audited page of the sitemap"),
])
def test_canonical_defects(page: str, problem: str) -> None:
    result = check_canonical(f"{BASE}/pricing", facts(page), {}, [f"{BASE}/pricing"])
    assert not result.ok and result.problems == (problem,)


def test_canonical_may_point_at_a_listed_self_canonical_page_but_not_along_a_chain() -> None:
    url, target = f"{BASE}/pricing?ref=ad", f"{BASE}/pricing"
    page = facts(html(), url=url)
    assert check_canonical(url, page, {target: target}, [target]).ok
    chained = check_canonical(url, page, {target: f"{BASE}/plans"}, [target])
    assert chained.problems == ("canonical points at https://www.example.test/pricing, whose own canonical is "
                                "https://www.example.test/plans (chains are not followed)",)


def test_canonical_in_the_body_is_flagged() -> None:
    page = html(canonical=None, body=f'<link rel="canonical" href="{BASE}/pricing">')
    assert check_canonical(f"{BASE}/pricing", facts(page), {}, []).problems == \
        ("canonical link is outside <head> (ignored there)",)


# -- noindex ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("page", "headers", "blocked"), [
    (html(robots="noindex, follow"), {}, ["meta robots: noindex on a page the sitemap lists"]),
    (html(extra_head='<meta name="googlebot" content="none">'), {}, ["meta googlebot: none on a page the sitemap lists"]),
    (html(), {"x-robots-tag": "googlebot: noindex, nofollow"}, ["X-Robots-Tag: noindex on a page the sitemap lists"]),
    (html(robots="index, follow, max-snippet:-1"), {"x-robots-tag": "unavailable_after: 2030-01-01"}, []),
])
def test_noindex(page: str, headers: dict[str, str], blocked: list[str]) -> None:
    result = check_noindex(facts(page, headers=headers))
    assert result.ok is (not blocked) and list(result.problems) == blocked


# -- Open Graph ---------------------------------------------------------------------------------
def test_complete_open_graph_passes() -> None:
    assert check_open_graph(facts(html()), OG, f"{BASE}/pricing", ASSETS).ok


@pytest.mark.parametrize(("og", "assets", "problem"), [
    ({"og:title": "Pricing", "og:description": "Plans", "og:url": f"{BASE}/pricing"}, ASSETS,
     "og:image missing or empty"),
    ({"og:title": "Pricing", "og:description": "", "og:image": IMAGE, "og:url": f"{BASE}/pricing"}, ASSETS,
     "og:description missing or empty"),
    ({"og:title": "P", "og:description": "D", "og:image": "/og.png", "og:url": f"{BASE}/pricing"}, ASSETS,
     "og:image '/og.png' is not an absolute URL"),
    ({"og:title": "P", "og:description": "D", "og:image": IMAGE, "og:url": f"{BASE}/plans"}, ASSETS,
     "og:url https://www.example.test/plans differs from the canonical https://www.example.test/pricing"),
    ({"og:title": "P", "og:description": "D", "og:image": IMAGE, "og:url": f"{BASE}/pricing"},
     {IMAGE: "404 text/plain"}, "og:image https://www.example.test/og.png answered 404 text/plain"),
])
def test_open_graph_defects(og: dict[str, str], assets: dict[str, str], problem: str) -> None:
    result = check_open_graph(facts(html(og=og)), OG, f"{BASE}/pricing", assets)
    assert not result.ok and result.problems == (problem,)


# -- analytics ----------------------------------------------------------------------------------
def test_analytics_tag() -> None:
    ok = check_analytics(facts(html()), MARKER, ASSETS)
    assert ok.ok and 'data-analytics-site="shop"' in ok.evidence
    assert check_analytics(facts(html(analytics=False)), MARKER, ASSETS).problems == \
        ("no element matches the analytics marker 'script[data-analytics-site]'",)
    assert check_analytics(facts(html()), MARKER, {SCRIPT: "404 text/plain"}).problems == \
        ("analytics script https://www.example.test/assets/analytics.js answered 404 text/plain",)


# -- checks from the evidence -------------------------------------------------------------------
def _evidence(pages: list[dict], sitemap_problems: list[str] | None = None) -> dict:
    return {"app": "A7", "sitemap": {"urls": [p["url"] for p in pages], "problems": sitemap_problems or [],
                                     "not_audited": 0},
            "robots": {"ok": True, "problems": [], "evidence": "Sitemap: …"}, "pages": pages}


def _page(url: str, **bad: str) -> dict:
    rules = {r: {"ok": r not in bad, "evidence": "…", "problems": [bad[r]] if r in bad else []}
             for r in ("canonical", "noindex", "open_graph", "analytics")}
    return {"url": url, "listed": True, "answer": "200 text/html", "rules": rules}


def test_page_defects_fail_their_check_only() -> None:
    phase = SimpleNamespace(name="07_activation_growth")
    ev = _evidence([_page(f"{BASE}/"), _page(f"{BASE}/pricing", canonical="no <link rel=canonical>")])
    checks = {c.id: c for c in hygiene_checks(phase, ev)}
    assert checks["growth.canonical"].status is Status.FAIL and checks["growth.canonical"].observed == 1
    assert "https://www.example.test/pricing: no <link rel=canonical>" in checks["growth.canonical"].detail
    assert {k: c.status for k, c in checks.items() if k != "growth.canonical"} == dict.fromkeys(
        ["growth.sitemap", "growth.sitemap_urls", "growth.robots", "growth.noindex", "growth.open_graph",
         "growth.analytics"], Status.PASS)


def test_no_page_judged_is_inconclusive_and_a_bad_sitemap_fails() -> None:
    phase = SimpleNamespace(name="07_activation_growth")
    down = {"url": f"{BASE}/", "listed": True, "answer": "503 application/json"}
    checks = {c.id: c for c in hygiene_checks(phase, _evidence([down], ["the urlset lists no URL"]))}
    assert checks["growth.sitemap"].status is Status.FAIL
    assert checks["growth.sitemap_urls"].status is Status.FAIL
    assert checks["growth.canonical"].status is Status.INCONCLUSIVE
    assert "not judged (no page): https://www.example.test/ → 503 application/json" in checks["growth.canonical"].detail

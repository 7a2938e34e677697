"""Phase 07, growth hygiene (docs/phases.md#07-activation-and-growth): what search engines, link previews and analytics see.

The marketing app's sitemap is the list of pages the business wants found, so it is the
audit's list of pages too. Notebook cells call :func:`audit_pages` (fetch, judge, record
``growth.*``, write ``evidence/growth_hygiene.json``) and :func:`write_checklist`
(``reports/growth_hygiene_checklist.md``: one PASS/FAIL table per page, with evidence).

Rules, each a pure function of what was fetched (unit-tested on plain strings):

- **sitemap** (:func:`parse_sitemap`, defusedxml — a sitemap is outside input, entity
  tricks are refused): a ``urlset`` in the sitemaps.org 0.9 namespace, every ``<url>``
  with one absolute ``<loc>`` on the sitemap's own origin, no duplicates; every listed
  URL answers 200;
- **robots** (:func:`check_robots`, Protego — the longest-match semantics search engines
  use, which :mod:`urllib.robotparser` does not implement): ``robots.txt`` answers, allows
  every audited page and the site root to each of ``growth.crawlers``, names the sitemap;
- **canonical** (:func:`check_canonical`): exactly one ``<link rel=canonical>`` in the
  head, absolute, pointing at the page itself — or at a page the audit also fetched that
  is listed and canonical to itself (one hop, no chains);
- **noindex** (:func:`check_noindex`): no ``noindex``/``none`` in ``<meta name=robots>``
  (or ``googlebot``) or the ``X-Robots-Tag`` header of a page that should be indexed;
- **open_graph** (:func:`check_open_graph`): every ``growth.open_graph`` property with
  content; ``og:url`` and ``og:image`` absolute; ``og:url`` = the canonical URL;
  ``og:image`` answers 200 with an ``image/*`` type;
- **analytics** (:func:`check_analytics`): an element matches ``growth.analytics_marker`` (a CSS
  selector); when it loads a script, that script answers 200.

Each page's security-header grade (:mod:`readiness.phasekit.observatory`) is shown for the reader; its
verdict is ``security.headers.<APP>`` (``10_security_ops``): one finding, counted once.
Every request is a GET through the guarded client.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import pandas as pd
from bs4 import BeautifulSoup
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring
from IPython.display import Markdown
from protego import Protego

from readiness.core import aio
from readiness.core.check import Check
from readiness.core.verdict import value_check
from readiness.phasekit.context import Phase, part
from readiness.phasekit.observatory import grade
from readiness.probe.client import GuardedClient, PolicyRefused
from readiness.report.markdown import checks_table, header, md_table

EVIDENCE = "evidence/growth_hygiene.json"
CHECKLIST = "reports/growth_hygiene_checklist.md"
SITEMAP_NS = "http://www.sitemaps.org/schemas/sitemap/0.9"
PAGE_RULES = ("canonical", "noindex", "open_graph", "analytics")
MAX_SITEMAP_URLS = 50_000  # the protocol's limit per file
FETCH_CONCURRENCY = 4
INDEX_BLOCKERS = ("noindex", "none")
ROBOTS_METAS = ("robots", "googlebot")
_ARG_DIRECTIVES = ("unavailable_after", "max-snippet", "max-image-preview", "max-video-preview")


@dataclasses.dataclass(frozen=True)
class RuleResult:
    """One rule on one page (or site-wide): passed or not, what was seen, and what is wrong."""

    ok: bool
    evidence: str
    problems: tuple[str, ...] = ()


def _result(problems: Sequence[str], evidence: str) -> RuleResult:
    return RuleResult(not problems, evidence, tuple(problems))


def is_absolute(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def normalize_url(url: str) -> str:
    """Scheme and host in lower case, default port and fragment dropped, empty path as ``/``."""
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    port = parts.port
    if port and (parts.scheme.lower(), port) not in (("http", 80), ("https", 443)):
        host = f"{host}:{port}"
    return urlunsplit((parts.scheme.lower(), host, parts.path or "/", parts.query, ""))


# -- sitemap and robots.txt ---------------------------------------------------------------------
def parse_sitemap(body: bytes, sitemap_url: str) -> tuple[list[str], list[str]]:
    """The ``<loc>`` URLs of a sitemap and the problems found in it (empty: valid)."""
    try:
        root = fromstring(body)
    except ParseError as exc:
        return [], [f"not well-formed XML: {exc}"]
    except DefusedXmlException as exc:
        return [], [f"refused: the XML uses {type(exc).__name__} ({exc})"]
    if root.tag == f"{{{SITEMAP_NS}}}sitemapindex":
        return [], ["is a sitemap index, not a urlset: list the pages in a urlset"]
    if root.tag != f"{{{SITEMAP_NS}}}urlset":
        return [], [f"root element is {root.tag!r}, expected urlset in the namespace {SITEMAP_NS}"]
    origin = urlsplit(normalize_url(sitemap_url))[:2]
    urls: list[str] = []
    problems: list[str] = []
    for i, entry in enumerate(root.findall(f"{{{SITEMAP_NS}}}url"), 1):
        locs = [(loc.text or "").strip() for loc in entry.findall(f"{{{SITEMAP_NS}}}loc")]
        if len(locs) != 1 or not locs[0]:
            problems.append(f"<url> #{i} has {len(locs)} <loc> elements, expected one non-empty")
            continue
        loc = locs[0]
        if not is_absolute(loc):
            problems.append(f"<loc> {loc!r} is not an absolute http(s) URL")
        elif urlsplit(normalize_url(loc))[:2] != origin:
            problems.append(f"<loc> {loc} is not on the sitemap's origin {origin[0]}://{origin[1]}")
        elif loc in urls:
            problems.append(f"<loc> {loc} is listed twice")
        else:
            urls.append(loc)
    if stray := sorted({child.tag for child in root if child.tag != f"{{{SITEMAP_NS}}}url"}):
        problems.append(f"unexpected elements in urlset: {stray}")
    if not urls and not problems:
        problems.append("the urlset lists no URL")
    if len(urls) > MAX_SITEMAP_URLS:
        problems.append(f"{len(urls)} URLs, more than the protocol's {MAX_SITEMAP_URLS} per file")
    return urls, problems


def check_robots(text: str | None, robots_url: str, sitemap_url: str, urls: Sequence[str],
                 crawlers: Sequence[str]) -> RuleResult:
    """robots.txt allows the site and every audited page to each crawler and names the sitemap."""
    if text is None:
        return _result([f"{robots_url} did not answer 200"], "no robots.txt")
    rules = Protego.parse(text)
    root = urlunsplit(urlsplit(robots_url)[:2] + ("/", "", ""))
    problems = [f"disallows {'the whole site' if url == root else url} to {agent}"
                for agent in crawlers for url in dict.fromkeys([root, *urls]) if not rules.can_fetch(url, agent)]
    named = [normalize_url(s) for s in rules.sitemaps]
    if normalize_url(sitemap_url) not in named:
        problems.append(f"does not name the sitemap {sitemap_url}" + (f" (names {named})" if named else ""))
    return _result(problems, f"Sitemap: {', '.join(named) or 'none'}; {len(urls)} pages checked for "
                             f"{', '.join(crawlers)}")


# -- one page -----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PageFacts:
    """What a page declares: canonical links, indexing directives, Open Graph, analytics tags."""

    canonicals: tuple[str, ...]
    canonical_outside_head: bool
    directives: tuple[str, ...]  # "meta robots: noindex", "X-Robots-Tag: noindex"…
    open_graph: Mapping[str, str]
    analytics: tuple[Mapping[str, str | None], ...]  # {"tag": …, "src": absolute URL or None}


def _directives(value: str) -> list[str]:
    """Indexing directives of a robots meta or X-Robots-Tag value (``googlebot: noindex`` → noindex)."""
    out = []
    for token in value.lower().split(","):
        name, _, arg = token.strip().partition(":")
        out.append(arg.strip() if arg and name.strip() not in _ARG_DIRECTIVES else token.strip())
    return [d for d in out if d]


def page_facts(url: str, html: str, headers: Mapping[str, str], analytics_marker: str) -> PageFacts:
    """Parse one page (BeautifulSoup, the standard library's HTML parser) into its declarations."""
    soup = BeautifulSoup(html, "html.parser")
    links = [t for t in soup.find_all("link", href=True)
             if "canonical" in [r.lower() for r in (t.get("rel") or [])]]
    directives = [f"meta {str(t.get('name')).lower()}: {d}" for t in soup.find_all("meta", attrs={"name": True})
                  if str(t.get("name")).lower() in ROBOTS_METAS for d in _directives(str(t.get("content", "")))]
    directives += [f"X-Robots-Tag: {d}" for d in _directives(headers.get("x-robots-tag", ""))]
    og: dict[str, str] = {}
    for t in soup.find_all("meta"):
        prop = str(t.get("property") or t.get("name") or "")
        if prop.startswith("og:") and prop not in og:
            og[prop] = str(t.get("content") or "").strip()
    tags = [{"tag": str(t)[:200], "src": urljoin(url, str(t["src"])) if t.get("src") else None}
            for t in soup.select(analytics_marker)]
    return PageFacts(canonicals=tuple(str(t["href"]).strip() for t in links),
                     canonical_outside_head=any(t.find_parent("head") is None and soup.head is not None
                                                for t in links),
                     directives=tuple(directives), open_graph=og, analytics=tuple(tags))


def check_canonical(url: str, facts: PageFacts, canonical_of: Mapping[str, str | None],
                    listed: Collection[str]) -> RuleResult:
    """One absolute canonical in the head, at the page itself or at a listed self-canonical page."""
    if not facts.canonicals:
        return _result(["no <link rel=canonical>"], "none")
    if len(facts.canonicals) > 1:
        return _result([f"{len(facts.canonicals)} canonical links (search engines ignore conflicting ones)"],
                       ", ".join(facts.canonicals))
    href = facts.canonicals[0]
    problems = []
    if facts.canonical_outside_head:
        problems.append("canonical link is outside <head> (ignored there)")
    if not is_absolute(href):
        return _result([*problems, f"canonical {href!r} is not an absolute URL"], href)
    target, own = normalize_url(href), normalize_url(url)
    if target != own:
        if target not in {normalize_url(u) for u in listed}:
            problems.append(f"canonical points at {href}, which is not an audited page of the sitemap")
        elif canonical_of.get(target) != target:
            problems.append(f"canonical points at {href}, whose own canonical is {canonical_of.get(target)} "
                            "(chains are not followed)")
    return _result(problems, href if target == own else f"{href} (a listed page canonical to itself)")


def check_noindex(facts: PageFacts) -> RuleResult:
    """An indexable page carries no noindex (meta robots, meta googlebot, X-Robots-Tag)."""
    blocking = [d for d in facts.directives if d.rsplit(": ", 1)[-1] in INDEX_BLOCKERS]
    return _result([f"{d} on a page the sitemap lists" for d in blocking],
                   "; ".join(facts.directives) or "no robots directives")


def check_open_graph(facts: PageFacts, required: Sequence[str], canonical: str | None,
                     assets: Mapping[str, str]) -> RuleResult:
    """Required Open Graph properties present; og:url = canonical; og:image absolute and loading."""
    og = facts.open_graph
    problems = [f"{prop} missing or empty" for prop in required if not og.get(prop)]
    for prop in ("og:url", "og:image"):
        if og.get(prop) and not is_absolute(og[prop]):
            problems.append(f"{prop} {og[prop]!r} is not an absolute URL")
    if og.get("og:url") and canonical and is_absolute(canonical) \
            and normalize_url(og["og:url"]) != normalize_url(canonical):
        problems.append(f"og:url {og['og:url']} differs from the canonical {canonical}")
    image = og.get("og:image")
    if image and is_absolute(image) and image in assets and not assets[image].startswith("200 image/"):
        problems.append(f"og:image {image} answered {assets[image]}")
    shown = "; ".join(f"{k}={v[:80]}" for k, v in og.items() if k in required or k == "og:type")
    return _result(problems, shown or "no Open Graph tags")


def check_analytics(facts: PageFacts, marker: str, assets: Mapping[str, str]) -> RuleResult:
    """The analytics tag is on the page and, when it loads a script, the script answers 200."""
    if not facts.analytics:
        return _result([f"no element matches the analytics marker {marker!r}"], "none")
    problems = [f"analytics script {t['src']} answered {assets[t['src']]}" for t in facts.analytics
                if t["src"] and t["src"] in assets and not assets[t["src"]].startswith("200 ")]
    return _result(problems, facts.analytics[0]["tag"])


# -- the phase ----------------------------------------------------------------------------------
async def _fetch(client: GuardedClient, url: str, app: str, *, body: bool) -> dict[str, Any]:
    """GET one URL; a refusal or failure is a recorded answer ("refused: …"), never a crash."""
    try:
        s = await client.get(url, app=app, route=urlsplit(url).path or "/", keep_body=body)
    except (PolicyRefused, ValueError) as exc:
        return {"url": url, "status": None, "answer": f"refused: {exc}", "headers": {}, "body": None}
    kind = s.headers.get("content-type", "").split(";")[0].strip()
    answer = f"{s.status} {kind}".strip() if s.status is not None else f"{s.error}: {s.error_detail}"
    return {"url": url, "status": s.status, "answer": answer, "headers": dict(s.headers),
            "body": s.body if body and s.status == 200 and s.error is None else None}


async def _collect(phase: Phase) -> dict[str, Any]:
    g, app = phase.params.growth, phase.params.app(phase.params.growth.app)
    gate = asyncio.Semaphore(FETCH_CONCURRENCY)
    async with phase.client() as client:
        async def get(url: str, body: bool) -> dict[str, Any]:
            async with gate:
                return await _fetch(client, url, app.id, body=body)

        sitemap_url, robots_url = app.url(g.sitemap_path), app.url(g.robots_path)
        sitemap, robots = await asyncio.gather(get(sitemap_url, True), get(robots_url, True))
        urls, problems = parse_sitemap(sitemap["body"], sitemap_url) if sitemap["body"] is not None \
            else ([], [f"{sitemap_url} answered {sitemap['answer']}"])
        audited = list(dict.fromkeys([*urls[:g.max_pages], *(app.url(p) for p in g.extra_pages)]))
        pages = await asyncio.gather(*(get(u, True) for u in audited))
        facts = {p["url"]: page_facts(p["url"], p["body"].decode("utf-8", "replace"), p["headers"],
                                      g.analytics_marker) for p in pages if p["body"] is not None}
        assets = {t["src"] for f in facts.values() for t in f.analytics if t["src"]}
        if g.fetch_og_image:
            assets |= {f.open_graph["og:image"] for f in facts.values() if is_absolute(f.open_graph.get("og:image", ""))}
        fetched = await asyncio.gather(*(get(u, False) for u in sorted(assets)))
    return {"app": app.id, "https": app.base_url.lower().startswith("https://"), "sitemap_url": sitemap_url,
            "sitemap": sitemap, "robots_url": robots_url, "robots": robots, "urls": urls, "problems": problems,
            "truncated": max(0, len(urls) - g.max_pages), "pages": pages, "facts": facts,
            "assets": {a["url"]: a["answer"] for a in fetched}}


def _judge(phase: Phase, got: dict[str, Any]) -> dict[str, Any]:
    """Every rule on every fetched page, site-wide rules, and the evidence document."""
    g, facts, assets = phase.params.growth, got["facts"], got["assets"]
    canonical_of = {normalize_url(u): normalize_url(f.canonicals[0]) if len(f.canonicals) == 1
                    and is_absolute(f.canonicals[0]) else None for u, f in facts.items()}
    listed = [u for u in got["urls"] if u in facts]
    pages = []
    for p in got["pages"]:
        entry: dict[str, Any] = {"url": p["url"], "listed": p["url"] in got["urls"], "answer": p["answer"]}
        f = facts.get(p["url"])
        if f is not None:
            canonical = f.canonicals[0] if len(f.canonicals) == 1 else None
            entry["rules"] = {rule: dataclasses.asdict(result) for rule, result in (
                ("canonical", check_canonical(p["url"], f, canonical_of, listed)), ("noindex", check_noindex(f)),
                ("open_graph", check_open_graph(f, g.open_graph, canonical, assets)),
                ("analytics", check_analytics(f, g.analytics_marker, assets)))}
            cookies = p["headers"].get("set-cookie", "")
            result = grade(p["headers"], cookies.split("\n") if cookies else [], got["https"])
            entry["security_headers"] = {"grade": result.grade, "score": result.score,
                                         "failing": [t.test for t in result.failing]}
        pages.append(entry)
    robots_text = got["robots"]["body"].decode("utf-8", "replace") if got["robots"]["body"] is not None else None
    robots = check_robots(robots_text, got["robots_url"], got["sitemap_url"], [p["url"] for p in got["pages"]],
                          g.crawlers)
    return {"app": got["app"], "sitemap": {"url": got["sitemap_url"], "answer": got["sitemap"]["answer"],
                                           "urls": got["urls"], "problems": got["problems"],
                                           "not_audited": got["truncated"]},
            "robots": {"url": got["robots_url"], "answer": got["robots"]["answer"], **dataclasses.asdict(robots),
                       "text": (robots_text or "")[:4000]},
            "analytics_marker": g.analytics_marker, "open_graph": g.open_graph, "assets": assets, "pages": pages}


def hygiene_checks(phase: Phase, ev: dict[str, Any]) -> list[Check]:
    """``growth.*`` from the evidence: site-wide rules, then each page rule over all judged pages."""
    common: dict[str, Any] = {"phase": phase.name, "app": ev["app"], "evidence": (EVIDENCE,)}
    sm, judged = ev["sitemap"], [p for p in ev["pages"] if "rules" in p]
    listed = [p for p in ev["pages"] if p["listed"]]
    down = [f"{p['url']} → {p['answer']}" for p in listed if not p["answer"].startswith("200 ")]
    checks = [
        value_check(id="growth.sitemap", title="the sitemap is a valid urlset of absolute URLs on its own origin",
                    observed=len(sm["problems"]), expected=0, unit="findings", n=max(1, len(sm["urls"])),
                    tags=("release_engineering",), severity="P2", detail="; ".join(sm["problems"]) or
                    f"{len(sm['urls'])} URLs" + (f", {sm['not_audited']} beyond growth.max_pages not audited"
                                                 if sm["not_audited"] else ""), **common),
        value_check(id="growth.sitemap_urls", title="every URL of the sitemap answers 200",
                    observed=len(down) if listed else None, expected=0, unit="pages", n=len(listed),
                    tags=("release_engineering",), severity="P2",
                    detail="; ".join(down) or ("" if listed else "the sitemap listed no URL to fetch"), **common),
        value_check(id="growth.robots", title="robots.txt allows the site and its pages and names the sitemap",
                    observed=len(ev["robots"]["problems"]), expected=0, unit="findings", n=1,
                    tags=("release_engineering",), severity="P1",
                    detail="; ".join(ev["robots"]["problems"]) or ev["robots"]["evidence"], **common)]
    titles = {"canonical": ("every page has one absolute, self-consistent canonical link", "P2",
                            ("release_engineering",)),
              "noindex": ("no page the sitemap lists (or growth.extra_pages) carries noindex", "P1",
                          ("release_engineering",)),
              "open_graph": ("every page has Open Graph title, description, image and url (= canonical)", "P3",
                             ("release_engineering",)),
              "analytics": ("every page carries the analytics tag, and its script loads", "P2", ("observability",))}
    unjudged = [f"{p['url']} → {p['answer']}" for p in ev["pages"] if "rules" not in p]
    for rule, (title, severity, tags) in titles.items():
        bad = [f"{p['url']}: {', '.join(p['rules'][rule]['problems'])}" for p in judged if not p["rules"][rule]["ok"]]
        notes = [*bad, *(["not judged (no page): " + "; ".join(unjudged)] if unjudged else [])]
        checks.append(value_check(id=f"growth.{rule}", title=title, observed=len(bad) if judged else None,
                                  expected=0, unit="pages", n=len(judged), tags=tags, severity=severity,
                                  detail="; ".join(notes) or f"all {len(judged)} pages", **common))
    return checks


@part("growth")
def audit_pages(phase: Phase) -> pd.DataFrame:
    """Fetch the sitemap, robots.txt and every listed page; record ``growth.*``; one row per page."""
    ev = _judge(phase, aio.run(_collect(phase)))
    phase.run.write_json(EVIDENCE, ev)
    phase.record(hygiene_checks(phase, ev))
    rows = [{"page": urlsplit(p["url"]).path or "/", "answer": p["answer"],
             **{r: ("PASS" if p["rules"][r]["ok"] else "FAIL") if "rules" in p else "—" for r in PAGE_RULES}}
            for p in ev["pages"]]
    return pd.DataFrame(rows, columns=["page", "answer", *PAGE_RULES]).set_index("page")


@part("growth")
def write_checklist(phase: Phase) -> Markdown:
    """``reports/growth_hygiene_checklist.md``: the verdicts, then one checklist table per page."""
    ev = json.loads(phase.run.path(EVIDENCE).read_text(encoding="utf-8"))
    checks = [c for c in phase.run.read_checks(phase.name) if c.id.startswith("growth.")]
    p = phase.params
    parts = [header("Growth hygiene checklist", ecosystem=p.ecosystem, environment=p.environment,
                    run_name=phase.run.root.name, profile_note=p.profile_note),
             f"Pages of `{ev['sitemap']['url']}`"
             + (f" plus {', '.join(f'`{x}`' for x in p.growth.extra_pages)}" if p.growth.extra_pages else "")
             + f"; analytics marker `{ev['analytics_marker']}`. Evidence: `{EVIDENCE}`.\n",
             "## Verdicts\n", checks_table(checks), "\n## Site-wide\n",
             md_table(["item", "result", "evidence"], [
                 ("sitemap", "PASS" if not ev["sitemap"]["problems"] else "FAIL",
                  "; ".join(ev["sitemap"]["problems"]) or f"{len(ev['sitemap']['urls'])} URLs ({ev['sitemap']['answer']})"),
                 ("robots.txt", "PASS" if ev["robots"]["ok"] else "FAIL",
                  "; ".join(ev["robots"]["problems"]) or ev["robots"]["evidence"])])]
    for page in ev["pages"]:
        parts.append(f"\n## {page['url']}\n")
        if "rules" not in page:
            parts.append(f"Not judged: the page answered {page['answer']}.\n")
            continue
        rows = [(rule, "PASS" if r["ok"] else "FAIL", "; ".join(r["problems"]) or r["evidence"])
                for rule, r in page["rules"].items()]
        sec = page["security_headers"]
        rows.append(("security headers (info)", f"grade {sec['grade']} ({sec['score']})",
                     f"judged in 10_security_ops as security.headers.{ev['app']}; failing: "
                     f"{', '.join(sec['failing']) or 'none'}"))
        parts.append(md_table(["rule", "result", "evidence"], rows))
    text = "\n".join(parts) + "\n"
    phase.run.write_text(CHECKLIST, text)
    return Markdown(text)

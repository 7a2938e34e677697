"""A7 — marketing: public pages, the XML sitemap that lists them, and lead capture.

Pages live in SQLite (slug, title, description, last modification, whether the sitemap
should list them). ``/sitemap.xml`` follows the sitemaps.org 0.9 protocol: absolute
``<loc>`` URLs on this app's own origin, ``<lastmod>`` as a W3C date. Each page is
served at ``/<slug>``; the home page at ``/`` links the pages of the sitemap.

Lead capture (``/api/leads``, the mailer and its delivery workers) is described in
:mod:`sandbox.apps.a7_leads`; its routes come before the ``/{slug}`` pages.

``/get-started`` is the B2C landing page: its call to action starts sign-up at the
student app (A2 ``/signup/start``), which sends the browser on to A1's authorize
endpoint with the sandbox client id and A2's callback. The landing link's ``utm_*`` and
``ref`` parameters are carried over, so the learner's attribution survives the sign-in.

Every public page carries what a crawler, a link preview and the growth team's
analytics need (:func:`head`):

- ``<link rel="canonical">`` with the page's absolute URL on this app's origin, so a link
  with tracking parameters (``/get-started?utm_source=…``) counts as the page;
- ``<meta name="robots" content="noindex">`` only on pages kept out of the sitemap (the
  confirmation page after sign-up should not be found by search);
- Open Graph ``og:title``, ``og:description``, ``og:type``, ``og:url`` (= the canonical
  URL) and ``og:image`` (absolute URL of :data:`OG_IMAGE_PATH`, a 1200×630 PNG — the size
  link previews expect — drawn once in memory);
- the analytics tag ``<script defer src="/assets/analytics.js" data-analytics-site="…">``.
  The script sends one page view per load to ``POST /api/analytics/pageviews`` with the
  contract headers (428 without them); the collector validates the beacon and answers
  202. The page view is counted from that request's own telemetry (the shared
  middleware reports it to A8 under the beacon's trace id), so no second copy is stored.

``/robots.txt`` allows the site, keeps crawlers out of ``/api/`` and ``/admin/`` and names
the sitemap.
"""

from __future__ import annotations

import functools
import html
import struct
import zlib
from urllib.parse import urlencode
from xml.sax.saxutils import escape

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.apps.a7_cta import cta_admin_routes, cta_routes, setup_cta
from sandbox.apps.a7_lead_store import SCHEMA as LEAD_SCHEMA
from sandbox.apps.a7_leads import lead_admin_routes, lead_routes, setup_leads
from sandbox.common.context import AppContext, AppDefinition, ctx_of
from sandbox.common.synthetic_tables import owned_by, tagged_json
from sandbox.common.web import contract_json, json_error

SITEMAP_NS = "http://www.sitemaps.org/schemas/sitemap/0.9"
LANDING_PATH = "/get-started"
ATTRIBUTION_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term", "ref")
MAX_ATTRIBUTION = 100
SITE_ID = "a7-marketing"
ANALYTICS_PATH = "/assets/analytics.js"
PAGEVIEWS_ROUTE = "/api/analytics/pageviews"
OG_IMAGE_PATH = "/assets/og-image.png"
OG_IMAGE_SIZE = (1200, 630)
HOME = ("Learn faster with an AI tutor", "Courses, an AI tutor and credit packs for learners and teams.")
MAX_FIELD = 512

SCHEMA = """
CREATE TABLE IF NOT EXISTS pages (
    slug TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    updated_on TEXT NOT NULL,  -- YYYY-MM-DD
    in_sitemap INTEGER NOT NULL DEFAULT 1
);
"""

PAGES = [
    ("pricing", "Pricing", "Plans and credit packs for learners and teams.", "2024-05-02", 1),
    ("courses", "Courses", "Browse the course catalogue.", "2024-05-02", 1),
    ("for-providers", "For providers", "Publish your courses to our learners.", "2024-04-18", 1),
    ("about", "About us", "Who we are and how we teach.", "2024-03-30", 1),
    ("thank-you", "Thank you", "Confirmation after signing up.", "2024-03-30", 0),
]


def seed(ctx: AppContext) -> None:
    ctx.db.seed("pages", ("slug", "title", "description", "updated_on", "in_sitemap"), PAGES)


def sitemap(request: Request) -> Response:
    ctx = ctx_of(request)
    base = ctx.config.base_url
    rows = ctx.db.query("SELECT slug, updated_on FROM pages WHERE in_sitemap = 1 ORDER BY slug")
    latest = max((r["updated_on"] for r in rows), default=None)
    entries = [(f"{base}/", latest)] + [(f"{base}/{r['slug']}", r["updated_on"]) for r in rows]
    parts = ['<?xml version="1.0" encoding="UTF-8"?>', f'<urlset xmlns="{SITEMAP_NS}">']
    for loc, lastmod in entries:
        modified = f"<lastmod>{escape(lastmod)}</lastmod>" if lastmod else ""
        parts.append(f"  <url><loc>{escape(loc)}</loc>{modified}</url>")
    parts.append("</urlset>")
    return Response("\n".join(parts) + "\n", media_type="application/xml")


def head(base_url: str, path: str, title: str, description: str, *, indexable: bool = True) -> str:
    """The ``<head>`` of the public page at ``path``: title, description, canonical, Open Graph, analytics."""
    url = html.escape(f"{base_url}{path}")
    t, d = html.escape(title), html.escape(description)
    robots = "" if indexable else '<meta name="robots" content="noindex">'
    return (f'<head><meta charset="utf-8"><title>{t}</title><meta name="description" content="{d}">'
            f'<link rel="canonical" href="{url}">{robots}'
            f'<meta property="og:type" content="website"><meta property="og:title" content="{t}">'
            f'<meta property="og:description" content="{d}"><meta property="og:url" content="{url}">'
            f'<meta property="og:image" content="{html.escape(base_url + OG_IMAGE_PATH)}">'
            f'<meta property="og:image:width" content="{OG_IMAGE_SIZE[0]}">'
            f'<meta property="og:image:height" content="{OG_IMAGE_SIZE[1]}">'
            f'<script defer src="{ANALYTICS_PATH}" data-analytics-site="{SITE_ID}"></script></head>')


def home(request: Request) -> Response:
    """The marketing home page (listed in the sitemap as ``/``), linking the sitemap's pages."""
    ctx = ctx_of(request)
    rows = ctx.db.query("SELECT slug, title FROM pages WHERE in_sitemap = 1 ORDER BY slug")
    links = "".join(f'<li><a href="/{html.escape(r["slug"])}">{html.escape(r["title"])}</a></li>' for r in rows)
    return HTMLResponse(
        f'<!doctype html><html lang="en">{head(ctx.config.base_url, "/", *HOME)}<body><h1>{html.escape(HOME[0])}</h1>'
        f'<p>{html.escape(HOME[1])}</p><p><a href="{LANDING_PATH}">Get started</a></p><ul>{links}</ul></body></html>'
    )


def page(request: Request) -> Response:
    ctx = ctx_of(request)
    slug = request.path_params["slug"]
    rows = ctx.db.query("SELECT title, description, in_sitemap FROM pages WHERE slug = ?", (slug,))
    if not rows:
        return PlainTextResponse("Not Found", status_code=404)
    title, description = rows[0]["title"], rows[0]["description"]
    return HTMLResponse(
        f'<!doctype html><html lang="en">{head(ctx.config.base_url, f"/{slug}", title, description, indexable=bool(rows[0]["in_sitemap"]))}'
        f"<body><h1>{html.escape(title)}</h1><p>{html.escape(description)}</p></body></html>"
    )


def robots_txt(request: Request) -> Response:
    base = ctx_of(request).config.base_url
    return PlainTextResponse(f"User-agent: *\nAllow: /\nDisallow: /api/\nDisallow: /admin/\n\n"
                             f"Sitemap: {base}/sitemap.xml\n")


@functools.cache
def og_image_png() -> bytes:
    """A 1200×630 PNG (brand colour with a lighter band), encoded by hand: no imaging library needed."""
    width, height = OG_IMAGE_SIZE
    dark, light = bytes((21, 101, 192)) * width, bytes((187, 222, 251)) * width
    rows = b"".join(b"\x00" + (light if height * 2 // 5 <= y < height * 3 // 5 else dark) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9))
            + chunk(b"IEND", b""))


def og_image(request: Request) -> Response:
    return Response(og_image_png(), media_type="image/png", headers={"Cache-Control": "public, max-age=86400"})


# The analytics tag's script: one page-view beacon per load, with the contract headers.
ANALYTICS_SCRIPT = """
(function () {
  var tag = document.currentScript;
  function hex(n) {
    var bytes = new Uint8Array(n);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, function (b) { return b.toString(16).padStart(2, "0"); }).join("");
  }
  var body = JSON.stringify({site: tag ? tag.dataset.analyticsSite : null, page: location.pathname,
                             referrer: document.referrer ? new URL(document.referrer).origin : null});
  fetch("{collector}", {method: "POST", keepalive: true, body: body,
    headers: {"Content-Type": "application/json", "X-Idempotency-Key": hex(16), "X-Trace-Id": hex(16)}})
    .catch(function () {});
})();
""".replace("{collector}", PAGEVIEWS_ROUTE)


def analytics_js(request: Request) -> Response:
    return Response(ANALYTICS_SCRIPT, media_type="text/javascript", headers={"Cache-Control": "public, max-age=3600"})


async def pageview(request: Request) -> Response:
    """Accept one page-view beacon (counted from this request's own telemetry, see the module docstring)."""
    body, refused = await contract_json(request)
    if refused is not None:
        return refused
    if not isinstance(body, dict):
        return json_error(422, "body must be a JSON object")
    unexpected = sorted(set(body) - {"site", "page", "referrer"})
    if unexpected:
        return json_error(422, f"unexpected field: {unexpected[0]}")
    path = body.get("page")
    if not isinstance(path, str) or not path.startswith("/") or len(path) > MAX_FIELD:
        return json_error(422, f"page must be a path starting with '/' of at most {MAX_FIELD} characters")
    for field in ("site", "referrer"):
        value = body.get(field)
        if value is not None and (not isinstance(value, str) or len(value) > MAX_FIELD):
            return json_error(422, f"{field} must be a string of at most {MAX_FIELD} characters or null")
    return JSONResponse({"accepted": True}, status_code=202)


# The page reports its call to action the way a real marketing page does: it asks for the
# bandit's configuration (bandit_config), beacons the impression (cta_impression) and, on
# a click, the click (cta_emitted) before following the link. Beacons carry the contract
# headers; a failed beacon never blocks the visitor.
CTA_SCRIPT = """
(function () {
  var link = document.getElementById("signup-cta");
  if (!link) { return; }
  var page = location.pathname;
  function beacon(path, body) {
    return fetch(path, {method: "POST", keepalive: true, headers: {"Content-Type": "application/json",
      "X-Idempotency-Key": crypto.randomUUID(), "X-Trace-Id": crypto.randomUUID().replace(/-/g, "")},
      body: JSON.stringify(body)}).catch(function () {});
  }
  var arm = "signup_hero";
  fetch("/api/cta/config").then(function (r) { return r.json(); }).then(function (config) {
    if (config.arm_weights && !(arm in config.arm_weights)) { arm = Object.keys(config.arm_weights)[0]; }
  }).catch(function () {}).finally(function () { beacon("/api/cta/impressions", {arm_id: arm, page: page}); });
  link.addEventListener("click", function (event) {
    event.preventDefault();
    var go = function () { location.href = link.href; };
    Promise.race([beacon("/api/cta/clicks", {arm_id: arm, page: page, target: new URL(link.href).pathname}),
                  new Promise(function (done) { setTimeout(done, 1000); })]).then(go, go);
  });
})();
"""


def landing(request: Request) -> Response:
    """The B2C landing page; its call to action links to A2's sign-up start with the attribution."""
    ctx = ctx_of(request)
    a2 = ctx.config.app_urls.get("A2")
    attribution = {k: request.query_params[k][:MAX_ATTRIBUTION] for k in ATTRIBUTION_KEYS
                   if request.query_params.get(k)}
    query = urlencode(attribution)
    if a2:
        href = html.escape(f"{a2}/signup/start" + (f"?{query}" if query else ""))
        cta = f'<a id="signup-cta" data-testid="signup-cta" href="{href}">Start learning free</a>'
    else:
        cta = '<p id="signup-unavailable">Sign-up is unavailable: the student app is not part of this sandbox.</p>'
    page_head = head(ctx.config.base_url, LANDING_PATH, "Get started",
                     "Create your learner account and get three AI credits.")
    return HTMLResponse(
        f'<!doctype html><html lang="en">{page_head}<body><h1>Learn faster with an AI tutor</h1>'
        f"<p>Create your account, unlock the Micro QA pack and get your first page in minutes.</p>{cta}"
        f"<script>{CTA_SCRIPT}</script></body></html>"
    )


def routes() -> list[BaseRoute]:
    return [
        Route("/", home, methods=["GET"]),
        Route("/sitemap.xml", sitemap, methods=["GET"]),
        Route("/robots.txt", robots_txt, methods=["GET"]),
        Route(ANALYTICS_PATH, analytics_js, methods=["GET"]),
        Route(OG_IMAGE_PATH, og_image, methods=["GET"]),
        Route(PAGEVIEWS_ROUTE, pageview, methods=["POST"]),
        Route(LANDING_PATH, landing, methods=["GET"]),
        *lead_routes(),
        *cta_routes(),
        Route("/{slug}", page, methods=["GET"]),
    ]


def admin_routes() -> list[BaseRoute]:
    return [*lead_admin_routes(), *cta_admin_routes()]


def setup(ctx: AppContext) -> None:
    """Lead capture's relay and delivery workers, then the live CTA policy."""
    setup_leads(ctx)
    setup_cta(ctx)


LEADS = tagged_json("leads", "request_tags", "$.namespace")

DEFINITION = AppDefinition(
    app_id="A7",
    schema=SCHEMA + LEAD_SCHEMA,
    seed=seed,
    routes=routes,
    admin_routes=admin_routes,
    setup=setup,
    # a lead keeps its capturing request's tags as JSON; its idempotency record goes with it
    synthetic_tables=(owned_by("lead_requests", "lead_id", LEADS, key="lead_id"), LEADS),
)

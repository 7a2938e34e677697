"""A7 — marketing: public pages, the XML sitemap that lists them, and lead capture.

Pages live in SQLite (slug, title, description, last modification, whether the sitemap
should list them). ``/sitemap.xml`` follows the sitemaps.org 0.9 protocol: absolute
``<loc>`` URLs on this app's own origin, ``<lastmod>`` as a W3C date. Each page is
served at ``/<slug>``; the home page is the shared base page at ``/``.

Lead capture (``/api/leads``, the mailer and its delivery workers) is described in
:mod:`sandbox.apps.a7_leads`; its routes come before the ``/{slug}`` pages.

``/get-started`` is the B2C landing page: its call to action starts sign-up at the
student app (A2 ``/signup/start``), which sends the browser on to A1's authorize
endpoint with the sandbox client id and A2's callback. The landing link's ``utm_*`` and
``ref`` parameters are carried over, so the learner's attribution survives the sign-in.
"""

from __future__ import annotations

import html
from urllib.parse import urlencode
from xml.sax.saxutils import escape

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.apps.a7_cta import cta_admin_routes, cta_routes, setup_cta
from sandbox.apps.a7_lead_store import SCHEMA as LEAD_SCHEMA
from sandbox.apps.a7_leads import lead_admin_routes, lead_routes, setup_leads
from sandbox.common.context import AppContext, AppDefinition, ctx_of
from sandbox.common.synthetic_cleanup import owned_by, tagged_json

SITEMAP_NS = "http://www.sitemaps.org/schemas/sitemap/0.9"
LANDING_PATH = "/get-started"
ATTRIBUTION_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term", "ref")
MAX_ATTRIBUTION = 100

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


def page(request: Request) -> Response:
    ctx = ctx_of(request)
    slug = request.path_params["slug"]
    rows = ctx.db.query("SELECT title, description FROM pages WHERE slug = ?", (slug,))
    if not rows:
        return PlainTextResponse("Not Found", status_code=404)
    title, description = html.escape(rows[0]["title"]), html.escape(rows[0]["description"])
    canonical = html.escape(f"{ctx.config.base_url}/{slug}")
    return HTMLResponse(
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f'<meta name="description" content="{description}"><link rel="canonical" href="{canonical}">'
        f"</head><body><h1>{title}</h1><p>{description}</p></body></html>"
    )


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
    canonical = html.escape(f"{ctx.config.base_url}{LANDING_PATH}")
    return HTMLResponse(
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Get started</title>'
        '<meta name="description" content="Create your learner account and get three AI credits.">'
        f'<link rel="canonical" href="{canonical}"></head><body><h1>Learn faster with an AI tutor</h1>'
        f"<p>Create your account, unlock the Micro QA pack and get your first page in minutes.</p>{cta}"
        f"<script>{CTA_SCRIPT}</script></body></html>"
    )


def routes() -> list[BaseRoute]:
    return [
        Route("/sitemap.xml", sitemap, methods=["GET"]),
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

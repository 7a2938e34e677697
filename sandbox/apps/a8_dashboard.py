"""``GET /dashboard``: the command center's page — active incident banners, the tiles, then the cards.

Server-rendered HTML with inline CSS and no script, so it renders the same in a
headless browser, a screenshot and a terminal ``curl``. It shows exactly what the API
shows (the same tile and banner functions build both), so a screenshot is evidence of
the API's state at that moment.

With the flag ``a8_demo_mode`` ON the page carries a ``DEMO — simulated revenue`` badge
(``id="demo-badge"``) and every revenue figure that includes simulated revenue says so;
OFF, no badge and no label — what an audit must catch, since simulated revenue then
inflates the live tile with nothing on the page to tell a reader.

Cards (:mod:`sandbox.apps.a8_cards`) are read-only: each is shown with its title, version
and content and no control of any kind. Every text is escaped; an ``http(s)`` link is an
anchor, while a relative link names a file of the audit run's folder, which this page does
not serve, so it is shown as the path itself rather than as a link that would lead nowhere.
"""

from __future__ import annotations

import html
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from sandbox.apps.a8_banners import BannerBoard
from sandbox.apps.a8_cards import board_of as cards_of
from sandbox.apps.a8_cards import safe_href
from sandbox.apps.a8_tiles import DEMO_LABEL, cached_tiles
from sandbox.common.context import AppContext, ctx_of

REFRESH_S = 15
STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;background:#f6f7f9;color:#1b1f24}
header{display:flex;align-items:center;gap:16px}
h1{font-size:22px;margin:0}
.badge{background:#b42318;color:#fff;font-weight:700;padding:6px 12px;border-radius:6px;letter-spacing:.04em}
.banner{padding:10px 14px;border-radius:6px;margin:8px 0;border-left:6px solid #888;background:#fff}
.banner.critical,.banner.major{border-color:#b42318;background:#fdecea}
.banner.minor{border-color:#b54708;background:#fef6e7}
.banner.info{border-color:#175cd3;background:#eff4ff}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:12px;margin-top:16px}
.tile{background:#fff;border-radius:8px;padding:14px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
.tile h2{font-size:14px;margin:0 0 8px;color:#475467}
.value{font-size:28px;font-weight:700}
.label{display:inline-block;background:#fdecea;color:#b42318;font-size:12px;padding:2px 6px;border-radius:4px;margin:4px 4px 0 0}
.tile{min-width:0;overflow-wrap:anywhere}
ul.kv{list-style:none;padding:0;margin:8px 0 0;font-size:12px;color:#475467}
ul.kv li{display:inline-block;margin:0 10px 2px 0}
.card{background:#fff;border-radius:8px;padding:14px;margin-top:12px;box-shadow:0 1px 2px rgba(0,0,0,.08);overflow-wrap:anywhere}
.card h2{font-size:16px;margin:0 0 6px}
.card .meta{font-size:12px;color:#475467}
.card .grade{font-size:22px;font-weight:700}
.card ol,.card ul{margin:6px 0 0;padding-left:20px;font-size:13px}
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def format_value(value: Any, unit: str) -> str:
    """A tile value as a reader expects it: counts and cents as integers, ratios as percentages."""
    if value is None:
        return "no data"
    if unit == "ratio":
        return f"{value * 100:.2f}%"
    if unit == "ms":
        return f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"


def _breakdown(breakdown: dict[str, Any]) -> str:
    items = []
    for key, value in breakdown.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items()) or "—"
        items.append(f"<li><b>{_e(key)}</b> {_e(value)}</li>")
    return f'<ul class="kv">{"".join(items)}</ul>'


def _tile(tile: dict[str, Any]) -> str:
    labels = "".join(f'<span class="label">{_e(label)}</span>' for label in tile["labels"])
    unit = "" if tile["unit"] == "ratio" else f' <small>{_e(tile["unit"])}</small>'
    return (f'<section class="tile" id="tile-{_e(tile["id"])}" data-value="{_e(tile["value"])}">'
            f'<h2>{_e(tile["title"])}</h2><div class="value">{_e(format_value(tile["value"], tile["unit"]))}'
            f'{unit}</div>{labels}{_breakdown(tile["breakdown"])}</section>')


def _banner(banner: dict[str, Any]) -> str:
    synthetic = ' <span class="label">synthetic</span>' if banner["tags"].get("test_run") == "true" else ""
    return (f'<div class="banner {_e(banner["severity"])}" role="alert" data-banner-id="{_e(banner["id"])}">'
            f'<strong>{_e(banner["app_id"])} · {_e(banner["severity"])}</strong> — {_e(banner["message"])}'
            f' <small>raised {_e(banner["raised_at"])}</small>{synthetic}</div>')


def _link(link: dict[str, str]) -> str:
    href = link["href"]
    if safe_href(href) and href.lower().startswith(("http://", "https://")):
        return f'<li><a href="{_e(href)}" rel="noopener noreferrer">{_e(link["label"])}</a></li>'
    return f'<li>{_e(link["label"])}: <code>{_e(href)}</code></li>'


def _action(action: dict[str, str]) -> str:
    labels = "".join(f' <span class="label">{_e(action[k])}</span>' for k in ("risk", "owner", "eta") if k in action)
    return f"<li>{_e(action['text'])}{labels}</li>"


def _card(card: dict[str, Any]) -> str:
    body = card["body"]
    run = f'run {_e(body["run_id"])} · ' if "run_id" in body else ""
    parts = [f'<p class="meta">{run}version {_e(card["version"])} · posted {_e(card["posted_at"])}</p>']
    if card["kind"] == "score":
        parts.append(f'<div class="grade" data-grade="{_e(body["grade"])}">{_e(body["grade"])} · '
                     f'{_e(format_value(body["score"], "points"))} / 100</div>')
        actions = "".join(_action(a) for a in body["actions"])
        parts.append(f"<ol>{actions}</ol>" if actions else "<p>No open action.</p>")
    if "text" in body:
        parts.append(f"<p>{_e(body['text'])}</p>")
    if body.get("links"):
        parts.append(f'<ul>{"".join(_link(link) for link in body["links"])}</ul>')
    return (f'<article class="card" id="card-{_e(card["id"])}" data-card-id="{_e(card["id"])}" '
            f'data-version="{_e(card["version"])}"><h2>{_e(card["title"])}</h2>{"".join(parts)}</article>')


def render(tiles: dict[str, Any], banners: list[dict[str, Any]], cards: list[dict[str, Any]] | None = None) -> str:
    """The whole page for one snapshot of tiles, active banners and cards."""
    badge = f'<span class="badge" id="demo-badge" role="status">{_e(DEMO_LABEL)}</span>' if tiles["demo_mode"] else ""
    banner_html = "".join(_banner(b) for b in banners) or '<p id="no-banners">No active incident banners.</p>'
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_S}"><title>A8 · Command center</title>'
        f"<style>{STYLE}</style></head><body>"
        f"<header><h1>A8 · Command center</h1>{badge}</header>"
        f'<section id="banners" aria-label="incident banners">{banner_html}</section>'
        f'<div class="grid">{"".join(_tile(t) for t in tiles["tiles"])}</div>'
        f'<section id="cards" aria-label="cards">{"".join(_card(c) for c in cards or [])}</section>'
        f'<p><small>Updated {_e(tiles["generated_at"])}</small></p></body></html>'
    )


def _snapshot(ctx: AppContext) -> str:
    board: BannerBoard = ctx.services["banners"]
    return render(cached_tiles(ctx), board.active(), cards_of(ctx).latest())


async def dashboard(request: Request) -> Response:
    page = await run_in_threadpool(_snapshot, ctx_of(request))
    return HTMLResponse(page, headers={"Cache-Control": "no-store"})

"""The run's two read-only cards on the command center (docs/phases.md#11-readiness-score): status with links, and readiness.

:func:`post_cards` builds both cards from the run folder and the score, posts them to the
command center's ``POST /api/cards`` through the guarded client, reads ``GET /api/cards``
back, and on the sandbox loads ``/dashboard`` in the system Chromium to see both shown
(the screenshot is kept). Everything it sent and every answer go to
``evidence/a8_cards.json``; two checks record the outcome, ``closing.cards.posted`` (A8
lists each card at the version our post created) and ``closing.cards.shown``.

A card's id is stable per ecosystem (``readiness.<ecosystem>.status`` / ``.score``): a later
run posts a new version and the command center shows the latest. Each post's idempotency
key is a digest of the card, so re-running the cell replays instead of adding a version,
while changed content is a new version. In ``prod`` a post is a write: it needs a
``production_write`` approval (else both checks are BLOCKED) and goes out under the
synthetic identity, as the guarded client requires of any production write.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from readiness.core import aio
from readiness.core.check import Check, Status
from readiness.core.verdict import value_check
from readiness.phasekit.context import Phase, production_writes_allowed
from readiness.probe.browser import BrowserUnavailable, chromium, guard_context
from readiness.probe.sandbox_control import admin_headers
from readiness.report.markdown import checks_frame, status_line
from readiness.score.rubric import MAX_LEVEL
from readiness.score.scoring import ReadinessScore

CARDS_FILE, CARDS_PNG = "evidence/a8_cards.json", "evidence/a8_cards_dashboard.png"
ROUTE = "/api/cards"
TOP_ACTIONS, MAX_LINKS, MAX_ACTION_TEXT = 5, 100, 500
SCORE_LINKS = ("reports/validation_report.md", "reports/readiness_rubric.md", "reports/readiness_heatmap.csv")
TAGS = ("observability", "release_engineering")


def card_id(ecosystem: str, kind: str) -> str:
    """A stable id per ecosystem and card, within the command center's id alphabet."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", ecosystem).strip("-.") or "ecosystem"
    return f"readiness.{slug[:100]}.{kind}"


def ranked_actions(score: ReadinessScore, k: int = TOP_ACTIONS) -> list[dict[str, Any]]:
    """The k actions of the categories that leave the most points on the table.

    A category's gap weighs (5 − score) / 5 × weight points; its actions rank by that
    weight, then by risk (the rubric's order), then in rubric order. The same action
    listed under several categories appears once, at its heaviest gap.
    """
    risk = {r: i for i, r in enumerate(score.risk_order)}
    ranked = []
    for i, cat in enumerate(score.categories):
        gap = float((MAX_LEVEL - cat.score) * cat.weight / MAX_LEVEL)
        ranked += [(-gap, risk.get(a["risk"], len(risk)), i, j, cat.key, gap, a) for j, a in enumerate(cat.actions)]
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for *_, key, gap, a in sorted(ranked, key=lambda r: r[:4]):
        out.setdefault((a["owner"], a["action"]), {**a, "category": key, "gap_points": round(gap, 2)})
    return list(out.values())[:k]


def artifact_links(root: Path) -> list[dict[str, str]]:
    """Every report of the run, then the evidence folder and the run's index, relative to the run folder."""
    reports = sorted(p.relative_to(root).as_posix() for p in (root / "reports").glob("*") if p.is_file())
    extra = [p for p in ("evidence/", "html/index.html") if (root / p).exists()]
    paths = [*reports[:MAX_LINKS - len(extra)], *extra]
    return [{"label": Path(p).name or p, "href": p} for p in paths]


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def build_cards(*, run_id: str, ecosystem: str, environment: str, root: Path, score: ReadinessScore,
                checks: Sequence[Check]) -> list[dict[str, Any]]:
    """The two cards in the command center's card shape (see :mod:`sandbox.apps.a8_cards`)."""
    links = artifact_links(root)
    status = {"id": card_id(ecosystem, "status"), "title": "Implementation & validation status", "kind": "links",
              "body": {"run_id": run_id, "links": links or [{"label": "run folder", "href": "./"}],
                       "text": _clip(f"{ecosystem} ({environment}), run {run_id}: {len(checks)} checks recorded — "
                                     f"{status_line(checks)}. Links are paths inside the run folder.", 2000)}}
    actions = [{"text": _clip(f"{a['action']} [{a['category']}: {a['gap_points']:g} points open]", MAX_ACTION_TEXT),
                "owner": a["owner"], "eta": a["eta"], "risk": a["risk"]} for a in ranked_actions(score)]
    readiness = {"id": card_id(ecosystem, "score"), "title": "Enterprise readiness", "kind": "score",
                 "body": {"run_id": run_id, "score": round(score.overall_score, 2), "grade": score.grade,
                          "actions": actions,
                          "links": [{"label": Path(p).name, "href": p} for p in SCORE_LINKS if (root / p).exists()],
                          "text": f"Top {len(actions)} actions, heaviest open category first "
                                  f"({len(score.blockers)} blockers)."}}
    return [status, readiness]


def idempotency_key(card: dict[str, Any]) -> str:
    """The same card gets the same key (a replay); any change is a new key (a new version)."""
    canonical = json.dumps(card, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "card-" + hashlib.sha256(canonical.encode()).hexdigest()[:40]


def _body(sample: Any) -> Any:
    try:
        return sample.json()
    except ValueError:
        return (sample.body or b"")[:500].decode(errors="replace") or None


async def _post_all(phase: Phase, cards: Sequence[dict[str, Any]]) -> dict[str, Any]:
    a8 = phase.params.app(phase.params.telemetry_app)
    identity = phase.synthetic_identity if phase.params.environment == "prod" else None
    posted = []
    async with phase.client() as client:
        for card in cards:
            sample = await client.post(a8.url(ROUTE), json=card, app=a8.id, route=ROUTE, keep_body=True,
                                       headers=phase.telemetry_auth() or admin_headers(),
                                       idempotency_key=idempotency_key(card), synthetic_identity=identity)
            posted.append({"id": card["id"], "card": card, "status": sample.status, "error": sample.error,
                           "answer": _body(sample), "trace_id": sample.trace_id,
                           "idempotency_key": sample.idempotency_key})
        listed = await client.get(a8.url(ROUTE), app=a8.id, route=ROUTE, keep_body=True)
    return {"a8": a8.base_url, "posted": posted, "listed": {"status": listed.status, "answer": _body(listed)}}


def _version(answer: Any) -> Any:
    """The ``version`` of the card in an answer ``{"card": {...}}``; None for any other shape."""
    card = answer.get("card") if isinstance(answer, dict) else None
    return card.get("version") if isinstance(card, dict) else None


def confirmed(seen: dict[str, Any]) -> dict[str, int]:
    """Card id → version for each card A8 accepted (201) and lists as its latest version."""
    listed = seen["listed"]["answer"] if seen["listed"]["status"] == 200 else None
    cards = listed.get("cards") if isinstance(listed, dict) else None
    latest = {c.get("id"): c.get("version") for c in cards if isinstance(c, dict)} if isinstance(cards, list) else {}
    return {p["id"]: version for p in seen["posted"]
            if p["status"] == 201 and (version := _version(p["answer"])) is not None and latest.get(p["id"]) == version}


async def _dashboard(phase: Phase, ids: Sequence[str]) -> dict[str, Any]:
    """``/dashboard`` in Chromium: the version each card shows (None: not visible), and a screenshot."""
    from playwright.async_api import Error as PlaywrightError

    a8 = phase.params.app(phase.params.telemetry_app)
    url = a8.url("/dashboard")
    try:
        async with chromium() as browser:
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            blocked = await guard_context(context, {a8.host})
            page = await context.new_page()
            await page.goto(url, wait_until="load")
            shown: dict[str, Any] = {}
            for cid in ids:
                card = page.locator(f'article.card[data-card-id="{cid}"]')
                visible = await card.count() == 1 and await card.is_visible()
                shown[cid] = await card.get_attribute("data-version") if visible else None
            return {"url": url, "shown": shown, "png": await page.screenshot(full_page=True), "note": "",
                    "blocked_requests": blocked}
    except BrowserUnavailable as exc:
        return {"url": url, "shown": None, "png": None, "note": str(exc), "blocked_requests": []}
    except PlaywrightError as exc:
        return {"url": url, "shown": None, "png": None, "note": f"Chromium failed: {str(exc).splitlines()[0]}",
                "blocked_requests": []}


def card_checks(phase_name: str, app: str, cards: Sequence[dict[str, Any]], seen: dict[str, Any],
                page: dict[str, Any] | None, page_evidence: tuple[str, ...]) -> list[Check]:
    """``closing.cards.posted`` from A8's answers; ``closing.cards.shown`` from the page (None: not looked)."""
    ok = confirmed(seen)
    answers = "; ".join(f"{p['id']} → {p['status'] or p['error']}" for p in seen["posted"])
    common = {"phase": phase_name, "app": app, "tags": TAGS, "severity": "P2"}
    checks = [value_check(id="closing.cards.posted", title="A8 lists both read-only cards at the posted version",
                          observed=len(ok), expected=len(cards), unit="cards", n=len(cards), evidence=(CARDS_FILE,),
                          detail=f"{answers}; GET {ROUTE} → {seen['listed']['status']}", **common)]
    if page is None:
        checks.append(Check(id="closing.cards.shown", title="the dashboard shows both cards", status=Status.SKIPPED,
                            detail="external ecosystem: its dashboard markup is not the sandbox's; "
                                   "closing.cards.posted reads the cards back through the API", **common))
        return checks
    shown = None if page["shown"] is None else sum(
        1 for cid, version in ok.items() if page["shown"].get(cid) == str(version))
    checks.append(value_check(id="closing.cards.shown", title="the dashboard shows both cards at the posted version",
                              observed=shown, expected=len(cards), unit="cards", n=len(cards),
                              evidence=(CARDS_FILE, *page_evidence), detail=page["note"], **common))
    return checks


def command_center_absent(phase: Phase) -> str | None:
    """None when the ecosystem declares a command center (at ``telemetry_app``); else why not."""
    if phase.params.telemetry_app is None or not phase.params.provides("command_center"):
        return ("not applicable: the ecosystem declares no command center (params capabilities: command_center, "
                "served by the telemetry_app)")
    return None


def post_cards(phase: Phase, score: ReadinessScore) -> pd.DataFrame:
    """Post the two read-only cards, read them back, and (sandbox) see them on the dashboard."""
    run, app = phase.run, phase.params.telemetry_app
    if (no_center := command_center_absent(phase)) is not None:
        return checks_frame(phase.record([
            Check(id=f"closing.cards.{k}", phase=phase.name, title=f"read-only cards {k}", status=Status.SKIPPED,
                  tags=TAGS, detail=no_center) for k in ("posted", "shown")]))
    cards = build_cards(run_id=run.root.name, ecosystem=phase.params.ecosystem, environment=phase.params.environment,
                        root=run.root, score=score, checks=run.read_decisions().checks)
    refusal = production_writes_allowed(phase, "two read-only cards on the command center", (app,))
    if refusal:
        run.write_json(CARDS_FILE, {"blocked": refusal, "cards": cards})
        return checks_frame(phase.record([
            Check(id=f"closing.cards.{k}", phase=phase.name, title=f"read-only cards {k}", status=Status.BLOCKED,
                  app=app, tags=TAGS, evidence=(CARDS_FILE,), detail=refusal) for k in ("posted", "shown")]))
    seen = aio.run(_post_all(phase, cards))
    page, page_evidence = None, ()
    if phase.params.target == "sandbox":
        page = aio.run(_dashboard(phase, [c["id"] for c in cards]))
        if page["png"] is not None:
            run.write_bytes(CARDS_PNG, page["png"])
            page_evidence = (CARDS_PNG,)
    run.write_json(CARDS_FILE, {**seen, "dashboard": None if page is None else {
        k: v for k, v in page.items() if k != "png"} | {"screenshot": page_evidence[0] if page_evidence else None}})
    return checks_frame(phase.record(card_checks(phase.name, app, cards, seen, page, page_evidence)))

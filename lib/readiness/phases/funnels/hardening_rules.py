"""The rules of Phase 04 header hardening: one coroutine per rule, run against one route.

Each rule sends its real requests through a :class:`Cell` (the route, the client, the
request log kept as evidence) and returns a *judge*: a function that turns the side
effects counted afterwards in the telemetry store (:class:`Effects`) into the rule's
check. Sending first and judging later lets every route's rules run before one settle
time and one count of effect events, instead of a wait per rule.

Bodies are rendered per rule from the route's templates (:func:`render`): ``{uid}`` is
unique per rule, ``{key}`` is the rule's idempotency key, ``{now}`` its start time and
``{identity}`` the synthetic identity the request is sent as — so a route whose own
dedupe is global (a telemetry event's key and trace id) can still show that a second
caller's request under the same header key is its own, new effect.

:mod:`readiness.phases.funnels.hardening` plans the routes, runs these rules and reports them.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from readiness.core.check import Check, Status
from readiness.core.verdict import combine, value_check
from readiness.params.contracts import HardeningRoute
from readiness.params.model import App, Params
from readiness.phasekit.context import Phase
from readiness.probe.client import GuardedClient, Sample
from readiness.probe.sandbox_control import ADMIN_TOKEN_ENV
from readiness.probe.telemetry_store import iso

RULES = ("missing_idempotency_key", "missing_trace_id", "replay", "payload_mismatch", "concurrent_duplicate",
         "scope", "expiry")
TITLES = {
    "missing_idempotency_key": "refuses a request without X-Idempotency-Key (428)",
    "missing_trace_id": "refuses a request without X-Trace-Id (428)",
    "replay": "replays the stored response with exactly one side effect",
    "payload_mismatch": "refuses the same key with a different payload (422)",
    "concurrent_duplicate": "rejects a concurrent duplicate (one success, one 409)",
    "scope": "scopes keys per caller (two identities, two effects)",
    "expiry": "processes a key as new after the dedupe window",
}
REQUESTS = "evidence/hardening_requests.json"
EFFECTS = "evidence/hardening_effects.json"
REPORT = "reports/idempotency_validation.md"
TAGS = ("security", "data_protection", "test_quality")
REPLAYED = "idempotent-replayed"


@dataclasses.dataclass(frozen=True)
class Target:
    """One audited route, resolved against the params."""

    route: HardeningRoute
    app: App
    identity: str
    other_identity: str | None

    @property
    def prefix(self) -> str:
        return f"hardening.{self.route.app}.{self.route.label}"


def render(node: Any, values: dict[str, str]) -> Any:
    """``body`` with ``{uid}``, ``{key}``, ``{now}`` and ``{identity}`` replaced inside every string value."""
    if isinstance(node, dict):
        return {k: render(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [render(v, values) for v in node]
    if isinstance(node, str):
        for name, value in values.items():
            node = node.replace("{" + name + "}", value)
    return node


def _ok(sample: Sample) -> bool:
    return sample.status is not None and 200 <= sample.status < 300


def _replayed(sample: Sample) -> bool:
    return sample.headers.get(REPLAYED, "").lower() == "true"


def _json(sample: Sample) -> Any:
    try:
        return sample.json()
    except ValueError:
        return None


@dataclasses.dataclass(frozen=True)
class Effects:
    """Side effects counted in the telemetry store: event type → idempotency key → events."""

    counts: dict[str, collections.Counter[str]]
    unavailable: str | None = None

    def count(self, event_type: str | None, key: str) -> tuple[int | None, str]:
        """(events carrying ``key``, how it was counted); None when it cannot be counted."""
        if event_type is None:
            return None, "side effects of this route cannot be observed: no effect_event configured"
        if self.unavailable:
            return None, f"telemetry store unavailable: {self.unavailable}"
        return self.counts.get(event_type, collections.Counter())[key], f"{event_type} events with this key"


Judge = Callable[[Effects], Check]


def blocked_checks(phase: Phase, target: Target, refusal: str) -> list[Check]:
    """Every rule of a route whose writes the environment policy refused: BLOCKED, nothing sent."""
    route = target.route
    return [Check(id=f"{target.prefix}.{rule}", phase=phase.name, title=f"{route.method} {route.path} {TITLES[rule]}",
                  status=Status.BLOCKED, app=route.app, tags=TAGS, severity="P1", evidence=(REPORT,), detail=refusal)
            for rule in RULES]


class Cell:
    """The requests of one route's rules, logged as evidence, and the keys whose effects are counted."""

    def __init__(self, phase: Phase, client: GuardedClient, target: Target, log: list[dict[str, Any]],
                 wanted: dict[str, set[str]]) -> None:
        self.phase, self.client, self.target, self.log, self.wanted = phase, client, target, log, wanted
        self.info: dict[str, Any] = {}

    def fresh(self, template: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """A new idempotency key and the route's body rendered for it."""
        key, values = self.draw()
        return key, render(template or self.target.route.body, values)

    def draw(self) -> tuple[str, dict[str, str]]:
        """A new key and the placeholder values that go with it (see :func:`render`), as the route's identity."""
        key = f"qa-hardening-{uuid.uuid4().hex}"
        return key, {"uid": uuid.uuid4().hex[:16], "key": key, "now": iso(dt.datetime.now(dt.UTC)),
                     "identity": self.target.identity}

    async def send(self, rule: str, label: str, *, key: str | None, body: Any, identity: str | None = None,
                   trace: bool = True, headers: dict[str, str] | None = None) -> Sample:
        t, route = self.target, self.target.route
        who = identity or t.identity
        sample = await self.client.request(
            route.method, t.app.url(route.path), app=route.app, route=route.path, json=body,
            headers={**self.phase.auth_headers(route.app), **(headers or {})}, trace=trace,
            idempotency_key=key, synthetic_identity=who, keep_body=True)
        if _ok(sample) and key and route.effect_event and not _replayed(sample):
            self.wanted.setdefault(route.effect_event, set()).add(key)
        self.log.append({"route": t.prefix, "rule": rule, "request": label, "method": route.method,
                         "path": route.path, "identity": who, "idempotency_key": key, "trace_id": sample.trace_id,
                         "status": sample.status, "replayed": _replayed(sample), "error": sample.error,
                         "total_ms": sample.total_ms, "started_at": sample.started_at, "response": _json(sample)})
        return sample

    def check(self, rule: str, *, observed: Any, expected: Any, detail: str = "", unit: str = "") -> Check:
        return value_check(id=f"{self.target.prefix}.{rule}", phase=self.phase.name, app=self.target.route.app,
                           title=f"{self.target.route.method} {self.target.route.path} {TITLES[rule]}",
                           observed=observed, expected=expected, detail=detail, unit=unit, tags=TAGS,
                           severity="P1", evidence=(REQUESTS, EFFECTS, REPORT))

    def part(self, rule: str, part: str, **kwargs: Any) -> Check:
        base = self.check(rule, **kwargs)
        return dataclasses.replace(base, id=f"{base.id}.{part}")

    def all_of(self, rule: str, parts: list[Check]) -> Check:
        detail = "; ".join(f"{p.id.rsplit('.', 1)[-1]}: {p.detail}" for p in parts)
        return combine(f"{self.target.prefix}.{rule}", self.phase.name, f"{self.target.route.method} "
                       f"{self.target.route.path} {TITLES[rule]}", parts, app=self.target.route.app,
                       tags=TAGS, severity="P1", detail=detail)

    def effect_part(self, rule: str, effects: Effects, key: str, expected: int) -> Check:
        n, how = effects.count(self.target.route.effect_event, key)
        return self.part(rule, "effects", observed=n, expected=expected, unit="effects", detail=how)


async def _missing_headers(cell: Cell) -> list[Judge]:
    key, body = cell.fresh()
    no_key = await cell.send("missing_idempotency_key", "without X-Idempotency-Key", key=None, body=body)
    no_trace = await cell.send("missing_trace_id", "without X-Trace-Id", key=key, body=body, trace=False)
    draft_key, draft_body = cell.fresh()
    draft = await cell.send("missing_idempotency_key", "IETF header name only", key=None, body=draft_body,
                            headers={"Idempotency-Key": draft_key})
    cell.info.update(missing_key_status=no_key.status, draft_header_status=draft.status)
    return [lambda e: cell.check("missing_idempotency_key", observed=no_key.status, expected=428),
            lambda e: cell.check("missing_trace_id", observed=no_trace.status, expected=428)]


def _not_accepted(cell: Cell, rule: str, sample: Sample, what: str) -> Check:
    return cell.check(rule, observed=None, expected=True,
                      detail=f"{what} was not accepted ({sample.status or sample.error}); the rule cannot be applied")


async def _replay(cell: Cell) -> Judge:
    key, body = cell.fresh()
    first = await cell.send("replay", "first", key=key, body=body)
    again = await cell.send("replay", "replay", key=key, body=body)

    def judge(effects: Effects) -> Check:
        if not _ok(first):
            return _not_accepted(cell, "replay", first, "the first request")
        same = again.status == first.status and _json(again) == _json(first)
        response = cell.part("replay", "response", observed=same, expected=True,
                             detail=f"status {first.status} then {again.status}, body "
                                    f"{'identical' if _json(again) == _json(first) else 'different'}, "
                                    f"Idempotent-Replayed: {_replayed(again)}")
        return cell.all_of("replay", [response, cell.effect_part("replay", effects, key, 1)])

    return judge


async def _mismatch(cell: Cell) -> Judge:
    alt_template = cell.target.route.alt_body
    if alt_template is None:
        return lambda e: cell.check("payload_mismatch", observed=None, expected=422,
                                    detail="no alt_body configured for this route (hardening.routes[].alt_body)")
    key, values = cell.draw()
    first = await cell.send("payload_mismatch", "first", key=key, body=render(cell.target.route.body, values))
    reused = await cell.send("payload_mismatch", "same key, other body", key=key, body=render(alt_template, values))
    control_key, control_body = cell.fresh(alt_template)
    control = await cell.send("payload_mismatch", "other body, fresh key (control)", key=control_key,
                              body=control_body)

    def judge(effects: Effects) -> Check:
        if not _ok(first):
            return _not_accepted(cell, "payload_mismatch", first, "the first request")
        if not _ok(control):
            return _not_accepted(cell, "payload_mismatch", control,
                                 "alt_body with a fresh key (so a 422 could not be told from a validation error)")
        parts = [cell.part("payload_mismatch", "status", observed=reused.status, expected=422)]
        if cell.target.route.effect_event:
            parts.append(cell.effect_part("payload_mismatch", effects, key, 1))
        return cell.all_of("payload_mismatch", parts)

    return judge


def _hold_headers(params: Params) -> dict[str, str]:
    token = os.environ.get(ADMIN_TOKEN_ENV)
    if params.target != "sandbox" or not token or params.hardening.hold_ms <= 0:
        return {}
    return {"X-Sandbox-Token": token, "X-Sandbox-Hold-Ms": f"{params.hardening.hold_ms:g}"}


async def _concurrent(cell: Cell) -> Judge:
    pairs: list[tuple[str, Sample, Sample]] = []
    hold = _hold_headers(cell.phase.params)
    for i in range(cell.phase.params.hardening.concurrency_attempts):
        key, body = cell.fresh()
        a, b = await asyncio.gather(*(cell.send("concurrent_duplicate", f"pair {i + 1} {side}", key=key, body=body,
                                                headers=hold) for side in ("a", "b")))
        pairs.append((key, a, b))
        if sorted((a.status or 0, b.status or 0))[1] == 409 and (_ok(a) or _ok(b)):
            break

    def classify(key: str, a: Sample, b: Sample, effects: Effects) -> tuple[str, str]:
        statuses = f"{a.status or a.error}+{b.status or b.error}"
        if {a.status, b.status} & {409} and (_ok(a) or _ok(b)):
            return "proof", f"{statuses}: one success, one 409"
        if not (_ok(a) or _ok(b)):
            return "none", f"{statuses}: the route accepted neither request"
        if not (_ok(a) and _ok(b)):
            return "fail", f"{statuses}: the duplicate got neither a 409 nor the first one's answer"
        n, _how = effects.count(cell.target.route.effect_event, key)
        if n is not None and n >= 2:
            return "fail", f"{statuses}: {n} side effects for one key"
        if _replayed(a) or _replayed(b) or n == 1 or (n is None and _json(a) == _json(b)):
            return "serial", f"{statuses}: answered as a replay, the requests did not overlap inside the route"
        return "fail", f"{statuses}: both processed, different answers, no 409"

    def judge(effects: Effects) -> Check:
        results = [classify(k, a, b, effects) for k, a, b in pairs]
        kinds = [r[0] for r in results]
        detail = "; ".join(f"pair {i + 1}: {text}" for i, (_, text) in enumerate(results))
        hold_note = "" if hold else " (no hold requested: not the sandbox, or hold_ms is 0)"
        if "fail" in kinds:
            return cell.check("concurrent_duplicate", observed="duplicate processed", expected="one success, one 409",
                              detail=detail)
        if "proof" in kinds:
            return cell.check("concurrent_duplicate", observed="one success, one 409",
                              expected="one success, one 409", detail=detail)
        return cell.check("concurrent_duplicate", observed=None, expected="one success, one 409",
                          detail=f"no pair overlapped inside the route{hold_note}: {detail}")

    return judge


async def _scope(cell: Cell) -> Judge:
    other = cell.target.other_identity
    if other is None:
        return lambda e: cell.check("scope", observed=None, expected=2,
                                    detail="a second synthetic identity is needed (synthetic.identities)")
    key, values = cell.draw()
    mine = await cell.send("scope", "identity 1", key=key, body=render(cell.target.route.body, values))
    theirs = await cell.send("scope", "identity 2", key=key, identity=other,
                             body=render(cell.target.route.body, {**values, "identity": other}))

    def judge(effects: Effects) -> Check:
        if not _ok(mine):
            return _not_accepted(cell, "scope", mine, "the first identity's request")
        fresh = _ok(theirs) and not _replayed(theirs)
        answer = cell.part("scope", "response", observed=fresh, expected=True,
                           detail=f"second identity got {theirs.status}, Idempotent-Replayed: {_replayed(theirs)}")
        return cell.all_of("scope", [answer, cell.effect_part("scope", effects, key, 2)])

    return judge


async def _expiry(cell: Cell, started: Awaitable[None]) -> Judge:
    params = cell.phase.params
    window = params.windows.active.dedupe_s
    if not params.hardening.check_expiry:
        skipped = cell.check("expiry", observed=None, expected=2, detail="hardening.check_expiry is false")
        return lambda e: skipped.with_status(Status.SKIPPED)
    key, body = cell.fresh()
    first = await cell.send("expiry", "first", key=key, body=body)
    due = time.monotonic() + window + params.hardening.expiry_margin_s
    await started
    await asyncio.sleep(max(0.0, due - time.monotonic()))
    again = await cell.send("expiry", f"after {window:g} s + margin", key=key, body=body)

    def judge(effects: Effects) -> Check:
        if not _ok(first):
            return _not_accepted(cell, "expiry", first, "the first request")
        fresh = _ok(again) and not _replayed(again)
        answer = cell.part("expiry", "response", observed=fresh, expected=True,
                           detail=f"after the {params.windows.profile} dedupe window ({window:g} s) the same key got "
                                  f"{again.status}, Idempotent-Replayed: {_replayed(again)}")
        return cell.all_of("expiry", [answer, cell.effect_part("expiry", effects, key, 2)])

    return judge


async def audit_route(cell: Cell) -> list[Judge]:
    """Every rule of one route; the expiry rule's wait overlaps the others."""
    others_done = asyncio.get_running_loop().create_future()
    expiry = asyncio.create_task(_expiry(cell, others_done))
    try:
        judges = await _missing_headers(cell)
        for rule in (_replay, _mismatch, _concurrent, _scope):
            judges.append(await rule(cell))
    finally:
        others_done.set_result(None)
    judges.append(await expiry)
    return judges

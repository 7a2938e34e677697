"""Params of Phase 04 hardening and the B2B funnel: bad values are errors naming the field."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest

from readiness.params.model import load_params, parse_params
from readiness.phases.funnels.hardening import plan, render

ROOT = Path(__file__).resolve().parents[2]
SANDBOX = ROOT / "params" / "sandbox.yaml"


def test_sandbox_defaults_cover_every_mutating_route() -> None:
    p = load_params(SANDBOX)
    assert [f"{r.app} {r.method} {r.path}" for r in p.hardening.routes] == [
        "A5 POST /api/checkout/sessions", "A6 POST /api/providers", "A6 POST /api/listings",
        "A6 POST /api/billing/usage", "A7 POST /api/leads", "A8 POST /api/telemetry/events"]
    assert [t.prefix for t in plan(p)][:2] == ["hardening.A5.checkout_sessions", "hardening.A6.providers"]
    assert (p.b2b.fee_pct, p.b2b.ai_markup_x, p.b2b.tile_id) == (3, 4, "b2b_billing")


def test_staging_example_has_both_sections() -> None:
    env = {f"A{i}_BASE_URL": f"https://a{i}.staging.example.com" for i in range(1, 9)}
    p = load_params(ROOT / "params" / "staging.example.yaml", env=env)
    assert p.hardening.hold_ms == 0 and p.hardening.routes and p.b2b.provider_signups == 50


@pytest.mark.parametrize(("field", "value", "message"), [
    ("path", "api/x", "hardening.routes[0].path: path must start with '/', got 'api/x'"),
    ("method", "GET", "hardening.routes[0].method: Input should be 'POST', 'PUT', 'PATCH' or 'DELETE'"),
    ("name", "Bad Name", "hardening.routes[0].name: String should match pattern '^[a-z][a-z0-9_]*$'"),
    ("effect_event", "", "hardening.routes[0].effect_event: String should have at least 1 character"),
    ("surprise", 1, "hardening.routes[0].surprise: unknown key"),
])
def test_bad_route_fields(params_errors: Callable[[Callable[[dict], object]], list[str]], field: str, value: object, message: str) -> None:
    assert params_errors(lambda d: d["hardening"]["routes"][0].update({field: value})) == [message]


def test_route_needs_a_body_and_a_different_alt_body(params_errors: Callable[[Callable[[dict], object]], list[str]]) -> None:
    assert params_errors(lambda d: d["hardening"]["routes"][0].pop("body")) == [
        "hardening.routes[0].body: required field is missing"]
    same = params_errors(lambda d: d["hardening"]["routes"][0].update(alt_body=d["hardening"]["routes"][0]["body"]))
    assert same == ["hardening.routes[0]: alt_body must differ from body (it is the 'different payload' of the same key)"]


def test_duplicate_route_labels(params_errors: Callable[[Callable[[dict], object]], list[str]]) -> None:
    errors = params_errors(lambda d: d["hardening"]["routes"].append(dict(d["hardening"]["routes"][0])))
    assert errors == ["hardening.routes: duplicate route labels ['A5.checkout_sessions']; give each a distinct name"]


@pytest.mark.parametrize(("section", "field", "value", "message"), [
    ("hardening", "concurrency_attempts", 0, "hardening.concurrency_attempts: Input should be greater than or equal to 1"),
    ("hardening", "hold_ms", -1, "hardening.hold_ms: Input should be greater than or equal to 0"),
    ("hardening", "hold", 1, "hardening.hold: unknown key"),
    ("b2b", "fee_pct", 100, "b2b.fee_pct: Input should be less than 100"),
    ("b2b", "ai_markup_x", 0.5, "b2b.ai_markup_x: Input should be greater than or equal to 1"),
    ("b2b", "provider_signups", 0, "b2b.provider_signups: Input should be greater than or equal to 1"),
    ("b2b", "vus", 61, "b2b.vus: Input should be less than or equal to 60"),
    ("b2b", "base_costs_cents", [0, 5], "b2b.base_costs_cents: base costs must be integers between 1 and "
                                        "100000000 cents, got [0]"),
    ("b2b", "currency", "dollars", "b2b.currency: 'dollars' is not an ISO 4217 currency code (three letters, "
                                   "e.g. usd, eur, gbp)"),
    ("b2b", "landing_path", "x", "b2b.landing_path: path must start with '/', got 'x'"),
])
def test_bad_section_values(params_errors: Callable[[Callable[[dict], object]], list[str]], section: str, field: str, value: object, message: str) -> None:
    assert params_errors(lambda d: d[section].update({field: value})) == [message]


def test_plan_pairs_each_route_with_its_identity_and_another(sandbox_params_data: dict) -> None:
    params = parse_params(copy.deepcopy(sandbox_params_data), "test.yaml", {})
    targets = plan(params)
    assert len(targets) == len(params.hardening.routes)
    ids = params.synthetic.identities
    for target, route in zip(targets, params.hardening.routes, strict=True):
        assert target.app.id == route.app
        assert target.identity == ids[route.identity] and target.other_identity not in (None, target.identity)


def test_render_fills_placeholders_in_nested_strings() -> None:
    body = {"a": "x-{uid}", "b": [{"c": "{key}"}, 3], "d": "{now}", "e": "{other}"}
    assert render(body, {"uid": "u1", "key": "k1", "now": "T"}) == {"a": "x-u1", "b": [{"c": "k1"}, 3], "d": "T",
                                                                    "e": "{other}"}

"""The telemetry contract schema and the sampling verdict rule, without a network."""

from __future__ import annotations

import json
from importlib import resources

import pytest
from jsonschema import Draft202012Validator

from readiness.core.check import Status
from readiness.core.verdict import rate_check, share_check
from readiness.params.contracts import TELEMETRY_CONTRACT_FIELDS
from readiness.phasekit.event_contract import ContractValidator, contract_schema, load_schema
from readiness.phases.telemetry.sampling import _gate, _plan

GOOD = {"event_type": "revenue_settled", "timestamp": "2024-05-01T12:00:00.000Z", "app_id": "A5",
        "route": "/api/webhooks/stripe", "status": 200, "p95_ms": None, "trace_id": "t-1",
        "idempotency_key": "k-1", "revenue_event_id": "rev_1",
        "finance_metrics": {"amount_cents": 50, "currency": "usd", "stripe_mode": "test"}}
IMPRESSION = {**GOOD, "event_type": "cta_impression", "route": "/api/cta/impressions", "status": 202,
              "finance_metrics": None, "revenue_event_id": None, "sample_rate": 0.1, "arm_id": "signup_hero"}


@pytest.fixture(scope="module")
def validator() -> ContractValidator:
    return ContractValidator()


def test_the_schema_ships_with_the_package_and_is_valid_2020_12() -> None:
    text = resources.files("readiness").joinpath("schemas", "telemetry_event.schema.json").read_text()
    schema = json.loads(text)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    assert schema["required"] == ["event_type", *TELEMETRY_CONTRACT_FIELDS] == contract_schema()["required"]


def test_well_formed_events_pass(validator: ContractValidator) -> None:
    assert validator.errors(GOOD) == []
    assert validator.errors(IMPRESSION) == []
    assert validator.errors({**GOOD, "timestamp": "2024-05-01T14:00:00+02:00"}) == []


@pytest.mark.parametrize("field", TELEMETRY_CONTRACT_FIELDS)
def test_each_missing_contract_field_is_named(validator: ContractValidator, field: str) -> None:
    event = {k: v for k, v in IMPRESSION.items() if k != field}
    assert validator.errors(event) == [f"missing contract field: {field}"]


def test_null_is_not_missing(validator: ContractValidator) -> None:
    assert validator.errors({**IMPRESSION, "p95_ms": None, "revenue_event_id": None}) == []


@pytest.mark.parametrize("event_type", ["unknown", "UNKNOWN", " Unknown "])
def test_unknown_type_is_refused(validator: ContractValidator, event_type: str) -> None:
    assert validator.errors({**IMPRESSION, "event_type": event_type}) == ["event_type: 'unknown' is not an event type"]


@pytest.mark.parametrize(("field", "event_type"), [("finance_metrics", "revenue_settled"),
                                                   ("finance_metrics", "checkout_completed"),
                                                   ("revenue_event_id", "revenue_settled")])
def test_finance_event_needs_its_finance_fields(validator: ContractValidator, field: str, event_type: str) -> None:
    event = {**GOOD, "event_type": event_type, field: None}
    assert validator.errors(event) == [f"{field}: a finance event ({event_type}) must carry {field}, got null"]


def test_finance_metrics_shape(validator: ContractValidator) -> None:
    assert validator.errors({**GOOD, "finance_metrics": {"currency": "usd"}}) == [
        "finance_metrics: 'amount_cents' is a required property"]
    assert validator.errors({**IMPRESSION, "finance_metrics": {"provider_fee_cents": -3}}) == [
        "finance_metrics.provider_fee_cents: -3 is less than the minimum of 0"]
    assert validator.errors({**IMPRESSION, "finance_metrics": {"provider_fee_cents": 30, "ai_markup_cents": 400}}) == []


def test_params_choose_the_finance_events() -> None:
    v = ContractValidator(finance_events=["cta_impression"])
    assert v.errors(IMPRESSION) == [
        "finance_metrics: a finance event (cta_impression) must carry finance_metrics, got null",
        "revenue_event_id: a finance event (cta_impression) must carry revenue_event_id, got null"]
    assert v.errors(GOOD) == []
    assert load_schema()["allOf"][0]["if"]["properties"]["event_type"]["enum"] == ["checkout_completed",
                                                                                   "revenue_settled"]


@pytest.mark.parametrize(("change", "message"), [
    ({"timestamp": "2024-05-01T12:00:00"},
     "timestamp: must be an ISO-8601 date-time with an offset (Z or +hh:mm), got '2024-05-01T12:00:00'"),
    ({"timestamp": "2024-13-01T12:00:00Z"},
     "timestamp: must be an ISO-8601 date-time with an offset (Z or +hh:mm), got '2024-13-01T12:00:00Z'"),
    ({"status": "200"}, "status: '200' is not of type 'integer'"),
    ({"p95_ms": "fast"}, "p95_ms: 'fast' is not of type 'number', 'null'"),
    ({"sample_rate": 0}, "sample_rate: 0 is less than or equal to the minimum of 0"),
    ({"trace_id": ""}, "trace_id: '' should be non-empty"),
])
def test_field_types(validator: ContractValidator, change: dict, message: str) -> None:
    assert validator.errors({**IMPRESSION, **change}) == [message]


def test_unknown_contract_field_in_params() -> None:
    with pytest.raises(ValueError, match=r"^unknown contract fields \['p59_ms'\]"):
        contract_schema(["timestamp", "p59_ms"])


def test_not_an_object(validator: ContractValidator) -> None:
    assert validator.errors(["x"]) == ["(event): event must be a JSON object"]


# -- the sampling rule --------------------------------------------------------------
def _share(arrived: int, n: int, margin: float = 0.05):
    return share_check(id="t.share", phase="06_telemetry_contract", title="share", arrived=arrived, n=n, rate=0.10,
                       margin=margin)


def test_share_passes_when_the_interval_lies_inside_the_band() -> None:
    c = _share(40, 400)
    assert c.status is Status.PASS and 0.05 <= c.ci_low < 0.10 < c.ci_high <= 0.15 and c.observed == 0.10
    assert c.detail == ("Wilson 90% interval [7.8%, 12.74%] inside 10% ± 5% [5%, 15%] "
                        "(40/400 arrived; equivalence test, one-sided α 5% each side)")


def test_share_fails_only_when_the_interval_lies_outside_the_band() -> None:
    assert _share(400, 400).status is Status.FAIL  # sampling gone: everything shipped
    low = _share(10, 400)
    assert low.status is Status.FAIL and low.detail.startswith("Wilson 90% interval [1.5%, 4.14%] outside 10% ± 5%")
    # 12.5% is off target, but not shown to be off by more than the margin: no FAIL
    assert _share(50, 400).status is Status.INCONCLUSIVE


def test_share_is_inconclusive_when_too_few_probes_to_tell() -> None:
    c = _share(4, 40)
    assert c.status is Status.INCONCLUSIVE
    assert c.detail.endswith("(4/40 arrived; equivalence test, one-sided α 5% each side); n ≥ 423 pass a share "
                             "on target with 90% probability")
    assert _share(0, 0).status is Status.INCONCLUSIVE


def test_probe_plan_ends_with_an_error_and_keeps_counts() -> None:
    plan = _plan(400, 400, 20)
    measured = [k for k, w in plan if w == "measured"]
    assert plan[:20] == [("error" if i % 2 else "success", "burn_in") for i in range(20)]
    assert measured.count("success") == 400 and measured.count("error") == 400 and measured[-1] == "error"
    few = [k for k, _ in _plan(400, 3, 0)]
    assert few.count("error") == 3 and few[-1] == "error"


def test_disagreeing_store_cannot_decide() -> None:
    dual = rate_check(id="t.dual", phase="p", title="dual", successes=80, n=100, target=0.95)
    failed = _share(400, 400)
    gated = _gate(failed, dual)
    assert dual.status is Status.FAIL and gated.status is Status.INCONCLUSIVE
    assert "was FAIL, but dual-source agreement 80.0% is below 95% (t.dual), so the store cannot decide" in gated.detail
    agreeing = rate_check(id="t.dual", phase="p", title="dual", successes=400, n=400, target=0.95)
    assert _gate(failed, agreeing) is failed
    few = rate_check(id="t.dual", phase="p", title="dual", successes=5, n=5, target=0.95)
    assert few.status is Status.INCONCLUSIVE and _gate(failed, few) is failed  # too few copies is not disagreement

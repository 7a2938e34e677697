"""Billing arithmetic: the audit's recomputation, the sandbox's A6 billing, and the k6 point parsing."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from readiness.phases.funnels.b2b import expected_lineage, journeys_frame, parse_points
from sandbox.apps.a6_billing import PortalPolicy, charge_lineage
from sandbox.common.knobs import KnobError

LINES = ("base_cost_cents", "ai_charge_cents", "ai_markup_cents", "provider_fee_cents", "total_cents")


@pytest.mark.parametrize(("base", "charge", "markup", "fee", "total"), [
    (1234, 4936, 3702, 148, 5084),   # fee 148.08 → 148
    (37, 148, 111, 4, 152),          # fee 4.44 → 4
    (999, 3996, 2997, 120, 4116),    # fee 119.88 → 120
    (5, 20, 15, 1, 21),              # fee 0.6 → 1
    (1, 4, 3, 0, 4),                 # fee 0.12 → 0
])
def test_fee_3_pct_markup_4x_in_whole_cents(base: int, charge: int, markup: int, fee: int, total: int) -> None:
    want = {"base_cost_cents": base, "ai_charge_cents": charge, "ai_markup_cents": markup,
            "provider_fee_cents": fee, "total_cents": total}
    assert expected_lineage(base, 3, 4) == want
    assert {k: charge_lineage(base)[k] for k in LINES} == want


def test_half_cent_rounds_up_not_to_even() -> None:
    # 2.5 % of 20 cents is exactly 0.5 cent: half up gives 1, banker's rounding would give 0
    assert expected_lineage(5, 2.5, 4)["provider_fee_cents"] == 1
    assert charge_lineage(5, Decimal("2.5"))["provider_fee_cents"] == 1
    # 2.5 % of 100 cents is 2.5: half up 3 (banker's: 2)
    assert expected_lineage(25, "2.5", 4)["provider_fee_cents"] == 3


def test_float_inputs_do_not_leak_binary_rounding() -> None:
    # 0.35 as a binary float is 0.3499999…: taken as is, 0.35 % of 1000 cents (3.5) would round to 3
    assert expected_lineage(1000, 0.35, 1)["provider_fee_cents"] == 4
    assert expected_lineage(10, 3, 4.5)["ai_charge_cents"] == 45


def test_audit_and_sandbox_agree_over_a_range() -> None:
    for base in range(1, 3000, 7):
        for fee, markup in (("3", "4"), ("2.5", "4"), ("3", "4.5")):
            mine = expected_lineage(base, fee, markup)
            theirs = charge_lineage(base, Decimal(fee), Decimal(markup))
            assert mine == {k: theirs[k] for k in LINES}
            assert mine["total_cents"] == mine["base_cost_cents"] + mine["ai_markup_cents"] + mine["provider_fee_cents"]


@pytest.mark.parametrize("bad", [-1, 1.5, True, "12"])
def test_bad_base_cost_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match=rf"^base_cost_cents must be a non-negative integer, got {bad!r}$"):
        expected_lineage(bad, 3, 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=rf"^base_cost_cents must be a non-negative integer, got {bad!r}$"):
        charge_lineage(bad)  # type: ignore[arg-type]


def test_portal_policy_knob_validates_and_resets() -> None:
    knob = PortalPolicy()
    value = knob.validate({"provider_fee_pct": 2.5, "dedupe": False})
    assert value == {"enforce_contract_headers": True, "dedupe": False, "provider_fee_pct": "2.5", "ai_markup_x": "4"}
    knob.apply(value)
    assert knob.snapshot()["provider_fee_pct"] == "2.5"
    knob.reset()
    assert knob.snapshot()["provider_fee_pct"] == "3"
    for body, field, message in [
        ({"provider_fee_pct": 101}, "provider_portal.provider_fee_pct",
         "provider_portal.provider_fee_pct must be a number between 0 and 100"),
        ({"dedupe": "no"}, "provider_portal.dedupe", "provider_portal.dedupe must be true or false"),
        ({"fee": 1}, "provider_portal.fee", "provider_portal: unexpected field fee"),
        ([], "provider_portal", "provider_portal must be an object with enforce_contract_headers, dedupe, "
                                "provider_fee_pct, ai_markup_x"),
    ]:
        with pytest.raises(KnobError) as err:
            knob.validate(body)
        assert (err.value.field, err.value.message) == (field, message)


def _point(metric: str, value: float, **tags: str) -> str:
    return json.dumps({"type": "Point", "metric": metric,
                       "data": {"time": "2024-05-01T12:00:00Z", "value": value, "tags": tags}})


def test_journeys_frame_from_k6_points() -> None:
    lines = [json.dumps({"type": "Metric", "metric": "b2b_step", "data": {}}),
             _point("http_req_duration", 3.2, seq="0", step="landing"),
             *(_point("b2b_step", 1, seq="0", step=s) for s in ("landing", "register", "listing",
                                                                 "listing_readback", "billing")),
             _point("b2b_step", 1, seq="1", step="landing"), _point("b2b_step", 0, seq="1", step="register")]
    tags = {"seq": "0", "charge_id": "chg_1", "trace_id": "t-0", "fee_pct": "3", "markup_x": "4"}
    lines += [_point(f"b2b_{line}", v, **tags) for line, v in zip(LINES, (1234, 4936, 3702, 148, 5084), strict=True)]
    frame = journeys_frame(parse_points(lines), 3)
    assert frame["register"].tolist() == [1, 0, 0]  # journey 2 never started: counted as a failure
    assert frame.loc[0, "provider_fee_cents"] == 148 and frame.loc[0, "charge_id"] == "chg_1"
    assert frame["landing"].tolist() == [1, 1, 0]
    assert journeys_frame(parse_points([]), 2)["billing"].tolist() == [0, 0]

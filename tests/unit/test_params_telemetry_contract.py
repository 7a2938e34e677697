"""The telemetry_contract params section: defaults match docs/phases.md#06-telemetry-contract, bad values name the field."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from readiness.params.contracts import TELEMETRY_CONTRACT_FIELDS, TELEMETRY_REQUIRED_EVENTS
from readiness.params.model import ParamsError, load_params, parse_params

ROOT = Path(__file__).resolve().parents[2]
SANDBOX = ROOT / "params" / "sandbox.yaml"


@pytest.fixture(scope="module")
def base() -> dict:
    return yaml.safe_load(SANDBOX.read_text())


def errors_with(base: dict, **section: object) -> list[str]:
    data = copy.deepcopy(base)
    data["telemetry_contract"] = {**data.get("telemetry_contract", {}), **section}
    with pytest.raises(ParamsError) as info:
        parse_params(data, "test.yaml", {})
    return info.value.errors


def test_defaults_are_the_spec_contract(base: dict) -> None:
    c = load_params(SANDBOX).telemetry_contract
    assert len(TELEMETRY_REQUIRED_EVENTS) == 12 and c.required_events == list(TELEMETRY_REQUIRED_EVENTS)
    assert c.contract_fields == list(TELEMETRY_CONTRACT_FIELDS)
    assert c.sampling_success_rate == 0.10 and c.finance_events == ["checkout_completed", "revenue_settled"]
    without = {k: v for k, v in base.items() if k != "telemetry_contract"}
    assert parse_params(without, "test.yaml", {}).telemetry_contract == c  # the YAML repeats the defaults


@pytest.mark.parametrize(("section", "message"), [
    ({"required_events": ["identity_ok", "unknown"]},
     "telemetry_contract.required_events: 'unknown' is not an event type (it hides a wiring bug)"),
    ({"required_events": ["identity_ok", "Identity OK"]},
     "telemetry_contract.required_events: event types must be lower-case words joined by '_', got ['Identity OK']"),
    ({"required_events": ["page_published", "page_published"]},
     "telemetry_contract.required_events: duplicate event types ['page_published']"),
    ({"required_events": []},
     "telemetry_contract.required_events: List should have at least 1 item after validation, not 0"),
    ({"contract_fields": ["timestamp", "p59_ms"]},
     "telemetry_contract.contract_fields: unknown contract fields ['p59_ms'] (known: timestamp, app_id, route, "
     "status, p95_ms, trace_id, idempotency_key, finance_metrics, revenue_event_id)"),
    ({"contract_fields": ["timestamp", "timestamp"]}, "telemetry_contract.contract_fields: duplicate contract fields"),
    ({"finance_events": ["refund_issued"]},
     "telemetry_contract: finance_events ['refund_issued'] are not in required_events"),
    ({"high_volume_events": ["cta_impression", "revenue_settled"]},
     "telemetry_contract: high_volume_events: finance events are never sampled, got ['revenue_settled']"),
    ({"sampling_success_rate": 0}, "telemetry_contract.sampling_success_rate: Input should be greater than 0"),
    ({"sampling_success_rate": 1.5},
     "telemetry_contract.sampling_success_rate: Input should be less than or equal to 1"),
    ({"sampling_share_margin": 1}, "telemetry_contract.sampling_share_margin: Input should be less than 1"),
    ({"sampling_probe_events": 0},
     "telemetry_contract.sampling_probe_events: Input should be greater than or equal to 1"),
    ({"error_probe_events": "many"},
     "telemetry_contract.error_probe_events: Input should be a valid integer, unable to parse string as an "
     "integer (got 'many')"),
    ({"impression_path": "api/cta"}, "telemetry_contract.impression_path: path must start with '/', got 'api/cta'"),
    ({"arrival_quantile": 1}, "telemetry_contract.arrival_quantile: Input should be less than 1"),
    ({"sampling_rate": 0.1}, "telemetry_contract.sampling_rate: unknown key"),
])
def test_bad_values_name_the_field(base: dict, section: dict, message: str) -> None:
    assert errors_with(base, **section) == [message]

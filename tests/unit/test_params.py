"""Params validation: every bad input is an error naming the field; good input loads."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from readiness.params.model import ParamsError, interpolate, load_params, parse_params

ROOT = Path(__file__).resolve().parents[2]
SANDBOX = ROOT / "params" / "sandbox.yaml"


@pytest.fixture(scope="module")
def base() -> dict:
    return yaml.safe_load(SANDBOX.read_text())


def errors_of(data: dict, env: dict | None = None) -> list[str]:
    with pytest.raises(ParamsError) as info:
        parse_params(data, "test.yaml", env or {})
    return info.value.errors


def test_sandbox_params_load() -> None:
    p = load_params(SANDBOX)
    assert [a.id for a in p.apps] == [f"A{i}" for i in range(1, 9)]
    assert p.windows.profile == "quick" and p.windows.active.stable_window_s == 20
    assert "Quick profile" in p.profile_note and "full: 15 min" in p.profile_note
    assert len(p.digest()) == 64 and p.digest() == load_params(SANDBOX).digest()


def test_staging_example_loads_with_its_variables() -> None:
    env = {f"A{i}_BASE_URL": f"https://a{i}.staging.example.com" for i in range(1, 9)}
    p = load_params(ROOT / "params" / "staging.example.yaml", env=env)
    assert p.target == "external" and p.windows.profile == "full"
    assert p.app("A3").base_url == "https://a3.staging.example.com"


def test_staging_example_fails_loudly_without_its_variables() -> None:
    with pytest.raises(ParamsError) as info:
        load_params(ROOT / "params" / "staging.example.yaml", env={})
    assert "apps[0].base_url: environment variable A1_BASE_URL is not set (referenced as ${A1_BASE_URL})" \
        in info.value.errors


def test_unknown_top_level_key(base: dict) -> None:
    data = {**base, "thresholdz": {}}
    assert errors_of(data) == ["thresholdz: unknown key"]


def test_unknown_nested_key(base: dict) -> None:
    data = copy.deepcopy(base)
    data["thresholds"]["p59_ms"] = 120
    assert errors_of(data) == ["thresholds.p59_ms: unknown key"]


def test_wrong_type(base: dict) -> None:
    data = copy.deepcopy(base)
    data["thresholds"]["p95_ms"] = "fast"
    assert errors_of(data) == ["thresholds.p95_ms: Input should be a valid number, unable to parse string as a number (got 'fast')"]


def test_bad_url(base: dict) -> None:
    data = copy.deepcopy(base)
    data["apps"][2]["base_url"] = "htp://127.0.0.1:1"
    assert errors_of(data) == ["apps[2].base_url: invalid URL 'htp://127.0.0.1:1': expected http(s)://host[:port]"]


def test_url_with_bad_port(base: dict) -> None:
    data = copy.deepcopy(base)
    data["apps"][0]["base_url"] = "http://127.0.0.1:99999"
    assert errors_of(data) == ["apps[0].base_url: invalid URL 'http://127.0.0.1:99999': bad port"]


def test_duplicate_app_ids(base: dict) -> None:
    data = copy.deepcopy(base)
    data["apps"][1]["id"] = "A1"
    assert errors_of(data) == ["apps: duplicate app ids: A1"]


def test_window_zero(base: dict) -> None:
    data = copy.deepcopy(base)
    data["windows"]["quick"]["stable_window_s"] = 0
    assert errors_of(data) == ["windows.quick.stable_window_s: Input should be greater than 0"]


def test_window_negative(base: dict) -> None:
    data = copy.deepcopy(base)
    data["windows"]["full"]["burn_in_s"] = -5
    assert errors_of(data) == ["windows.full.burn_in_s: Input should be greater than 0"]


def test_environment_value(base: dict) -> None:
    data = {**base, "environment": "production"}
    assert errors_of(data) == ["environment: Input should be 'staging' or 'prod'"]


def test_missing_required_field(base: dict) -> None:
    data = copy.deepcopy(base)
    del data["apps"][4]["owner"]
    assert errors_of(data) == ["apps[4].owner: required field is missing"]


def test_unset_env_variable_names_field(base: dict) -> None:
    data = copy.deepcopy(base)
    data["apps"][3]["owner"] = "${OWNER_OF_A4}"
    assert errors_of(data) == ["apps[3].owner: environment variable OWNER_OF_A4 is not set (referenced as ${OWNER_OF_A4})"]


def test_env_interpolation_default_and_escape() -> None:
    out = interpolate({"a": "${X:-fallback}", "b": ["${Y}/x"], "c": "$${literal}"}, {"Y": "y"})
    assert out == {"a": "fallback", "b": ["y/x"], "c": "${literal}"}


def test_sandbox_target_must_be_loopback(base: dict) -> None:
    data = copy.deepcopy(base)
    data["apps"][5]["base_url"] = "http://10.0.0.5:8080"
    assert errors_of(data) == ["target sandbox: base_url of A6 is not a loopback address"]


def test_unknown_telemetry_app(base: dict) -> None:
    data = {**base, "telemetry_app": "A9"}
    assert errors_of(data) == ["telemetry_app: 'A9' is not one of the apps (A1, A2, A3, A4, A5, A6, A7, A8)"]


def test_route_path_must_start_with_slash(base: dict) -> None:
    data = copy.deepcopy(base)
    data["apps"][0]["smoke_action"]["path"] = "health"
    assert errors_of(data) == ["apps[0].smoke_action.path: path must start with '/', got 'health'"]


def test_bad_http_method(base: dict) -> None:
    data = copy.deepcopy(base)
    data["apps"][0]["critical_routes"][0]["method"] = "FETCH"
    assert errors_of(data) == [
        "apps[0].critical_routes[0].method: unknown HTTP method 'FETCH' (expected one of GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE)"]


def test_threshold_out_of_range(base: dict) -> None:
    data = copy.deepcopy(base)
    data["thresholds"]["success_rate_min"] = 1.5
    assert errors_of(data) == ["thresholds.success_rate_min: Input should be less than 1"]


def test_synthetic_tags_must_mark_test_runs(base: dict) -> None:
    data = copy.deepcopy(base)
    data["synthetic"]["tags"]["source"] = "prod"
    assert errors_of(data) == ["synthetic.tags: synthetic tags must include test_run: 'true' and source: 'qa'"]


def test_unknown_approval_action(base: dict) -> None:
    data = {**base, "approvals": [{"id": "HITL-1", "action": "delete_everything", "scope": "x", "granted_by": "ceo"}]}
    errs = errors_of(data)
    assert len(errs) == 1 and errs[0].startswith("approvals[0].action: Input should be 'load_over_60_vus'")


def test_required_secret_not_in_names(base: dict) -> None:
    data = copy.deepcopy(base)
    data["secrets"]["required"] = ["NOT_LISTED"]
    assert errors_of(data) == ["secrets: secrets.required lists names not in secrets.names: ['NOT_LISTED']"]


def test_several_errors_reported_together(base: dict) -> None:
    data = copy.deepcopy(base)
    data["thresholds"]["p95_ms"] = -1
    data["smoke"]["samples_per_app"] = 0
    assert errors_of(data) == ["thresholds.p95_ms: Input should be greater than 0",
                               "smoke.samples_per_app: Input should be greater than or equal to 1"]


def test_not_a_mapping() -> None:
    assert errors_of(["a", "b"]) == ["(top level): expected a mapping of keys to values"]  # type: ignore[arg-type]


def test_yaml_syntax_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apps: [\n  - id: A1\n")
    with pytest.raises(ParamsError) as info:
        load_params(bad)
    assert info.value.errors[0].startswith("line ") and "not valid YAML" in info.value.errors[0]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ParamsError) as info:
        load_params(tmp_path / "nope.yaml")
    assert info.value.errors == ["cannot read file: No such file or directory"]


def test_global_thresholds_are_the_default_slo(base: dict) -> None:
    data = copy.deepcopy(base)
    data["thresholds"]["p95_ms"] = 90
    data["thresholds"]["error_rate_max"] = 0.02
    data["apps"][2]["slo"] = {"p95_ms": 250}
    p = parse_params(data, "t.yaml", {})
    assert p.app("A1").slo.p95_ms == 90 and p.app("A1").slo.error_rate_max == 0.02
    assert p.app("A3").slo.p95_ms == 250 and p.app("A3").slo.error_rate_max == 0.02


def test_unknown_sandbox_flag(base: dict) -> None:
    data = copy.deepcopy(base)
    data["sandbox"]["flags"]["a9_magic"] = True
    assert errors_of(data) == ["sandbox.flags: unknown sandbox flags ['a9_magic'] "
                               "(known: a2_readiness, a7_async_leads, a8_banner_ttl, a8_demo_mode)"]


def test_sandbox_target_only_serves_its_apps(base: dict) -> None:
    data = copy.deepcopy(base)
    data["apps"][7]["id"] = "A9"
    data["telemetry_app"] = "A9"
    data["gate"]["enforcement_routes"][0]["app"] = "A9"
    for route in data["hardening"]["routes"]:
        route["app"] = "A9" if route["app"] == "A8" else route["app"]
    assert errors_of(data) == ["target sandbox: the sandbox serves A1, A2, A3, A4, A5, A6, A7, A8; no app A9"]


def test_smoke_rate_above_the_ceiling_is_refused(base: dict) -> None:
    data = copy.deepcopy(base)
    data["http"]["max_qps"] = 2
    data["latency"]["qps"] = 2
    assert errors_of(data) == ["smoke: 400 samples per app over the quick stable window (20 s) is 6.67 requests/s "
                               "per endpoint, above http.max_qps (2)"]


@pytest.mark.parametrize(("section", "key", "message"), [
    ("funnels", "identity_app", "funnels.identity_app: unknown app 'A42'"),
    ("b2b", "portal_app", "b2b.portal_app: unknown app 'A42'"),
    ("telemetry_contract", "probe_app", "telemetry_contract.probe_app: unknown app 'A42'"),
])
def test_contract_sections_name_known_apps(base: dict, section: str, key: str, message: str) -> None:
    data = copy.deepcopy(base)
    data.setdefault(section, {})[key] = "A42"
    assert errors_of(data) == [message]


def test_hardening_routes_name_known_apps_and_identities(base: dict) -> None:
    data = copy.deepcopy(base)
    data["hardening"]["routes"][0]["app"] = "A42"
    assert errors_of(data) == ["hardening.routes[0].app: unknown app 'A42'"]
    data = copy.deepcopy(base)
    data["hardening"]["routes"][0]["identity"] = "auditor"
    assert errors_of(data) == ["hardening.routes[0].identity: 'auditor' is not one of synthetic.identities "
                               "(provider, student)"]


def test_oidc_client_secret_must_be_a_declared_secret_name(base: dict) -> None:
    data = copy.deepcopy(base)
    data["funnels"]["oidc_client_secret"] = "IDP_SECRET"
    assert errors_of(data) == ["funnels.oidc_client_secret: 'IDP_SECRET' is not in secrets.names"]


def test_a_telemetry_producer_must_be_a_registered_phase(base: dict) -> None:
    base.setdefault("telemetry_contract", {})["producers"] = {"checkout_completed": "05_payments"}
    assert any("telemetry_contract.producers.checkout_completed: unknown phase '05_payments'" in e
               for e in errors_of(base)), errors_of(base)

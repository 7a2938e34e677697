"""What an ecosystem declares it provides, a telemetry store that may be absent, ISO 4217
currencies and a Stripe-compatible API base: good input loads, bad input names the field."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from readiness.params.model import CAPABILITIES, Params, ParamsError, load_params, parse_params
from readiness.params.sections import ISO_4217_CODES
from readiness.probe import payments

ROOT = Path(__file__).resolve().parents[2]
SANDBOX = ROOT / "params" / "sandbox.yaml"
Errors = Callable[[Callable[[dict], object]], list[str]]
KNOWN = ("telemetry_store, payments, identity_provider, idempotency_contract, admin_api, orchestration, "
         "cta_bandit, command_center, provider_portal, marketing_site, guided_onboarding")


def _parse(data: dict[str, Any], change: Callable[[dict[str, Any]], object]) -> Params:
    data = copy.deepcopy(data)
    change(data)
    return parse_params(data, "test.yaml", {})


# -- capabilities ---------------------------------------------------------------------------
def test_capabilities_default_to_all_of_them() -> None:
    params = load_params(SANDBOX)
    assert params.capabilities == list(CAPABILITIES) and len(CAPABILITIES) == 11
    assert all(params.provides(name) for name in CAPABILITIES)


def test_declared_capabilities_are_what_the_ecosystem_provides(sandbox_params_data: dict[str, Any]) -> None:
    params = _parse(sandbox_params_data, lambda d: d.update(capabilities=["payments", "marketing_site"]))
    assert params.capabilities == ["payments", "marketing_site"]
    assert params.provides("payments") and not params.provides("telemetry_store")


def test_an_empty_list_declares_nothing(sandbox_params_data: dict[str, Any]) -> None:
    params = _parse(sandbox_params_data, lambda d: d.update(capabilities=[]))
    assert not any(params.provides(name) for name in CAPABILITIES)


def test_asking_for_an_unknown_capability_is_an_error() -> None:
    with pytest.raises(ValueError) as err:
        load_params(SANDBOX).provides("payment")
    assert str(err.value) == f"unknown capability 'payment' (known: {KNOWN})"


def test_unknown_capabilities_are_refused(params_errors: Errors) -> None:
    assert params_errors(lambda d: d.update(capabilities=["payments", "paymnets", "crm"])) == [
        f"capabilities: unknown capabilities ['paymnets', 'crm'] (known: {KNOWN})"]


def test_duplicate_capabilities_are_refused(params_errors: Errors) -> None:
    assert params_errors(lambda d: d.update(capabilities=["payments", "admin_api", "payments", "admin_api"])) == [
        "capabilities: duplicate capabilities: payments, admin_api"]


def test_capabilities_must_be_a_list(params_errors: Errors) -> None:
    assert params_errors(lambda d: d.update(capabilities="payments")) == [
        "capabilities: Input should be a valid list (got 'payments')"]


def test_the_phase_registry_knows_the_same_capabilities() -> None:
    registry = pytest.importorskip("readiness.params.registry")
    assert set(registry.CAPABILITIES) == set(CAPABILITIES)


# -- telemetry_app ----------------------------------------------------------------------------
def test_a_null_telemetry_app_drops_the_telemetry_store_from_the_default(sandbox_params_data: dict[str, Any]) -> None:
    params = _parse(sandbox_params_data, lambda d: d.update(telemetry_app=None))
    assert params.telemetry_app is None
    assert params.capabilities == [c for c in CAPABILITIES if c != "telemetry_store"]
    assert not params.provides("telemetry_store") and params.provides("payments")


def test_a_null_telemetry_app_with_a_declared_telemetry_store_is_refused(params_errors: Errors) -> None:
    assert params_errors(lambda d: d.update(telemetry_app=None, capabilities=["telemetry_store", "payments"])) == [
        "capabilities: telemetry_store is declared but telemetry_app is null; name the app that stores telemetry "
        "in telemetry_app, or remove telemetry_store from capabilities"]


def test_a_null_telemetry_app_with_capabilities_without_a_store_loads(sandbox_params_data: dict[str, Any]) -> None:
    params = _parse(sandbox_params_data, lambda d: d.update(telemetry_app=None, capabilities=["payments"]))
    assert params.capabilities == ["payments"]


def test_a_set_telemetry_app_must_be_one_of_the_apps(params_errors: Errors) -> None:
    assert params_errors(lambda d: d.update(telemetry_app="A9")) == [
        "telemetry_app: 'A9' is not one of the apps (A1, A2, A3, A4, A5, A6, A7, A8)"]


def test_the_snapshot_of_a_storeless_configuration_validates_again(sandbox_params_data: dict[str, Any]) -> None:
    params = _parse(sandbox_params_data, lambda d: d.update(telemetry_app=None))
    again = parse_params(params.model_dump(mode="json"), "params.json", {})
    assert again == params and again.digest() == params.digest()


# -- currencies -------------------------------------------------------------------------------
def test_currencies_are_normalised_to_lower_case(sandbox_params_data: dict[str, Any]) -> None:
    def change(d: dict[str, Any]) -> None:
        d["stripe"]["currency"] = "USD"
        d["b2b"] = {**d.get("b2b", {}), "currency": "Eur"}
    params = _parse(sandbox_params_data, change)
    assert (params.stripe.currency, params.b2b.currency) == ("usd", "eur")


@pytest.mark.parametrize(("section", "value"), [
    ("stripe", "dollars"), ("stripe", "usdd"), ("b2b", "xyz"), ("b2b", "HRK"), ("stripe", "xxx")])
def test_a_currency_that_is_not_iso_4217_is_refused(params_errors: Errors, section: str, value: str) -> None:
    assert params_errors(lambda d: d.setdefault(section, {}).update(currency=value)) == [
        f"{section}.currency: {value!r} is not an ISO 4217 currency code (three letters, e.g. usd, eur, gbp)"]


def test_the_currency_list_is_the_full_active_list() -> None:
    assert len(ISO_4217_CODES) >= 175
    assert {"USD", "EUR", "GBP", "JPY", "CHF", "INR", "BRL", "ZAR", "VES", "SLE", "ZWG", "XCG"} <= ISO_4217_CODES
    assert not {"HRK", "DEM", "FRF", "ZWL", "XXX", "XTS"} & ISO_4217_CODES
    assert all(len(c) == 3 and c.isalpha() and c.isupper() for c in ISO_4217_CODES)


# -- stripe.api_base --------------------------------------------------------------------------
def test_api_base_defaults_to_none() -> None:
    assert load_params(SANDBOX).stripe.api_base is None


def test_a_set_api_base_is_used_for_an_external_target(sandbox_params_data: dict[str, Any]) -> None:
    params = _parse(sandbox_params_data, lambda d: d["stripe"].update(api_base="https://stripe-proxy.example.com/"))
    assert params.stripe.api_base == "https://stripe-proxy.example.com"
    assert payments.api_base(params.model_copy(update={"target": "external"})) == "https://stripe-proxy.example.com"


def test_a_set_api_base_is_used_for_the_sandbox_without_asking_it(sandbox_params_data: dict[str, Any],
                                                                  tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        d["stripe"]["api_base"] = "http://127.0.0.1:12111"
        d["sandbox"]["state_dir"] = str(tmp_path)  # no sandbox runs there: it must not be asked
    assert payments.api_base(_parse(sandbox_params_data, change)) == "http://127.0.0.1:12111"


@pytest.mark.parametrize(("value", "message"), [
    ("localhost:12111", "invalid URL 'localhost:12111': expected http(s)://host[:port]"),
    ("ftp://127.0.0.1:12111", "invalid URL 'ftp://127.0.0.1:12111': expected http(s)://host[:port]"),
    ("http://127.0.0.1:999999", "invalid URL 'http://127.0.0.1:999999': bad port"),
    ("https://api.example.com/?x=1", "invalid URL 'https://api.example.com/?x=1': a base URL has no query or fragment"),
])
def test_a_bad_api_base_is_refused(params_errors: Errors, value: str, message: str) -> None:
    assert params_errors(lambda d: d["stripe"].update(api_base=value)) == [f"stripe.api_base: {message}"]


def test_payments_can_be_undeclared_with_the_stripe_secret_still_required(sandbox_params_data: dict[str, Any]) -> None:
    params = _parse(sandbox_params_data, lambda d: d.update(capabilities=["telemetry_store"]))
    assert not params.provides("payments") and "STRIPE_SECRET_KEY" in params.secrets.required


def test_dollars_in_a_params_file_is_refused_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(SANDBOX.read_text().replace("  currency: usd ", "  currency: dollars "))
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert info.value.errors == [
        "stripe.currency: 'dollars' is not an ISO 4217 currency code (three letters, e.g. usd, eur, gbp)"]

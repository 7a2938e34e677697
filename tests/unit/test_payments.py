"""Payments without a network: key modes, the live-key approval, price keys, the local Stripe's Prices."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from readiness.core import aio
from readiness.core.runfolder import RunFolder
from readiness.params.model import Params, load_params
from readiness.params.sections import Approval
from readiness.phasekit.context import Phase
from readiness.probe import payments
from sandbox import launcher

ROOT = Path(__file__).resolve().parents[2]
LIVE_KEY = "sk_live_" + "x7" * 16


@pytest.fixture()
def params() -> Params:
    return load_params(ROOT / "params" / "sandbox.yaml")


def _phase(params: Params, tmp_path: Path) -> Phase:
    params_file = ROOT / "params" / "sandbox.yaml"
    return Phase(name="05_monetization", params=params, params_file=params_file,
                 run=RunFolder.create(tmp_path / "outputs", params, params_file, mode="interactive"))


def _open(phase: Phase) -> payments.StripeAccess:
    async def go() -> payments.StripeAccess:
        async with phase.client() as client:
            return payments.open_stripe(phase.params, phase.run, client, phase=phase.name, purpose="charge",
                                        base_url="http://127.0.0.1:28649")
    return aio.run(go())


def _log(phase: Phase) -> list[dict]:
    path = phase.run.path("reports/hitl_approvals.log")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize(("key", "mode"), [("sk_test_abc", "test"), ("rk_test_abc", "test"),
                                           ("sk_live_abc", "live"), ("rk_live_abc", "live")])
def test_key_mode_from_prefix(key: str, mode: str) -> None:
    assert payments.key_mode(key) == mode


def test_a_key_of_unknown_shape_is_refused_without_showing_it() -> None:
    with pytest.raises(payments.PaymentsError) as err:
        payments.key_mode("pk_test_secretvalue")
    assert str(err.value) == ("STRIPE_SECRET_KEY is not a Stripe secret key (expected sk_test_… or sk_live_…); "
                              "value not shown")


def test_missing_key_is_a_clear_error(params: Params, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STRIPE_SECRET_KEY", raising=False)
    with pytest.raises(payments.PaymentsError) as err:
        _open(_phase(params, tmp_path))
    assert str(err.value) == "STRIPE_SECRET_KEY is not set in the environment"


def test_live_key_is_refused_without_approval_and_the_refusal_logged(params: Params, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_SECRET_KEY", LIVE_KEY)
    phase = _phase(params, tmp_path)
    with pytest.raises(payments.LiveModeRefused) as err:
        _open(phase)
    assert str(err.value) == ("STRIPE_SECRET_KEY is a live-mode key and live-mode Stripe use is not approved: "
                              "refused: no approval for this action in params.approvals")
    [entry] = _log(phase)
    assert (entry["kind"], entry["action"], entry["phase"]) == ("refused", "stripe_live_charge", "05_monetization")
    assert LIVE_KEY not in phase.run.path("reports/hitl_approvals.log").read_text()


def test_live_key_is_used_with_an_approval_and_the_approval_logged(params: Params, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_SECRET_KEY", LIVE_KEY)
    approval = Approval(id="HITL-LIVE-1", action="stripe_live_charge", scope="one micro charge",
                        granted_by="release-lead", environment="staging")
    phase = _phase(params.model_copy(update={"approvals": [approval]}), tmp_path)
    access = _open(phase)
    assert (access.mode, access.approval_id, access.api_base) == ("live", "HITL-LIVE-1", "http://127.0.0.1:28649")
    [entry] = _log(phase)
    assert (entry["kind"], entry["approval_id"]) == ("approved", "HITL-LIVE-1")
    assert entry["detail"] == "live-mode Stripe key used to charge"


def test_test_key_needs_no_approval_and_logs_nothing(params: Params, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_" + "a" * 24)
    phase = _phase(params, tmp_path)
    assert _open(phase).mode == "test"
    assert _log(phase) == []


def test_price_creation_key_is_a_digest_of_what_the_price_is(params: Params) -> None:
    p = params.stripe
    key = payments.creation_key(p, "test")
    assert key == payments.creation_key(p.model_copy(), "test") and key.startswith("readiness-price-")
    assert key != payments.creation_key(p.model_copy(update={"micro_amount_cents": 60}), "test")
    assert key != payments.creation_key(p, "live")


def test_api_base_is_stripe_for_an_external_target(params: Params) -> None:
    assert payments.api_base(params.model_copy(update={"target": "external"})) == "https://api.stripe.com"


def test_api_base_of_a_sandbox_that_is_not_running(params: Params, tmp_path: Path) -> None:
    stopped = params.model_copy(update={"sandbox": params.sandbox.model_copy(update={"state_dir": str(tmp_path)})})
    with pytest.raises(payments.PaymentsError) as err:
        payments.api_base(stopped)
    assert str(err.value) == ("the sandbox's local Stripe API is not running (it runs with A5: start the sandbox "
                              "with A5 among its apps)")


def test_local_stripe_port_is_just_below_the_apps_and_only_with_a5() -> None:
    apps = [launcher.AppSpec("A8", 28648), launcher.AppSpec("A5", 28645), launcher.AppSpec("A1", 28641)]
    assert launcher.stripe_spec(apps) == launcher.AppSpec("localstripe", 28640)
    assert launcher.stripe_spec(apps, 28649) == launcher.AppSpec("localstripe", 28649)
    assert launcher.stripe_spec([launcher.AppSpec("A1", 28641)]) is None


@pytest.mark.filterwarnings("ignore:Bare functions are deprecated:DeprecationWarning")  # localstripe's own routes
def test_local_prices_follow_stripe_rules(tmp_path: Path) -> None:
    from localstripe.errors import UserError
    from localstripe.resources import store

    from sandbox import stripe_extras, stripe_local

    state = stripe_local.state_file(tmp_path)
    stripe_local.use_state_file(state)

    async def scenario() -> None:
        first = stripe_extras.Price(currency="usd", unit_amount="50", product_data={"name": "Micro QA Charge"},
                                    lookup_key="micro", metadata={"readiness_lookup_key": "micro"})
        with pytest.raises(UserError) as taken:
            stripe_extras.Price(currency="usd", unit_amount=50, product_data={"name": "x"}, lookup_key="micro")
        assert taken.value.body["error"]["message"] == f"A price (`{first.id}`) already uses that lookup key."
        with pytest.raises(UserError) as bad:
            stripe_extras.Price(currency="dollars", unit_amount=50, product_data={"name": "x"})
        assert bad.value.body["error"]["message"] == "currency must be a three-letter ISO code"
        moved = stripe_extras.Price(currency="usd", unit_amount=60, product_data={"name": "x"}, lookup_key="micro",
                                    transfer_lookup_key="true")
        assert first.lookup_key is None and moved.lookup_key == "micro" and first.unit_amount == 50
        listed = stripe_extras.Price._api_list_all("/v1/prices", lookup_keys=["micro"])
        assert [p.id for p in listed._list] == [moved.id]
        assert stripe_extras.Price._api_list_all("/v1/prices", currency="eur")._list == []

    try:
        asyncio.run(scenario())
        assert state.is_file() and state.stat().st_mode & 0o777 == 0o600
    finally:
        store.clear()

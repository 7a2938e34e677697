"""Payments end to end on the sandbox's own ports (28611–28618, local Stripe on 28610).

A private sandbox (its own state folder and Stripe store) so that prices, payments and
ledgers created here never mix with the session-wide sandbox the notebooks audit. The
phase functions run against it exactly as the notebook runs them.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from readiness.core import aio
from readiness.core.check import Status
from readiness.core.runfolder import RunFolder
from readiness.params.model import Params, load_params
from readiness.phasekit import stripe_price
from readiness.phasekit.context import Phase
from readiness.phases.monetization import checkout as monetization
from readiness.phases.monetization import revenue_lineage
from readiness.probe import payments
from readiness.probe.sandbox_control import ensure_sandbox, stop_sandbox
from sandbox import launcher, stripe_local

pytestmark = pytest.mark.integration

BASE = 28610
ROOT = Path(__file__).resolve().parents[2]
TAG_HEADERS = {"X-Test-Run": "true", "X-Source": "qa", "X-Namespace": "simulated_audit"}


def _params_file(folder: Path, approvals: list[dict] | None = None) -> Path:
    """The sandbox params on this module's ports, its own state folder, and ``approvals``."""
    data = yaml.safe_load((ROOT / "params" / "sandbox.yaml").read_text())
    for i, app in enumerate(data["apps"], 1):
        app["base_url"] = f"http://127.0.0.1:{BASE + i}"
    data["sandbox"]["state_dir"] = str(folder.parent / "pay-sandbox-state")
    data["rubric_file"] = str(ROOT / "params" / "rubric.yaml")
    data["approvals"] = approvals or []
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def pay_params(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Params]:
    folder = tmp_path_factory.mktemp("payments")
    params = load_params(_params_file(folder / "p"))
    saved = dict(os.environ)
    ensure_sandbox(params)
    try:
        yield params
    finally:
        stop_sandbox(params)
        os.environ.clear()
        os.environ.update(saved)


def _phase(params: Params, folder: Path, name: str = "05_monetization") -> Phase:
    folder.mkdir(parents=True, exist_ok=True)
    params_file = folder / "params.yaml"
    params_file.write_text("{}")
    return Phase(name=name, params=params, params_file=params_file,
                 run=RunFolder.create(folder / "outputs", params, params_file, mode="interactive"))


def _state(params: Params) -> launcher.SandboxState:
    state = launcher.status(Path(params.sandbox.state_dir).resolve())
    assert state is not None
    return state


def _headers(**extra: str) -> dict[str, str]:
    return {"X-Idempotency-Key": uuid.uuid4().hex, "X-Trace-Id": uuid.uuid4().hex, **TAG_HEADERS, **extra}


def _listening_addresses(port: int) -> list[str]:
    """Local addresses of the TCP sockets listening on ``port`` (IPv4 and IPv6), from /proc."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.rsplit(":", 1)
            if state == "0A" and int(port_hex, 16) == port:
                found.append(address)
    return found


def test_local_stripe_listens_on_loopback_only_with_its_state_in_the_state_folder(pay_params: Params) -> None:
    state = _state(pay_params)
    assert state.stripe_url == f"http://127.0.0.1:{BASE}"
    assert _listening_addresses(BASE) == ["0100007F"]  # 127.0.0.1, and nothing on IPv6 or 0.0.0.0
    assert launcher.health(state)[launcher.STRIPE_ID] is True
    store = stripe_local.state_file(state.state_dir)
    httpx.post(f"{state.stripe_url}/v1/products", data={"name": "state probe"},
               auth=(os.environ["STRIPE_SECRET_KEY"], ""))
    assert store.is_file() and store.stat().st_mode & 0o777 == 0o600
    assert time.time() - store.stat().st_mtime < 30
    assert (state.state_dir / "logs" / "localstripe.log").is_file()


def test_price_is_created_once_over_two_resolves_and_two_runs(pay_params: Params, tmp_path: Path) -> None:
    first, res1 = stripe_price.price_step(_phase(pay_params, tmp_path / "r1"), "monetization.price")
    again, res2 = stripe_price.price_step(_phase(pay_params, tmp_path / "r1b"), "monetization.price")
    assert first[-1].status is Status.PASS and again[-1].status is Status.PASS, (first[-1].detail, again[-1].detail)
    assert res1 is not None and res2 is not None
    assert res1.how == "created" and res2.how == "lookup_key" and res2.price_id == res1.price_id
    assert (res1.unit_amount, res1.currency) == (50, "usd")
    # A second run after a restart of the sandbox: the local Stripe kept its store.
    stop_sandbox(pay_params)
    ensure_sandbox(pay_params)
    _, res3 = stripe_price.price_step(_phase(pay_params, tmp_path / "r2"), "monetization.price")
    assert res3 is not None and res3.price_id == res1.price_id and res3.how == "lookup_key"
    key = os.environ["STRIPE_SECRET_KEY"]
    listed = httpx.get(f"{_state(pay_params).stripe_url}/v1/prices", params={"limit": 100}, auth=(key, "")).json()
    assert [p["id"] for p in listed["data"] if p["lookup_key"] == "micro_qa_charge"] == [res1.price_id]


def test_price_is_found_by_metadata_when_its_lookup_key_is_gone(pay_params: Params, tmp_path: Path) -> None:
    phase = _phase(pay_params, tmp_path)
    _, res = stripe_price.price_step(phase, "monetization.price")
    assert res is not None
    key, url = os.environ["STRIPE_SECRET_KEY"], _state(pay_params).stripe_url
    cleared = httpx.post(f"{url}/v1/prices/{res.price_id}", data={"lookup_key": ""}, auth=(key, ""))
    assert cleared.status_code == 200 and cleared.json()["lookup_key"] is None
    try:
        _, again = stripe_price.price_step(phase, "monetization.price")
        assert again is not None and (again.price_id, again.how) == (res.price_id, "metadata")
    finally:
        httpx.post(f"{url}/v1/prices/{res.price_id}", data={"lookup_key": "micro_qa_charge"}, auth=(key, ""))


def test_live_key_is_refused_without_approval_and_used_with_one(pay_params: Params, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_live_" + uuid.uuid4().hex)
    phase = _phase(pay_params, tmp_path / "refused")
    refused = monetization.run_micro_checkout(phase)
    assert list(refused["status"]) == ["BLOCKED"]
    checks = {c.id: c for c in phase.run.read_checks(phase.name)}
    assert checks["monetization.checkout.completed"].status is Status.BLOCKED
    assert "live-mode Stripe use is not approved" in checks["monetization.checkout.completed"].detail
    log = [json.loads(line) for line in phase.run.path("reports/hitl_approvals.log").read_text().splitlines()]
    assert [(e["kind"], e["action"]) for e in log] == [("refused", "stripe_live_charge")]
    approved = pay_params.model_copy(update={"approvals": load_params(_params_file(tmp_path / "a", approvals=[{
        "id": "HITL-STRIPE-LIVE-1", "action": "stripe_live_charge", "scope": "one micro charge",
        "granted_by": "release-lead", "environment": "staging"}])).approvals})
    phase = _phase(approved, tmp_path / "approved")
    checks, res = stripe_price.price_step(phase, "monetization.price")
    assert checks[-1].status is Status.PASS and res is not None
    log = [json.loads(line) for line in phase.run.path("reports/hitl_approvals.log").read_text().splitlines()]
    assert [(e["kind"], e["action"], e["approval_id"]) for e in log] == [
        ("approved", "stripe_live_charge", "HITL-STRIPE-LIVE-1")]
    assert os.environ["STRIPE_SECRET_KEY"] not in phase.run.path("reports/hitl_approvals.log").read_text()
    assert json.loads(phase.run.path(stripe_price.PRICE).read_text())["approval_id"] == "HITL-STRIPE-LIVE-1"


def test_micro_checkout_credits_the_ledger_and_reaches_the_telemetry_store(pay_params: Params,
                                                                            tmp_path: Path) -> None:
    phase = _phase(pay_params, tmp_path)
    monetization.resolve_price(phase)
    monetization.run_micro_checkout(phase)
    monetization.verify_ledger(phase)
    revenue_lineage.verify_revenue_arrival(phase)
    revenue_lineage.check_finance_tiles(phase)
    revenue_lineage.write_reports(phase)
    checks = {c.id: c for c in phase.run.read_checks(phase.name)}
    for cid in ("monetization.price", "monetization.checkout.session_created", "monetization.checkout.completed",
                "monetization.checkout.stripe_confirmed", "monetization.checkout.amount",
                "monetization.checkout.tagged", "monetization.ledger.credited", "monetization.ledger.balance_delta",
                "monetization.lineage.checkout_completed_arrival", "monetization.lineage.revenue_settled_arrival",
                "monetization.lineage.revenue_fields"):
        assert checks[cid].status is Status.PASS, (cid, checks[cid].detail)
    assert checks["monetization.lineage.revenue_settled_arrival"].observed < 5
    for cid, tile in (("monetization.tiles.diagnostics_visible", "finance_revenue_diagnostics"),
                      ("monetization.tiles.live_excludes_synthetic", "finance_revenue_live")):
        if checks[cid].status is Status.INCONCLUSIVE and "has no tile" in checks[cid].detail:
            assert f"has no tile '{tile}'" in checks[cid].detail
    trace_text = phase.run.path(monetization.TRACE).read_text()
    trace = json.loads(trace_text)
    assert trace["payment_at_stripe"]["metadata"]["namespace"] == "simulated_audit"
    assert trace["payment_at_stripe"]["livemode"] is False and trace["stripe"]["mode"] == "test"
    for forbidden in (os.environ["STRIPE_SECRET_KEY"], "4242424242424242", "4242"):
        assert forbidden not in trace_text
    for artifact in (revenue_lineage.RESULTS, revenue_lineage.REPORT, "charts/monetization_revenue_lineage.svg"):
        assert phase.run.path(artifact).is_file(), artifact
    results = json.loads(phase.run.path(revenue_lineage.RESULTS).read_text())
    assert results["checkout"]["stripe_mode"] == "test" and results["checkout"]["amount_cents"] == 50
    assert [s["stage"] for s in results["stages"]][0] == "A5 checkout session"


def _session(a5: str, price_id: str, user: str = "ledger-user") -> dict:
    created = httpx.post(f"{a5}/api/checkout/sessions", json={"price_id": price_id, "user_id": user},
                         headers=_headers())
    assert created.status_code == 201, created.text
    return created.json()


def test_completion_contract_declines_replays_and_ledger(pay_params: Params, tmp_path: Path) -> None:
    state = _state(pay_params)
    a5, a8 = state.apps["A5"], state.apps["A8"]
    _, res = stripe_price.price_step(_phase(pay_params, tmp_path), "monetization.price")
    assert res is not None
    session = _session(a5, res.price_id)  # a Stripe price joins A5's catalogue
    assert res.price_id in [p["id"] for p in httpx.get(f"{a5}/api/prices").json()["prices"]]
    complete = f"{a5}/api/checkout/sessions/{session['id']}/complete"
    missing = httpx.post(complete, json={"payment_method": "pm_card_visa"}, headers={"X-Trace-Id": "t"})
    assert missing.status_code == 428
    assert missing.json()["error"] == "missing required header: X-Idempotency-Key"
    bad = httpx.post(complete, json={"payment_method": "4242424242424242"}, headers=_headers())
    assert (bad.status_code, bad.json()["error"]) == (422, "payment_method must be a payment method id (pm_…)")
    declined = httpx.post(complete, json={"payment_method": "pm_card_chargeCustomerFail"}, headers=_headers())
    assert (declined.status_code, declined.json()["error"]) == (402, "payment declined: Your card was declined.")
    assert httpx.get(f"{a5}/api/checkout/sessions/{session['id']}").json()["status"] == "pending"
    headers = _headers()
    paid = httpx.post(complete, json={"payment_method": "pm_card_visa"}, headers=headers)
    assert paid.status_code == 200, paid.text
    body = paid.json()
    assert (body["status"], body["amount_cents"], body["stripe_mode"], body["credits_granted"]) == (
        "complete", 50, "test", 1)
    replay = httpx.post(complete, json={"payment_method": "pm_card_visa"}, headers=headers)
    assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true" and replay.json() == body
    reused = httpx.post(complete, json={"payment_method": "pm_card_visa", "x": 1}, headers=headers)
    assert (reused.status_code, reused.json()["error"]) == (
        422, "X-Idempotency-Key was already used with a different request body")
    second = httpx.post(complete, json={"payment_method": "pm_card_visa"}, headers=_headers())
    assert (second.status_code, second.json()["error"]) == (
        409, f"checkout session {session['id']} is already complete")
    ledger = httpx.get(f"{a5}/api/ledger/ledger-user").json()
    assert [e["session_id"] for e in ledger["entries"]].count(session["id"]) == 1
    assert ledger["balance"] == sum(e["credits"] for e in ledger["entries"])
    deadline, events = time.monotonic() + 10, []
    while time.monotonic() < deadline and len(events) < 2:
        query = {"trace_id": headers["X-Trace-Id"]}
        events = [e for e in httpx.get(f"{a8}/api/telemetry/events", params=query).json()["events"]
                  if e["event_type"] in ("checkout_completed", "revenue_settled")]
        time.sleep(0.1)
    assert sorted(e["event_type"] for e in events) == ["checkout_completed", "revenue_settled"]
    for e in events:
        assert e["finance_metrics"] == {"amount_cents": 50, "currency": "usd", "stripe_mode": "test"}
        assert e["revenue_event_id"] == body["revenue_event_id"]
        assert e["tags"]["namespace"] == "simulated_audit"
    assert len({e["idempotency_key"] for e in events}) == 2  # A8 dedupes on key + trace: they must differ


def test_existing_session_contract_still_holds(pay_params: Params) -> None:
    a5 = _state(pay_params).apps["A5"]
    assert httpx.post(f"{a5}/api/checkout/sessions", json={"price_id": "price_micro_qa"}).status_code == 428
    headers = _headers()
    first = httpx.post(f"{a5}/api/checkout/sessions", json={"price_id": "price_micro_qa"}, headers=headers)
    again = httpx.post(f"{a5}/api/checkout/sessions", json={"price_id": "price_micro_qa"}, headers=headers)
    other = httpx.post(f"{a5}/api/checkout/sessions", json={"price_id": "price_credits_100"}, headers=headers)
    assert first.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json() and other.status_code == 422
    no_user = httpx.post(f"{a5}/api/checkout/sessions/{first.json()['id']}/complete",
                         json={"payment_method": "pm_card_visa"}, headers=_headers())
    assert (no_user.status_code, no_user.json()["error"]) == (
        422, "user_id is required: give it when creating or completing the session")


def test_stripe_idempotency_keys_return_the_first_price(pay_params: Params, tmp_path: Path) -> None:
    """The guard behind "never two prices": a repeated creation key returns the first object."""
    p = pay_params.stripe.model_copy(update={"lookup_key": f"idem_{uuid.uuid4().hex[:8]}"})
    phase = _phase(pay_params, tmp_path)

    async def create_twice() -> tuple[str, str]:
        async with phase.client() as client:
            access = payments.open_stripe(pay_params, phase.run, client, phase=phase.name, purpose="test",
                                          synthetic_identity=phase.synthetic_identity)
            params = {"currency": "usd", "unit_amount": 50, "lookup_key": p.lookup_key,
                      "product_data": {"name": "idempotency probe"}}
            opts = {"idempotency_key": payments.creation_key(p, access.mode)}
            a = await access.client.v1.prices.create_async(params, opts)
            b = await access.client.v1.prices.create_async(params, opts)
            return a.id, b.id

    first, second = aio.run(create_twice())
    assert first == second


def test_a_refused_creation_writes_nothing_and_an_existing_price_asks_no_one(pay_params: Params,
                                                                             tmp_path: Path) -> None:
    p = pay_params.stripe.model_copy(update={"lookup_key": f"refused_{uuid.uuid4().hex[:8]}"})
    phase = _phase(pay_params, tmp_path)
    asked: list[str] = []

    def refuse() -> str:
        asked.append("refuse")
        return "no production_write approval"

    async def resolve(refusal) -> payments.PriceResolution:
        async with phase.client() as client:
            access = payments.open_stripe(pay_params, phase.run, client, phase=phase.name, purpose="test",
                                          synthetic_identity=phase.synthetic_identity)
            return await payments.resolve_or_create_price(access, p, creation_refused=refusal)

    with pytest.raises(payments.CreationRefused, match=f"^the micro price '{p.lookup_key}' does not exist and "
                                                       "creating it is not allowed: no production_write approval$"):
        aio.run(resolve(refuse))
    created = aio.run(resolve(lambda: None))
    assert created.how == "created"  # nothing was created by the refused attempt, or this would be a lookup
    asked.clear()
    assert aio.run(resolve(refuse)).price_id == created.price_id and asked == []


def test_without_a5_there_is_no_local_stripe(tmp_path: Path) -> None:
    apps = [launcher.AppSpec("A1", 28641), launcher.AppSpec("A8", 28642)]
    try:
        state = launcher.up(apps, tmp_path, timeout_s=20)
        assert state.stripe_url is None and state.stripe_pid is None
        assert set(launcher.health(state)) == {"A1", "A8"}
        assert launcher.status(tmp_path) == state
    finally:
        assert launcher.down(tmp_path) == ["A1", "A8"]
    assert launcher.status(tmp_path) is None and _listening_addresses(28640) == []


def test_busy_local_stripe_port_is_a_clear_error_and_starts_nothing(tmp_path: Path) -> None:
    import socket

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 28643))
        blocker.listen()
        with pytest.raises(launcher.SandboxError) as err:
            launcher.up([launcher.AppSpec("A5", 28644)], tmp_path, timeout_s=20)
        assert str(err.value) == "cannot start localstripe: port 28643 on 127.0.0.1 is already in use"
        assert launcher.status(tmp_path) is None and _listening_addresses(28644) == []


def test_local_stripe_stops_with_the_sandbox(tmp_path: Path) -> None:
    state = launcher.up([launcher.AppSpec("A5", 28646)], tmp_path, timeout_s=20, stripe_port=28647)
    assert state.stripe_url == "http://127.0.0.1:28647" and _listening_addresses(28647) == ["0100007F"]
    assert launcher.down(tmp_path) == ["A5"]
    assert _listening_addresses(28647) == [] and launcher.status(tmp_path) is None

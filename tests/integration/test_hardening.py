"""Header hardening against a live sandbox (ports 28851–28858, its Stripe on 28850): every
rule PASSes on the healthy provider portal, lead capture, checkout sessions and telemetry
ingest, and each broken portal state makes its rule FAIL.

The sandbox runs with a 3-second dedupe window so the expiry rule is exercised for real.
Broken states are switched through A6's ``provider_portal`` fault knob and cleared again
after each test (``DELETE /admin/faults``).
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from readiness.core.check import Status
from readiness.phasekit.context import open_phase
from readiness.phases.funnels import hardening
from readiness.probe.sandbox_control import ADMIN_TOKEN_ENV
from sandbox.common.emitter import Emitter, Event, HttpSink

pytestmark = pytest.mark.integration

BASE_PORT = 28850
A6_ROUTES = ("providers", "listings", "billing_usage")


@pytest.fixture(scope="module")
def base_params(tmp_path_factory: pytest.TempPathFactory, params_factory, start_sandbox) -> Iterator[dict[str, Any]]:
    """Sandbox params on this module's ports with a 3 s dedupe window; the sandbox runs meanwhile."""
    def edit(data: dict[str, Any]) -> None:
        data["windows"]["quick"]["dedupe_s"] = 3
        data["thresholds"]["telemetry_arrival_s"] = 15
    path = params_factory(tmp_path_factory.mktemp("hardening"), port_base=BASE_PORT, edit=edit)
    with start_sandbox(path):
        yield yaml.safe_load(path.read_text())


def audit(base: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, routes: list[str],
          **hardening_overrides: Any) -> tuple[Any, dict[str, Any]]:
    """Run the hardening audit over the named routes (``A6.providers``…); returns (matrix, checks by id)."""
    data = copy.deepcopy(base)
    data["hardening"]["routes"] = [r for r in data["hardening"]["routes"]
                                   if f"{r['app']}.{r.get('name') or r['path'].split('/')[-1]}" in routes]
    data["hardening"].update(hardening_overrides)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setenv("READINESS_OUTPUTS", str(tmp_path / "outputs"))
    phase = open_phase("04_funnels", str(path))
    table = hardening.run_hardening(phase)
    assert phase.run.path(hardening.REPORT).is_file() and phase.run.path(hardening.REQUESTS).is_file()
    return table, {c.id: c for c in phase.run.read_checks("04_funnels")}


def set_portal(base: dict[str, Any], knob: dict[str, Any] | None) -> None:
    url = f"{base['apps'][5]['base_url']}/admin/faults"
    headers = {"Authorization": f"Bearer {os.environ[ADMIN_TOKEN_ENV]}"}
    response = (httpx.put(url, json={"provider_portal": knob}, headers=headers, timeout=5) if knob
                else httpx.delete(url, headers=headers, timeout=5))
    response.raise_for_status()


@pytest.fixture()
def portal(base_params: dict[str, Any]) -> Iterator[Any]:
    yield lambda knob: set_portal(base_params, knob)
    set_portal(base_params, None)


def test_every_rule_passes_on_the_healthy_portal_and_lead_capture(base_params: dict[str, Any], tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    table, checks = audit(base_params, tmp_path, monkeypatch, [*(f"A6.{r}" for r in A6_ROUTES), "A7.leads"])
    assert sorted(table.index) == ["A6.billing_usage", "A6.listings", "A6.providers", "A7.leads"]
    failing = {i: (c.status, c.detail) for i, c in checks.items() if c.status is not Status.PASS}
    assert not failing
    assert len(checks) == 4 * len(hardening.RULES)
    report = (tmp_path / "outputs").glob("*/reports/idempotency_validation.md")
    text = next(report).read_text()
    assert "| A6.providers | PASS | PASS |" in text and "information only" in text


def test_headers_not_enforced_fails_the_428_rules(base_params: dict[str, Any], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch, portal: Any) -> None:
    portal({"enforce_contract_headers": False})
    _, checks = audit(base_params, tmp_path, monkeypatch, ["A6.providers"], check_expiry=False)
    for rule in ("missing_idempotency_key", "missing_trace_id"):
        check = checks[f"hardening.A6.providers.{rule}"]
        assert (check.status, check.observed) == (Status.FAIL, 201), check.detail
    assert checks["hardening.A6.providers.expiry"].status is Status.SKIPPED


def test_no_dedupe_fails_replay_mismatch_and_concurrency(base_params: dict[str, Any], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch, portal: Any) -> None:
    portal({"dedupe": False})
    _, checks = audit(base_params, tmp_path, monkeypatch, ["A6.providers"], check_expiry=False)
    replay = checks["hardening.A6.providers.replay"]
    assert replay.status is Status.FAIL and "effects: observed 2 effects does not meet == 1" in replay.detail
    assert checks["hardening.A6.providers.payload_mismatch"].status is Status.FAIL
    concurrent = checks["hardening.A6.providers.concurrent_duplicate"]
    assert concurrent.status is Status.FAIL and "2 side effects for one key" in concurrent.detail
    assert checks["hardening.A6.providers.missing_idempotency_key"].status is Status.PASS


def test_every_rule_passes_on_checkout_sessions_and_telemetry_ingest(base_params: dict[str, Any], tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    table, checks = audit(base_params, tmp_path, monkeypatch, ["A5.sessions", "A8.telemetry_events"])
    assert sorted(table.index) == ["A5.checkout_sessions", "A8.telemetry_events"]
    failing = {i: (c.status, c.detail) for i, c in checks.items() if c.status is not Status.PASS}
    assert not failing
    assert len(checks) == 2 * len(hardening.RULES)
    for route in ("A5.checkout_sessions", "A8.telemetry_events"):  # effects counted, not inferred
        assert "effects: observed 2" in checks[f"hardening.{route}.scope"].detail
        assert "effects: observed 1" in checks[f"hardening.{route}.replay"].detail


def test_a_route_without_observable_effects_is_never_a_pass(base_params: dict[str, Any], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    blind = copy.deepcopy(base_params)
    for route in blind["hardening"]["routes"]:
        if route["app"] == "A5":
            route.pop("effect_event")
    _, checks = audit(blind, tmp_path, monkeypatch, ["A5.sessions"], check_expiry=False)
    replay = checks["hardening.A5.checkout_sessions.replay"]
    assert replay.status is Status.INCONCLUSIVE
    assert "no effect_event configured" in replay.detail
    assert checks["hardening.A5.checkout_sessions.missing_idempotency_key"].status is Status.PASS


class LosesFirstAnswer(HttpSink):
    """An ingest sink whose first answer is lost after A8 stored the batch (a timeout, say)."""

    def __init__(self, url: str, key: str) -> None:
        super().__init__(url, key, "QA")
        self.keys: list[str] = []
        self.replayed: list[str | None] = []
        self._client.event_hooks["response"].append(
            lambda response: self.replayed.append(response.headers.get("idempotent-replayed")))

    def send(self, events: list[Event], batch_key: str, batch_trace: str) -> None:
        super().send(events, batch_key, batch_trace)
        self.keys.append(batch_key)
        if len(self.keys) == 1:
            raise RuntimeError("answer lost")


def test_an_emitter_retry_of_a_stored_batch_counts_as_delivered(base_params: dict[str, Any]) -> None:
    a8 = base_params["apps"][7]["base_url"]
    sink = LosesFirstAnswer(f"{a8}/api/telemetry/events", os.environ["A8_TELEMETRY_KEY"])
    emitter = Emitter(sink)
    trace = f"qa-emitter-retry-{uuid.uuid4().hex}"
    for i in range(3):
        emitter.emit({"event_type": "qa_emitter_retry", "timestamp": dt.datetime.now(dt.UTC).isoformat(),
                      "app_id": "QA", "trace_id": trace, "idempotency_key": f"{trace}-{i}"})
    emitter.flush()  # stored by A8, answer lost: kept for a retry with the same batch key
    emitter.flush()  # the retry meets the stored 202
    emitter.stop()
    counters = emitter.counters()
    assert (counters["sent"], counters["send_failures"], counters["dropped_after_retries"]) == (3, 1, 0)
    assert len(sink.keys) == 2 and sink.keys[0] == sink.keys[1]
    assert sink.replayed == [None, "true"]  # the stored answer, not a second ingest
    stored = httpx.get(f"{a8}/api/telemetry/events", params={"trace_id": trace}, timeout=5).json()
    assert stored["count"] == 3

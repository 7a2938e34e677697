"""Stop conditions of the baseline load against failing targets, with real k6 on loopback.

Each target is a tiny asyncio HTTP server on 127.0.0.1 (an ephemeral port) with no
telemetry store (its ``/api/telemetry/*`` answers 404, or the store's port is dead): one
answers 503 to every request, one holds every request past the read timeout, one answers
200 at once. The load asks for 30 s of traffic; a stop condition must end it long before.

How fast a stop acted is measured, not asserted: each test prints the seconds from the
first breaching request (and from the moment the window could first be judged) to the
stop, from the stop to k6's exit, and the requests k6 abandoned in flight
(``pytest -s`` shows them); the assertions are that the stop fired, why, and what it left.
"""

from __future__ import annotations

import asyncio
import copy
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from readiness.core.check import Status
from readiness.phasekit.context import Phase, open_phase
from readiness.phases.load import baseline as load

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
VUS = 5
HANG_S = 4.0  # past the read timeout (1 s) and k6's request timeout (connect + read = 1.5 s)


class LoopbackTarget:
    """An HTTP server on its own thread and event loop: ``mode`` says how every request is
    answered (``503``, ``hang`` or ``ok``), except ``/api/telemetry/*``, which is 404 (no store).

    It counts connections open now and at most, and those the client closed while a
    request was held; one connection per request (``Connection: close``).
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.open = self.max_open = self.accepted = self.abandoned = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"target-{mode}", daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LoopbackTarget:
        self._thread.start()
        assert self._ready.wait(5), "the loopback target did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=64))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        for task in self._tasks:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*self._tasks, return_exceptions=True))
        self._loop.run_until_complete(server.wait_closed())
        self._loop.close()

    def _count(self, delta: int) -> None:
        with self._lock:
            self.open += delta
            self.max_open = max(self.max_open, self.open)
            self.accepted += delta > 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._count(+1)
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            path = head.split(b" ", 2)[1]
            status = b"404 Not Found" if path.startswith(b"/api/telemetry") else \
                b"503 Service Unavailable" if self.mode == "503" else b"200 OK"
            if self.mode == "hang" and not path.startswith(b"/api/telemetry"):
                try:  # held: ends early only when the client gives up and closes its side
                    if await asyncio.wait_for(reader.read(1), HANG_S) == b"":
                        with self._lock:
                            self.abandoned += 1
                        return
                except TimeoutError:
                    pass
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
                         b"Connection: close\r\n\r\nno")
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        finally:
            writer.close()
            self._count(-1)
            self._tasks.discard(task)

    def wait_idle(self, within_s: float) -> int:
        """Connections still open once none is left or ``within_s`` has passed (bounded poll)."""
        deadline = time.monotonic() + within_s
        while self.open and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.open


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def base_params() -> dict[str, Any]:
    """The sandbox params as an external ecosystem: short windows, tight timeouts, a 30 s load of A1 and A2."""
    data = yaml.safe_load((ROOT / "params" / "sandbox.yaml").read_text())
    data["target"] = "external"
    data["latency"]["compare_flags"] = []
    data["gate"]["enforcement_routes"] = []
    data["rubric_file"] = str(ROOT / "params" / "rubric.yaml")
    data["security"] = {**data.get("security", {}), "scan_paths": [str(ROOT / "lib")]}
    for section in ("funnels", "hardening", "b2b", "telemetry_contract", "learning", "resiliency", "monitoring",
                    "activation", "growth"):  # they name routes this target does not have
        data.pop(section, None)
    data["windows"]["quick"]["sustained_s"] = 2  # five 0.4 s slices
    data["thresholds"]["telemetry_arrival_s"] = 1  # an absent store, were it "missing telemetry", would stop at once
    data["http"].update(connect_timeout_s=0.5, read_timeout_s=1.0, total_timeout_s=2.0)
    data["load"].update(rate_per_s=20, duration_s=30, vus=VUS, vu_scenario={"vus": 1, "duration_s": 1},
                        apps=["A1", "A2"], stop_poll_s=0.25, grace_s=5)
    return data


def phase_for(base: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str, store: str,
              **load_over: Any) -> Phase:
    data = copy.deepcopy(base)
    for app in data["apps"]:
        app["base_url"] = target
    data["apps"][0]["critical_routes"] = [{"name": "a1", "method": "GET", "path": "/api/a1"}]
    data["apps"][1]["critical_routes"] = [{"name": "a2", "method": "GET", "path": "/api/a2"}]
    next(a for a in data["apps"] if a["id"] == data["telemetry_app"])["base_url"] = store
    data["load"].update(load_over)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setenv("READINESS_OUTPUTS", str(tmp_path / "outputs"))
    return open_phase("03_baseline_load", str(path))


def stopped_load(phase: Phase) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the load and the checks that read it; the run metadata and the checks by id."""
    table = load.run_load(phase)
    assert "vus" not in table.index  # the closed-model scenario never started after the stop
    load.endpoint_latency(phase)
    load.delivery(phase)
    load.write_reports(phase)
    meta = json.loads(phase.run.path(load.RUN_META).read_text())
    return meta, {c.id: c for c in phase.run.read_checks(phase.name)}


def report(label: str, meta: dict[str, Any]) -> None:
    timing, flight = meta["stop_timing"], meta["in_flight_at_stop"]
    print(f"\n[{label}] stop: {meta['stop']['met']['reason']} | breach→stop {timing['breach_to_stop_s']:.2f} s, "
          f"first failure seen→stop {timing['failure_seen_to_stop_s']:.2f} s, "
          f"window full→stop {timing['window_full_to_stop_s']:.2f} s, first judgeable→stop "
          f"{timing['judgeable_to_stop_s']:.2f} s, stop→k6 exit {timing['stop_to_k6_exit_s']:.2f} s, "
          f"killed {timing['k6_killed']} | in flight at stop {flight['requests']} {flight['by_app']} | "
          f"requests seen {meta['stop']['requests_seen']}, evaluations "
          f"{meta['stop']['conditions']['error_rate']['evaluations']}")


def assert_stopped_by_error_rate(phase: Phase, meta: dict[str, Any], checks: dict[str, Any]) -> None:
    met = meta["stop"]["met"]
    assert met["name"] == "error_rate" and met["reason"].startswith("error rate ≥ 1% sustained for 2 s")
    assert checks[load.STOP_CHECK].status is Status.FAIL and checks[load.STOP_CHECK].observed == met["reason"]
    for cid in ("load.arrival_rate", "load.error_rate", "load.baseline.A1.a1.p95"):
        assert checks[cid].status is Status.STOPPED and "stop condition: error rate" in checks[cid].detail, cid
    assert phase.run.info()["stop_conditions"] == [{"phase": "03_baseline_load", "reason": met["reason"]}]
    rate = meta["stop"]["conditions"]["error_rate"]
    assert rate["judged"] >= 1 and rate["met"] and rate["breach_started_at"] is not None
    assert set(meta["stop_timing"]) == {"breach_to_stop_s", "failure_seen_to_stop_s", "window_full_to_stop_s",
                                        "judgeable_to_stop_s", "stop_to_k6_exit_s", "k6_killed"}
    assert meta["stop_timing"]["breach_to_stop_s"] >= 0 and meta["stop_timing"]["stop_to_k6_exit_s"] is not None
    assert 0 <= meta["in_flight_at_stop"]["requests"] <= VUS  # the VU pool bounds what is in flight
    assert "Stopped " in phase.run.path(load.REPORT).read_text()


def test_a_target_answering_503_stops_the_load(base_params: dict[str, Any], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    with LoopbackTarget("503") as target:
        phase = phase_for(base_params, tmp_path, monkeypatch, target.url, f"http://127.0.0.1:{dead_port()}")
        meta, checks = stopped_load(phase)
        report("503", meta)
        assert_stopped_by_error_rate(phase, meta, checks)
        assert meta["stop"]["also_met"] == []  # fast 503s: the P95 condition held
        assert meta["stop"]["telemetry_source"].startswith("no telemetry source: GET /api/telemetry/events → ")
        assert meta["stop"]["conditions"]["telemetry_missing"]["not_evaluated"] == meta["stop"]["telemetry_source"]
        assert target.max_open <= VUS


def test_a_target_that_hangs_stops_the_load_and_keeps_no_connection(base_params: dict[str, Any], tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Every request times out: the slices between the bursts of timeouts are judged on the
    requests the VUs were still waiting on; on the stop k6 abandons those and closes them."""
    with LoopbackTarget("hang") as target:
        phase = phase_for(base_params, tmp_path, monkeypatch, target.url, target.url)
        meta, checks = stopped_load(phase)
        report("hang", meta)
        assert_stopped_by_error_rate(phase, meta, checks)
        assert meta["request_timeout_s"] == 1.5 and meta["stop"]["also_met"] == ["p95"]
        assert meta["stop"]["conditions"]["error_rate"]["judged_on_in_flight"] >= 1
        assert meta["stop"]["conditions"]["p95"]["worst"] == "inf"
        assert meta["in_flight_at_stop"]["requests"] >= 1  # every VU was waiting on the target
        assert meta["stop"]["telemetry_source"] == "no telemetry source: GET /api/telemetry/events → 404"
        assert target.max_open <= VUS + 1  # the VU pool, and the one telemetry probe
        assert target.wait_idle(within_s=3) == 0 and target.abandoned >= 1


def test_no_telemetry_store_is_inconclusive_not_a_stop(base_params: dict[str, Any], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    with LoopbackTarget("ok") as target:
        phase = phase_for(base_params, tmp_path, monkeypatch, target.url, target.url, duration_s=3)
        table = load.run_load(phase)
        assert table.loc["arrival", "failed"] == 0 and table.loc["vus", "requests"] > 0
        load.delivery(phase)
        load.autonomy(phase)
        checks = {c.id: c for c in phase.run.read_checks(phase.name)}
    meta = json.loads(phase.run.path(load.RUN_META).read_text())
    absent = "no telemetry source: GET /api/telemetry/events → 404"
    assert meta["stop"]["met"] is None and meta["stop"]["telemetry_source"] == absent
    assert "stop_conditions" not in phase.run.info() or not phase.run.info()["stop_conditions"]
    stop = checks[load.STOP_CHECK]
    assert stop.status is Status.INCONCLUSIVE and stop.detail.startswith(f"{absent}; error rate and P95 not met")
    autonomy = [c for cid, c in checks.items() if cid.startswith("load.autonomy.")]
    assert autonomy and all(c.status is Status.INCONCLUSIVE and c.detail == absent for c in autonomy)

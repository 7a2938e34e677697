"""Alert-rule replay over synthetic event lists, and the exact messages of the monitoring params."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest

from readiness.params.model import load_params
from readiness.params.ops import AlertRule, Monitoring
from readiness.phases.security_ops.monitoring_rules import detected, evaluate, matches, replay_rules, split_alerts

ROOT = Path(__file__).resolve().parents[2]
SANDBOX = ROOT / "params" / "sandbox.yaml"
T0 = 1_800_000_000.0  # an arbitrary epoch second


def rule(**kw: object) -> AlertRule:
    base: dict[str, object] = {"id": "r", "event_type": "auth_failure", "threshold": 1, "window_s": 60}
    return AlertRule.model_validate({**base, **kw})


def event(offset_s: float, **fields: object) -> dict[str, object]:
    stamp = dt.datetime.fromtimestamp(T0 + offset_s, dt.UTC).isoformat(timespec="milliseconds")
    return {"event_type": "auth_failure", "timestamp": stamp.replace("+00:00", "Z"), **fields}


NOISE = [event(t) for t in (0, 100, 200, 300, 400)]  # isolated failures, far apart
INCIDENT = [event(1000 + i * 0.1) for i in range(40)]  # 40 failures in 4 s: credential stuffing
INCIDENT_SPAN = [(T0 + 1000, T0 + 1004)]
END = T0 + 1200


def test_sandbox_defaults_describe_the_auth_failure_rule() -> None:
    m = load_params(SANDBOX).monitoring
    assert m == Monitoring(traffic=m.traffic, capacity=m.capacity)  # the YAML spells out the defaults
    before, after = m.before[0], m.after[0]
    assert (before.threshold, before.window_s, before.duration_s, before.dedupe_s) == (1, 60, 0, 0)
    assert (after.threshold, after.window_s, after.duration_s, after.dedupe_s) == (10, 60, 5, 300)
    assert before.id == after.id == "auth_failures" and before.event_type == after.event_type == "auth_failure"


def test_before_rule_pages_on_noise_and_after_rule_only_on_the_incident() -> None:
    before_rule, after_rule = Monitoring().before[0], Monitoring().after[0]
    before, after = replay_rules([before_rule], NOISE + INCIDENT, END), replay_rules([after_rule], NOISE + INCIDENT, END)
    assert split_alerts(before, INCIDENT_SPAN) == (5, 40)  # every failure pages
    noise, hits = split_alerts(after, INCIDENT_SPAN)
    assert (noise, hits) == (0, 1)  # one page, for the incident only
    alert = after[0].alerts[0]
    assert alert.at == pytest.approx(T0 + 1000.9 + 5)  # 10th failure at +0.9 s, then held 5 s
    assert alert.count == 40 and after[0].suppressed == 0
    assert detected(after, INCIDENT_SPAN) == [pytest.approx(5.9)]


def test_a_rule_tuned_too_far_misses_the_incident() -> None:
    blind = rule(threshold=100, duration_s=5, dedupe_s=300)
    replays = replay_rules([blind], NOISE + INCIDENT, END)
    assert split_alerts(replays, INCIDENT_SPAN) == (0, 0)
    assert detected(replays, INCIDENT_SPAN) == [None]


def test_duration_requires_the_condition_to_hold_without_a_break() -> None:
    r = rule(threshold=3, window_s=10, duration_s=4)
    # three events at 0, 1, 2: the count is >= 3 from t=2 until t=10 (the first leaves): held 8 s
    assert [a.at - T0 for a in evaluate(r, [T0, T0 + 1, T0 + 2], T0 + 30).alerts] == [pytest.approx(6)]
    # the same burst, but the first failure leaves the window at t=10 before 4 s have passed since t=7
    short = evaluate(r, [T0 + 0, T0 + 6, T0 + 7], T0 + 30)
    assert short.episodes == ((pytest.approx(T0 + 7), pytest.approx(T0 + 10)),)
    assert short.alerts == ()
    # a condition still holding when the replay ends fires only if it has lasted long enough by then
    assert evaluate(r, [T0, T0 + 1, T0 + 2], T0 + 5).alerts == ()
    assert len(evaluate(r, [T0, T0 + 1, T0 + 2], T0 + 6.5).alerts) == 1


def test_an_event_leaves_the_window_exactly_window_s_after_it_arrived() -> None:
    r = rule(threshold=2, window_s=10)
    assert evaluate(r, [T0, T0 + 10], T0 + 30).alerts == ()  # (t - 10, t] holds one event at t=10
    assert len(evaluate(r, [T0, T0 + 9.999], T0 + 30).alerts) == 1


def test_dedupe_suppresses_repeats_within_its_window() -> None:
    times = [T0 + t for t in (0, 10, 20, 30, 100)]
    assert len(evaluate(rule(dedupe_s=0), times, T0 + 200).alerts) == 5
    deduped = evaluate(rule(dedupe_s=25), times, T0 + 200)
    assert [a.at - T0 for a in deduped.alerts] == [0, 30, 100]
    assert deduped.suppressed == 2


def test_without_dedupe_every_event_while_firing_is_a_notification() -> None:
    same_ms = [T0, T0, T0 + 1]  # two failures in the same millisecond are two pages
    assert len(evaluate(rule(), same_ms, T0 + 5).alerts) == 3


def test_rate_rules_compare_events_per_second() -> None:
    r = rule(aggregation="rate", threshold=0.5, window_s=10)  # 0.5/s over 10 s: 5 events
    assert r.min_events == 5
    assert evaluate(r, [T0 + i for i in range(4)], T0 + 60).alerts == ()
    assert len(evaluate(r, [T0 + i for i in range(5)], T0 + 60).alerts) == 1
    assert rule(aggregation="rate", threshold=0.01, window_s=10).min_events == 1


def test_filters_match_nested_fields_and_skip_other_events() -> None:
    r = rule(filter={"tags.namespace": "simulated_audit", "status": 401})
    assert matches(r, {"event_type": "auth_failure", "status": 401, "tags": {"namespace": "simulated_audit"}})
    assert not matches(r, {"event_type": "auth_failure", "status": 401, "tags": {}})
    assert not matches(r, {"event_type": "identity_ok", "status": 401, "tags": {"namespace": "simulated_audit"}})
    events = [event(0), {"event_type": "auth_failure", "timestamp": "not a time"}, event(1, event_type="other")]
    assert replay_rules([rule()], events, END)[0].matched == 1


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["monitoring"]["after"][0].update(threshold=2.5),
     "monitoring.after[0]: threshold: a count threshold is a number of events (a whole number >= 1), got 2.5"),
    (lambda d: d["monitoring"]["before"].append(dict(d["monitoring"]["before"][0])),
     "monitoring.before: duplicate rule ids: auth_failures"),
    (lambda d: d["monitoring"]["after"][0].update(id="Auth Failures"),
     "monitoring.after[0].id: rule id must be lower-case letters, digits, '_', '.' or '-' starting with a "
     "letter (max 64), got 'Auth Failures'"),
    (lambda d: d["monitoring"]["after"][0].update(aggregation="sum"),
     "monitoring.after[0].aggregation: Input should be 'count' or 'rate'"),
    (lambda d: d["monitoring"]["after"][0].update(window_s=0),
     "monitoring.after[0].window_s: Input should be greater than 0"),
    (lambda d: d["monitoring"]["after"][0].update(dedupe_s=90_000),
     "monitoring.after[0].dedupe_s: Input should be less than or equal to 86400"),
    (lambda d: d["monitoring"].update(after=[]), "monitoring.after: List should have at least 1 item after "
     "validation, not 0"),
    (lambda d: d["monitoring"]["after"][0].update(cooldown_s=5), "monitoring.after[0].cooldown_s: unknown key"),
    (lambda d: d["monitoring"].update(incidents=[{"start": "2026-05-01T10:00:00Z", "end": "2026-05-01T09:00:00Z"}]),
     "monitoring.incidents[0]: end (2026-05-01T09:00:00+00:00) must be after start (2026-05-01T10:00:00+00:00)"),
    (lambda d: d["monitoring"].update(incidents=[{"start": "2026-05-01T10:00:00", "end": "2026-05-01T11:00:00"}]),
     "monitoring.incidents[0]: start and end must carry a time zone (e.g. 2026-05-01T10:00:00Z)"),
    (lambda d: d["monitoring"]["traffic"].update(incident_failures=501),
     "monitoring.traffic.incident_failures: Input should be less than or equal to 500"),
    (lambda d: d["monitoring"]["traffic"].update(incident_concurrency=21),
     "monitoring.traffic.incident_concurrency: Input should be less than or equal to 20"),
])
def test_bad_monitoring_params_name_the_field(params_errors: Callable[[Callable[[dict], object]], list[str]], change: Callable[[dict], object], message: str) -> None:
    assert params_errors(change) == [message]

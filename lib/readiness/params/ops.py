"""Params section of the operations checks (``10_security_ops``): alert rules and capacity bounds.

Split from :mod:`readiness.params.sections` like :mod:`readiness.params.autonomy`;
:class:`readiness.params.model.Params` composes it as ``monitoring``.

The section holds two versions of the same alert rules — ``before`` (the rules as they
page today) and ``after`` (the tuned version) — so that the replay of
:mod:`readiness.phases.security_ops.monitoring_rules` can show, over the run's recorded telemetry, what each
version would have fired. The defaults describe the authentication-failure rule of the
bundled sandbox: before, any single failed login pages someone; after, only a sustained
burst of failures does, once per dedupe window.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from readiness.params.sections import StrictModel, UrlPath

RULE_ID = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
MAX_RULE_SPAN_S = 86_400  # a window, duration or dedupe longer than a day is a typo, not a tuning


class AlertRule(StrictModel):
    """One alert rule, evaluated over the telemetry store's events.

    The rule counts the events of ``event_type`` whose fields equal every ``filter`` value
    (a dotted key such as ``tags.namespace`` reaches into a nested object) over a trailing
    ``window_s``. ``aggregation: count`` compares that count with ``threshold``;
    ``aggregation: rate`` compares count / window_s (events per second). The condition must
    hold for ``duration_s`` without a break before the rule fires (0: at once), and a
    notification sent suppresses further ones of the same rule for ``dedupe_s`` (0: none).
    """

    id: str
    event_type: str = Field(min_length=1)
    filter: dict[str, str | int | float | bool] = Field(default_factory=dict)
    aggregation: Literal["count", "rate"] = "count"
    threshold: float = Field(gt=0)
    window_s: float = Field(gt=0, le=MAX_RULE_SPAN_S)
    duration_s: float = Field(default=0, ge=0, le=MAX_RULE_SPAN_S)
    dedupe_s: float = Field(default=0, ge=0, le=MAX_RULE_SPAN_S)
    severity: Literal["P0", "P1", "P2", "P3"] = "P2"

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not RULE_ID.match(v):
            raise ValueError(f"rule id must be lower-case letters, digits, '_', '.' or '-' starting with a letter "
                             f"(max 64), got {v!r}")
        return v

    @model_validator(mode="after")
    def _whole_count(self) -> AlertRule:
        if self.aggregation == "count" and self.threshold != int(self.threshold):
            raise ValueError(f"threshold: a count threshold is a number of events (a whole number >= 1), "
                             f"got {self.threshold:g}")
        return self

    @property
    def min_events(self) -> int:
        """The fewest events in one window that meet the condition (a rate becomes a count)."""
        needed = self.threshold if self.aggregation == "count" else self.threshold * self.window_s
        return max(1, int(needed) if needed == int(needed) else int(needed) + 1)


def _unique(rules: list[AlertRule]) -> list[AlertRule]:
    ids = [r.id for r in rules]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"duplicate rule ids: {', '.join(dupes)}")
    return rules


class IncidentWindow(StrictModel):
    """A known incident of an external ecosystem (UTC), so a replay can tell noise from signal."""

    start: dt.datetime
    end: dt.datetime
    label: str = Field(default="incident", min_length=1)

    @model_validator(mode="after")
    def _ordered(self) -> IncidentWindow:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("start and end must carry a time zone (e.g. 2026-05-01T10:00:00Z)")
        if self.end <= self.start:
            raise ValueError(f"end ({self.end.isoformat()}) must be after start ({self.start.isoformat()})")
        return self


class AuthTraffic(StrictModel):
    """Failed logins the phase drives through the identity app's own sign-in form (sandbox only).

    ``noise_failures`` isolated failures ``noise_spacing_s`` apart (a user mistyping a
    password), then an incident: ``incident_failures`` failures sent ``incident_concurrency``
    at a time (credential stuffing). Every attempt is a synthetic identity's address with a
    random password that is never written anywhere.
    """

    noise_failures: int = Field(default=5, ge=1, le=50)
    noise_spacing_s: float = Field(default=1.0, ge=0, le=60)
    incident_failures: int = Field(default=30, ge=1, le=500)
    incident_concurrency: int = Field(default=5, ge=1, le=20)
    authorize_path: UrlPath = "/oauth2/authorize"
    login_path: UrlPath = "/oauth2/login"
    email_domain: str = Field(default="example.test", pattern=r"^[a-z0-9-]+(\.[a-z0-9-]+)+$")
    arrival_timeout_s: float = Field(default=20, gt=0, le=300)  # wait for the events to reach the store


class QueueProbe(StrictModel):
    """A JSON status endpoint whose ``field`` (dotted) is a queue's depth, e.g. A3's work queue."""

    app: str
    path: UrlPath
    field: str = Field(min_length=1)


class Capacity(StrictModel):
    """Bounds of the cost snapshot (:mod:`readiness.phases.security_ops.cost`) against the baseline run."""

    rss_growth_max_pct: float = Field(default=50, gt=0, le=10_000)
    cpu_per_request_growth_max_pct: float = Field(default=50, gt=0, le=10_000)
    queue_growth_max: int = Field(default=10, ge=0, le=1_000_000)  # jobs more than the baseline run's
    queue_probes: list[QueueProbe] = Field(
        default_factory=lambda: [QueueProbe(app="A3", path="/api/runs/status", field="queue_depth")])


def _auth_failure_rules_before() -> list[AlertRule]:
    return [AlertRule(id="auth_failures", event_type="auth_failure", aggregation="count", threshold=1,
                      window_s=60, duration_s=0, dedupe_s=0, severity="P2")]


def _auth_failure_rules_after() -> list[AlertRule]:
    return [AlertRule(id="auth_failures", event_type="auth_failure", aggregation="count", threshold=10,
                      window_s=60, duration_s=5, dedupe_s=300, severity="P1")]


class Monitoring(StrictModel):
    """Alert rules before and after tuning, replayed over the run's telemetry; capacity bounds.

    ``incidents`` label known incidents of an external ecosystem; on the sandbox the phase
    makes its own (``traffic``) and labels them itself.
    """

    before: list[AlertRule] = Field(default_factory=_auth_failure_rules_before, min_length=1)
    after: list[AlertRule] = Field(default_factory=_auth_failure_rules_after, min_length=1)
    incidents: list[IncidentWindow] = Field(default_factory=list)
    traffic: AuthTraffic = Field(default_factory=AuthTraffic)
    capacity: Capacity = Field(default_factory=Capacity)
    replay_limit: int = Field(default=100_000, ge=100, le=1_000_000)  # events read per event type

    @field_validator("before", "after")
    @classmethod
    def _unique_ids(cls, rules: list[AlertRule]) -> list[AlertRule]:
        return _unique(rules)

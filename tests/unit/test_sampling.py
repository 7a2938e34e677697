"""Source-side sampling: 10% of high-volume success events, 100% of errors and finance, seeded."""

from __future__ import annotations

import random
import types

import pytest

from readiness.core.verdict import wilson_interval
from sandbox.common.emitter import Emitter
from sandbox.common.knobs import Faults, KnobError
from sandbox.common.sampling import KNOB, SamplingPolicy, install

N = 20_000
IMPRESSION = {"event_type": "cta_impression", "status": 202, "finance_metrics": None}
ERROR_IMPRESSION = {**IMPRESSION, "error": "render_timeout"}
SERVER_ERROR = {**IMPRESSION, "status": 503}
FINANCE = {"event_type": "revenue_settled", "status": 200, "finance_metrics": {"amount_cents": 50, "currency": "usd"}}
REQUEST = {"event_type": "http_request", "status": 200}


def kept(policy: SamplingPolicy, event: dict, n: int = N) -> list[dict]:
    return [e for e in (policy.admit(dict(event, i=i)) for i in range(n)) if e is not None]


def policy(seed: str = "sandbox:A7") -> SamplingPolicy:
    return SamplingPolicy(random.Random(seed))


def test_success_events_are_kept_at_ten_percent_with_the_rate_on_them() -> None:
    out = kept(policy(), IMPRESSION)
    low, high = wilson_interval(len(out), N, 0.999)
    assert low <= 0.10 <= high and high - low < 0.02  # 99.9% interval: a wrong rate cannot hide here
    assert {e["sample_rate"] for e in out} == {0.10}


def test_decisions_are_reproducible_from_the_seed() -> None:
    a = [e["i"] for e in kept(policy(), IMPRESSION, 2000)]
    b = [e["i"] for e in kept(policy(), IMPRESSION, 2000)]
    c = [e["i"] for e in kept(policy("other:A7"), IMPRESSION, 2000)]
    assert a == b and a != c


@pytest.mark.parametrize("event", [ERROR_IMPRESSION, SERVER_ERROR, FINANCE], ids=["error_field", "status_5xx",
                                                                                  "finance"])
def test_errors_and_finance_are_never_sampled(event: dict) -> None:
    p = policy()
    out = kept(p, event, 2000)
    assert len(out) == 2000 and {e["sample_rate"] for e in out} == {1.0}
    assert p.counters() == {"kept_full": 2000, "sampled_kept": 0, "sampled_out": 0}


def test_request_telemetry_is_untouched() -> None:
    out = kept(policy(), REQUEST, 500)
    assert len(out) == 500 and all("sample_rate" not in e for e in out)


def test_the_leak_knob_breaks_the_policy_both_ways() -> None:
    p = policy()
    p.apply(p.validate("sample_everything"))
    finance = kept(p, FINANCE)
    assert wilson_interval(len(finance), N, 0.999)[1] < 0.2  # finance now lost 90% of the time
    p.apply(p.validate("sample_nothing"))
    assert len(kept(p, IMPRESSION, 1000)) == 1000
    p.reset()
    assert p.snapshot() == "policy" and len(kept(p, IMPRESSION, 1000)) < 200


def test_knob_refuses_unknown_modes() -> None:
    with pytest.raises(KnobError) as info:
        policy().validate("sometimes")
    assert info.value.field == KNOB
    assert info.value.message == "telemetry_sampling must be one of policy, sample_everything, sample_nothing"


def test_rate_must_be_a_share() -> None:
    with pytest.raises(ValueError, match=r"^success_rate must be in \(0, 1\], got 0$"):
        SamplingPolicy(random.Random(1), success_rate=0)


class ListSink:
    def __init__(self) -> None:
        self.events: list[dict] = []

    def send(self, events: list[dict], batch_key: str, batch_trace: str) -> None:
        self.events.extend(events)

    def close(self) -> None:
        """Nothing to release."""


def test_emitter_applies_the_sampler_before_queueing() -> None:
    sink = ListSink()
    emitter = Emitter(sink, sampler=policy())
    for i in range(1000):
        emitter.emit(dict(IMPRESSION, i=i))
        emitter.emit(dict(FINANCE, i=i))
    emitter.flush()
    counts = emitter.counters()
    impressions = [e for e in sink.events if e["event_type"] == "cta_impression"]
    assert counts["emitted"] == 2000 and counts["sampled_out"] == 1000 - len(impressions)
    assert 50 < len(impressions) < 150 and sum(e["event_type"] == "revenue_settled" for e in sink.events) == 1000


def test_install_seeds_from_the_app_rng_and_registers_the_knob_once() -> None:
    rng = random.Random("sandbox:A7")
    ctx = types.SimpleNamespace(services={}, rng=rng, faults=Faults(rng), emitter=Emitter(None))
    first = install(ctx)  # type: ignore[arg-type]
    assert install(ctx) is first and ctx.emitter.sampler is first and first.rng is rng  # type: ignore[arg-type]
    ctx.faults.update({KNOB: "sample_nothing"})
    assert first.mode == "sample_nothing" and ctx.faults.snapshot()[KNOB] == "sample_nothing"
    ctx.faults.clear()
    assert first.mode == "policy"

"""Params of Phase 07 (activation, growth): sandbox values, bounded fields, exact messages."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from readiness.params.model import load_params

ROOT = Path(__file__).resolve().parents[2]


def test_sandbox_sections() -> None:
    p = load_params(ROOT / "params" / "sandbox.yaml")
    assert p.activation.users == 35  # the least n at which a perfect record passes the 90% Wilson bound
    assert p.activation.events == ["credit_decrement", "activation_first_use"]
    assert p.activation.quantiles == [0.5, 0.9] and p.thresholds.ttfv_s == 300
    assert p.growth.app == "A7" and p.growth.extra_pages == ["/get-started"]
    assert p.growth.analytics_marker == "script[data-analytics-site]"
    assert p.growth.open_graph == ["og:title", "og:description", "og:image", "og:url"]


def test_quantiles_are_sorted() -> None:
    from readiness.params.growth import Activation

    assert Activation(quantiles=[0.9, 0.5]).quantiles == [0.5, 0.9]


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["activation"].update(users=0), "activation.users: Input should be greater than or equal to 1"),
    (lambda d: d["activation"].update(users=51), "activation.users: Input should be less than or equal to 50"),
    (lambda d: d["activation"].update(concurrency=9),
     "activation.concurrency: Input should be less than or equal to 8"),
    (lambda d: d["activation"].update(first_action_path="onboarding"),
     "activation.first_action_path: path must start with '/', got 'onboarding'"),
    (lambda d: d["activation"].update(topic=""),
     "activation.topic: String should have at least 1 character"),
    (lambda d: d["activation"].update(selectors={"first_action_link": "a", "action": "#k", "topic": "#t",
                                                 "submit": "#s"}),
     "activation.selectors: selectors must name exactly first_action_link, action, topic, submit, result "
     "(missing ['result'], unknown [])"),
    (lambda d: d["activation"].update(selectors={"first_action_link": "a[", "action": "#k", "topic": "#t",
                                                 "submit": "#s", "result": "#r"}),
     "activation.selectors: not a valid CSS selector: 'a[' (Malformed attribute selector at position 1)"),
    (lambda d: d["activation"].update(utm={"source": "x"}),
     "activation.utm: attribution keys must start with 'utm_' or be 'ref', got ['source']"),
    (lambda d: d["activation"].update(events=["credit_decrement", "credit_decrement"]),
     "activation.events: events must be distinct non-empty event types, got ['credit_decrement', "
     "'credit_decrement']"),
    (lambda d: d["activation"].update(quantiles=[0.5, 1.0]),
     "activation.quantiles: quantiles must be distinct numbers strictly between 0 and 1, got [0.5, 1.0]"),
    (lambda d: d["activation"].update(within_target_min=1),
     "activation.within_target_min: Input should be less than 1"),
    (lambda d: d["activation"].update(crosscheck_tolerance_s=0),
     "activation.crosscheck_tolerance_s: Input should be greater than 0"),
    (lambda d: d["activation"].update(ttfv_target_s=300), "activation.ttfv_target_s: unknown key"),
    (lambda d: d["growth"].update(analytics_marker="script[data-x"),
     "growth.analytics_marker: not a valid CSS selector: 'script[data-x' (Malformed attribute selector at "
     "position 6)"),
    (lambda d: d["growth"].update(open_graph=["og:title", "title"]),
     "growth.open_graph: open_graph must list distinct properties such as 'og:title', got ['og:title', 'title']"),
    (lambda d: d["growth"].update(extra_pages=["get-started"]),
     "growth.extra_pages[0]: path must start with '/', got 'get-started'"),
    (lambda d: d["growth"].update(max_pages=0), "growth.max_pages: Input should be greater than or equal to 1"),
    (lambda d: d["growth"].update(crawlers=[]), "growth.crawlers: List should have at least 1 item after "
                                                "validation, not 0"),
])
def test_bad_values_name_the_field(params_errors: Callable[[Callable[[dict], object]], list[str]],
                                   change: Callable[[dict], object], message: str) -> None:
    assert message in params_errors(change)

"""The ``funnels`` params section: defaults, the sandbox file, and every bad value named exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from readiness.params.model import ParamsError, load_params, parse_params

ROOT = Path(__file__).resolve().parents[2]


def sandbox_data() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "params" / "sandbox.yaml").read_text())


def errors_for(**funnels: Any) -> list[str]:
    data = sandbox_data()
    data["funnels"] = {**data.get("funnels", {}), **funnels}
    with pytest.raises(ParamsError) as info:
        parse_params(data, "p.yaml", env={})
    return info.value.errors


def test_sandbox_file_and_defaults() -> None:
    p = load_params(ROOT / "params" / "sandbox.yaml", env={})
    f = p.funnels
    assert f.b2c_signups == 35 and f.concurrency == 4  # the least n at which a perfect record can PASS 90%
    assert [(c.app, c.name, c.ttl_s, c.domain) for c in f.session_cookies] == [
        ("A1", "a1_session", 3600, None), ("A2", "a2_session", 3600, None)]
    assert f.id_token_algorithms == ["RS256"] and f.oidc_client_secret in p.secrets.names
    data = sandbox_data()
    del data["funnels"]
    defaults = parse_params(data, env={}).funnels
    assert (defaults.b2c_signups, defaults.concurrency) == (10, 2)
    assert defaults.model_copy(update={"b2c_signups": 35, "concurrency": 4}) == f  # the file spells out the rest


@pytest.mark.parametrize(("field", "value", "message"), [
    ("b2c_signups", 0, "funnels.b2c_signups: Input should be greater than or equal to 1"),
    ("b2c_signups", 201, "funnels.b2c_signups: Input should be less than or equal to 200"),
    ("concurrency", 9, "funnels.concurrency: Input should be less than or equal to 8"),
    ("landing_path", "get-started", "funnels.landing_path: path must start with '/', got 'get-started'"),
    ("callback_path", "cb", "funnels.callback_path: path must start with '/', got 'cb'"),
    ("oidc_client_secret", "my secret", "funnels.oidc_client_secret: must be the name of an environment variable, "
                                        "got 'my secret'"),
    ("id_token_algorithms", ["RS256", "none"],
     "funnels.id_token_algorithms: 'none' is not an acceptable id token algorithm"),
    ("id_token_algorithms", [], "funnels.id_token_algorithms: List should have at least 1 item after validation, "
                                "not 0"),
    ("id_token_leeway_s", 601, "funnels.id_token_leeway_s: Input should be less than or equal to 600"),
    ("utm", {"source": "x"}, "funnels.utm: attribution keys must start with 'utm_' or be 'ref', got ['source']"),
    ("step_timeout_s", 0, "funnels.step_timeout_s: Input should be greater than 0"),
    ("selectors", {"cta": "#go", "logo": "img"},
     "funnels.selectors: selectors must name exactly cta, email, name, password, signup, checkout, first_page, "
     "error (missing ['email', 'name', 'password', 'signup', 'checkout', 'first_page', 'error'], unknown ['logo'])"),
    ("colour", "blue", "funnels.colour: unknown key"),
])
def test_bad_values_name_the_field(field: str, value: Any, message: str) -> None:
    assert errors_for(**{field: value}) == [message]


def test_bad_session_cookies() -> None:
    assert errors_for(session_cookies=[{"app": "A1", "name": "bad name", "ttl_s": 3600}]) == [
        "funnels.session_cookies[0].name: String should match pattern "
        "'^[!#$%&'*+\\-.^_`|~0-9A-Za-z]+$'"]
    assert errors_for(session_cookies=[{"app": "A1", "name": "s", "ttl_s": 0}]) == [
        "funnels.session_cookies[0].ttl_s: Input should be greater than 0"]
    twice = [{"app": "A1", "name": "s", "ttl_s": 60}, {"app": "A1", "name": "s", "ttl_s": 90}]
    assert errors_for(session_cookies=twice) == ["funnels: session_cookies: listed twice: A1:s"]

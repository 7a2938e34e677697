"""Per-process configuration of one sandbox app, read from its command line and environment.

The launcher starts every app as its own process and hands it everything through
environment variables rather than arguments, so that secrets (the admin token, the
telemetry key) never appear in a process listing. This module is the single place that
names those variables; the launcher imports the names from here.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from collections.abc import Mapping
from pathlib import Path

from sandbox.catalog import base_url, role
from sandbox.common.knobs import KnobError, validate_flags

ENV_ADMIN_TOKEN = "SANDBOX_ADMIN_TOKEN"
ENV_APP_URLS = "SANDBOX_APP_URLS"
ENV_FLAGS = "SANDBOX_FLAGS"
ENV_DEDUPE_WINDOW_S = "SANDBOX_DEDUPE_WINDOW_S"
ENV_SEED = "SANDBOX_SEED"
ENV_TELEMETRY_KEY = "A8_TELEMETRY_KEY"
ENV_STRIPE_URL = "SANDBOX_STRIPE_URL"
#: Secrets an app may be given through its environment (never on its command line).
SECRET_NAMES = ("STRIPE_SECRET_KEY", "STRIPE_PUBLISHABLE_KEY", "STRIPE_WEBHOOK_SECRET", "OIDC_CLIENT_SECRET")

DEFAULT_SEED = "sandbox"
DEFAULT_DEDUPE_WINDOW_S = 900.0


class ConfigError(ValueError):
    """The process was started with a configuration it cannot serve; the message says why."""


def require_loopback(app_id: str, host: str) -> None:
    """The sandbox never listens beyond this machine: refuse any non-loopback address."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(f"{app_id}: host {host} is not a loopback IP address")


@dataclasses.dataclass(frozen=True)
class AppConfig:
    """Everything one app process needs to know about itself and its neighbours."""

    app_id: str
    host: str
    port: int
    state_dir: Path
    admin_token: str
    app_urls: Mapping[str, str]
    telemetry_key: str | None = None
    secrets: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False)  # of SECRET_NAMES, set ones
    stripe_url: str | None = None  # the local Stripe API (localstripe) when the sandbox runs one
    dedupe_window_s: float = DEFAULT_DEDUPE_WINDOW_S
    flags: Mapping[str, bool] = dataclasses.field(default_factory=dict)
    seed: str = DEFAULT_SEED
    flush_interval_s: float = 0.25
    telemetry_queue_max: int = 10_000
    upstream_timeout_s: float = 0.5

    @property
    def base_url(self) -> str:
        return base_url(self.host, self.port)

    @property
    def a8_url(self) -> str | None:
        """Where telemetry goes; None when A8 is not part of this sandbox."""
        return self.app_urls.get("A8")

    @property
    def upstream_id(self) -> str | None:
        return role(self.app_id).upstream

    @property
    def upstream_url(self) -> str | None:
        """The declared upstream's base URL, or None when that app is not running here."""
        upstream = self.upstream_id
        return self.app_urls.get(upstream) if upstream else None

    def db_path(self, name: str) -> Path:
        """Path of one of this app's SQLite files inside the state folder."""
        return self.state_dir / "data" / f"{self.app_id.lower()}_{name}.sqlite"

    @classmethod
    def from_env(cls, app_id: str, host: str, port: int, state_dir: Path, environ: Mapping[str, str]) -> AppConfig:
        """Build the config, failing with one clear sentence on anything unusable."""
        role(app_id)  # raises ValueError naming the known apps
        require_loopback(app_id, host)
        token = environ.get(ENV_ADMIN_TOKEN, "")
        if not token:
            raise ConfigError(f"{ENV_ADMIN_TOKEN} is not set; the admin API needs a token")
        urls = _json_env(environ, ENV_APP_URLS, {})
        if not isinstance(urls, dict) or not all(isinstance(v, str) for v in urls.values()):
            raise ConfigError(f"{ENV_APP_URLS} must be a JSON object of app id to base URL")
        flags_raw = _json_env(environ, ENV_FLAGS, {})
        try:
            flags = validate_flags(flags_raw)
        except KnobError as exc:
            raise ConfigError(f"{ENV_FLAGS}: {exc.message}") from None
        try:
            window = float(environ.get(ENV_DEDUPE_WINDOW_S, DEFAULT_DEDUPE_WINDOW_S))
        except ValueError:
            raise ConfigError(f"{ENV_DEDUPE_WINDOW_S} must be a number of seconds") from None
        if window < 0:
            raise ConfigError(f"{ENV_DEDUPE_WINDOW_S} must be >= 0")
        return cls(
            app_id=app_id,
            host=host,
            port=port,
            state_dir=state_dir,
            admin_token=token,
            app_urls={**urls, app_id: base_url(host, port)},
            telemetry_key=environ.get(ENV_TELEMETRY_KEY) or None,
            secrets={name: environ[name] for name in SECRET_NAMES if environ.get(name)},
            stripe_url=environ.get(ENV_STRIPE_URL) or None,
            dedupe_window_s=window,
            flags=flags,
            seed=environ.get(ENV_SEED, DEFAULT_SEED),
        )


def _json_env(environ: Mapping[str, str], name: str, default: object) -> object:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise ConfigError(f"{name} is not valid JSON") from None

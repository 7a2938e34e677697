"""Start, find and stop the sandbox: one loopback process per app, state in a folder.

``up`` starts ``python -m sandbox serve`` once per :class:`AppSpec` (so one slow app
cannot stall another), waits until every ``/health`` answers 200 and records the result
in ``<state_dir>/sandbox.json`` (mode 0600: it holds the admin token). ``status``
reloads that file and reports the sandbox only while its processes run; ``down`` stops
them (SIGTERM, then SIGKILL after a timeout). Calling ``up`` again on a running, healthy
sandbox with the same apps and ports returns it unchanged (its flags and environment
stay as they were); an occupied port is reported by app and port before anything starts.

Each app receives, through its environment: the admin token (``SANDBOX_ADMIN_TOKEN``;
generated unless given in ``env`` or the caller's environment), the base URLs of all the
apps (so each finds A8 for telemetry and its upstream for readiness), the initial flags,
A8's dedupe window, and every variable of ``env`` (for example ``A8_TELEMETRY_KEY``).

When the checkout app (A5) is among the apps, the sandbox also runs its local Stripe API
(:mod:`sandbox.stripe_local`, localstripe on loopback) on the port just below the lowest
app port — 18100 for the default 18101–18108 — unless ``stripe_port`` names another. Its
URL reaches every app as ``SANDBOX_STRIPE_URL`` and is recorded in ``sandbox.json``
(``stripe_url``), where the suite finds it; its store is ``<state_dir>/stripe/``, and its
output goes to ``logs/localstripe.log``. It is started, waited for (``/_config/health``),
reused and stopped together with the apps.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import secrets
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

import sandbox
from sandbox import procs, stripe_local
from sandbox.catalog import APP_IDS, DEFAULT_BASE_PORT, base_url, default_port
from sandbox.common.config import (
    ENV_ADMIN_TOKEN,
    ENV_APP_URLS,
    ENV_DEDUPE_WINDOW_S,
    ENV_FLAGS,
    ENV_STRIPE_URL,
    ConfigError,
    require_loopback,
)
from sandbox.common.knobs import KnobError, validate_flags

STATE_FILE = "sandbox.json"
HEALTH_POLL_S = 0.05
STRIPE_ID = "localstripe"  # its key in health() and its log name
STRIPE_CLIENT_APP = "A5"  # the app that takes payments; the local Stripe runs only with it


class SandboxError(RuntimeError):
    """The sandbox could not be started, found or stopped; the message says why."""


@dataclasses.dataclass(frozen=True)
class AppSpec:
    """One app to run: its id (A1..A8) and the loopback port it listens on."""

    app_id: str
    port: int
    host: str = "127.0.0.1"

    @property
    def base_url(self) -> str:
        return base_url(self.host, self.port)


@dataclasses.dataclass(frozen=True)
class SandboxState:
    """A running sandbox as recorded in ``sandbox.json``."""

    state_dir: Path
    apps: Mapping[str, str]
    pids: Mapping[str, int]
    admin_token: str
    started_at: str
    stripe_url: str | None = None  # the local Stripe API, when the sandbox runs one
    stripe_pid: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "state_dir": str(self.state_dir),
            "apps": dict(self.apps),
            "pids": dict(self.pids),
            "admin_token": self.admin_token,
            "started_at": self.started_at,
            "stripe_url": self.stripe_url,
            "stripe_pid": self.stripe_pid,
        }

    @classmethod
    def from_json(cls, state_dir: Path, data: Mapping[str, Any]) -> SandboxState:
        return cls(
            state_dir=state_dir,
            apps={str(k): str(v) for k, v in data["apps"].items()},
            pids={str(k): int(v) for k, v in data["pids"].items()},
            admin_token=str(data["admin_token"]),
            started_at=str(data["started_at"]),
            stripe_url=str(data["stripe_url"]) if data.get("stripe_url") else None,
            stripe_pid=int(data["stripe_pid"]) if data.get("stripe_pid") else None,
        )

    def processes_alive(self) -> bool:
        """True while at least one recorded process (an app or the local Stripe) runs."""
        return any(procs.is_sandbox_app(pid, app_id, self.state_dir) for app_id, pid in self.pids.items()) or (
            self.stripe_pid is not None and procs.is_sandbox_stripe(self.stripe_pid, self.state_dir)
        )


def default_apps(base_port: int = DEFAULT_BASE_PORT) -> list[AppSpec]:
    """The eight apps on consecutive loopback ports from ``base_port``."""
    return [AppSpec(app_id, default_port(app_id, base_port)) for app_id in APP_IDS]


def default_state_dir(apps: Sequence[AppSpec]) -> Path:
    """A state folder under the temp dir, unique per user and first port."""
    if not apps:
        raise SandboxError("no apps given")
    uid = os.getuid() if hasattr(os, "getuid") else os.getpid()
    return Path(tempfile.gettempdir()) / f"readiness-sandbox-{uid}-{apps[0].port}"


def stripe_spec(apps: Sequence[AppSpec], stripe_port: int | None = None) -> AppSpec | None:
    """Where the local Stripe API listens: None without A5, else below the lowest app port.

    It shares the host of the app on the lowest port; ``stripe_port`` overrides the port.
    """
    if not any(spec.app_id == STRIPE_CLIENT_APP for spec in apps):
        return None
    lowest = min(apps, key=lambda spec: spec.port)
    return AppSpec(STRIPE_ID, stripe_port if stripe_port is not None else lowest.port - 1, lowest.host)


def _validate(apps: Sequence[AppSpec], flags: Mapping[str, bool]) -> None:
    if not apps:
        raise SandboxError("no apps given")
    seen_ports: dict[int, str] = {}
    seen_ids: set[str] = set()
    for spec in apps:
        if spec.app_id not in APP_IDS:
            raise SandboxError(f"unknown sandbox app: {spec.app_id} (known: {', '.join(APP_IDS)})")
        if spec.app_id in seen_ids:
            raise SandboxError(f"app {spec.app_id} is listed twice")
        if not 1 <= spec.port <= 65535:
            raise SandboxError(f"{spec.app_id}: port {spec.port} is not between 1 and 65535")
        if spec.port in seen_ports:
            raise SandboxError(f"port {spec.port} is assigned to both {seen_ports[spec.port]} and {spec.app_id}")
        try:
            require_loopback(spec.app_id, spec.host)
        except ConfigError as exc:
            raise SandboxError(str(exc)) from None
        seen_ids.add(spec.app_id)
        seen_ports[spec.port] = spec.app_id
    try:
        validate_flags(dict(flags))
    except KnobError as exc:
        raise SandboxError(f"flags: {exc.message}") from None


def health(state: SandboxState, timeout_s: float = 1.0) -> dict[str, bool]:
    """Whether each app's ``/health`` answers 200 for the right app id right now."""
    out: dict[str, bool] = {}
    with httpx.Client(timeout=timeout_s, headers={"X-Source": "sandbox-launcher"}) as client:
        for app_id, url in state.apps.items():
            out[app_id] = _healthy(client, app_id, url)
        if state.stripe_url is not None:
            out[STRIPE_ID] = _healthy(client, STRIPE_ID, state.stripe_url)
    return out


def _healthy(client: httpx.Client, app_id: str, base_url: str) -> bool:
    try:
        if app_id == STRIPE_ID:
            response = client.get(f"{base_url}{stripe_local.HEALTH_PATH}")
            return response.status_code == 200 and response.json().get("service") == stripe_local.SERVICE
        response = client.get(f"{base_url}/health")
        return response.status_code == 200 and response.json().get("app_id") == app_id
    except (httpx.HTTPError, ValueError):
        return False


def _child_env(
    token: str,
    apps: Sequence[AppSpec],
    flags: Mapping[str, bool],
    env: Mapping[str, str],
    dedupe_window_s: float,
    stripe: AppSpec | None,
) -> dict[str, str]:
    package_root = str(Path(sandbox.__file__).resolve().parent.parent)
    python_path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)
    return {
        **os.environ,
        "PYTHONPATH": python_path,
        "PYTHONUNBUFFERED": "1",
        **env,
        ENV_ADMIN_TOKEN: token,
        ENV_APP_URLS: json.dumps({spec.app_id: spec.base_url for spec in apps}),
        ENV_FLAGS: json.dumps(dict(flags)),
        ENV_DEDUPE_WINDOW_S: repr(float(dedupe_window_s)),
        ENV_STRIPE_URL: stripe.base_url if stripe is not None else "",
    }


def _write_state(state: SandboxState) -> None:
    path = state.state_dir / STATE_FILE
    tmp = path.with_name(f".{STATE_FILE}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(state.to_json(), out, indent=2)
    os.replace(tmp, path)
    os.chmod(path, 0o600)


def _wait_healthy(apps: Sequence[AppSpec], pids: Mapping[str, int], state_dir: Path, timeout_s: float) -> None:
    pending = {spec.app_id: spec for spec in apps}
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=0.5, headers={"X-Source": "sandbox-launcher"}) as client:
        while pending:
            for app_id, spec in list(pending.items()):
                code = procs.exit_code(pids[app_id])
                if code is not None or not procs.is_alive(pids[app_id]):
                    log = state_dir / "logs" / f"{app_id}.log"
                    detail = procs.log_tail(log, 1) or f"exit code {code}"
                    raise SandboxError(f"{app_id} (port {spec.port}) exited during startup: {detail} (log: {log})")
                if _healthy(client, app_id, spec.base_url):
                    del pending[app_id]
            if not pending:
                return
            if time.monotonic() >= deadline:
                names = ", ".join(pending)
                raise SandboxError(f"timed out after {timeout_s:g} s waiting for /health of: {names}")
            time.sleep(HEALTH_POLL_S)


def up(
    apps: Sequence[AppSpec],
    state_dir: Path,
    *,
    flags: Mapping[str, bool] | None = None,
    env: Mapping[str, str] | None = None,
    dedupe_window_s: float = 900,
    timeout_s: float = 10,
    stripe_port: int | None = None,
) -> SandboxState:
    """Start the apps, and the local Stripe API when A5 is one of them (or return the
    identical sandbox already running there)."""
    flags, env = dict(flags or {}), dict(env or {})
    _validate(apps, flags)
    stripe = stripe_spec(apps, stripe_port)
    if stripe is not None and (not 1 <= stripe.port <= 65535 or stripe.port in {spec.port for spec in apps}):
        raise SandboxError(
            f"the local Stripe API cannot use port {stripe.port}: it must be between 1 and 65535 and not an app's port"
        )
    state_dir = Path(state_dir).resolve()
    (state_dir / "logs").mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, 0o700)
    wanted = {spec.app_id: spec.base_url for spec in apps}
    wanted_stripe = stripe.base_url if stripe is not None else None
    existing = status(state_dir)
    if existing is not None:
        if dict(existing.apps) != wanted or existing.stripe_url != wanted_stripe:
            raise SandboxError(
                f"a sandbox with other apps or ports is already running from {state_dir}; run down first"
            )
        if all(health(existing).values()) and all(
            procs.is_sandbox_app(pid, app_id, state_dir) for app_id, pid in existing.pids.items()
        ):
            return existing
        down(state_dir)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    for spec in [*apps, *([stripe] if stripe is not None else [])]:
        if procs.port_in_use(spec.host, spec.port):
            raise SandboxError(f"cannot start {spec.app_id}: port {spec.port} on {spec.host} is already in use")
    token = env.get(ENV_ADMIN_TOKEN) or os.environ.get(ENV_ADMIN_TOKEN) or secrets.token_urlsafe(32)
    child_env = _child_env(token, apps, flags, env, dedupe_window_s, stripe)
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    pids: dict[str, int] = {}
    stripe_pid: int | None = None
    try:
        if stripe is not None:
            log = state_dir / "logs" / f"{STRIPE_ID}.log"
            stripe_pid = procs.spawn_command(procs.stripe_command(stripe.host, stripe.port, state_dir), state_dir,
                                             child_env, log)
        for spec in apps:
            log = state_dir / "logs" / f"{spec.app_id}.log"
            pids[spec.app_id] = procs.spawn(spec.app_id, spec.host, spec.port, state_dir, child_env, log)
        # Recorded before the wait, so that `down` finds the processes even if this caller dies now.
        state = SandboxState(state_dir=state_dir, apps=wanted, pids=pids, admin_token=token, started_at=started_at,
                             stripe_url=wanted_stripe, stripe_pid=stripe_pid)
        _write_state(state)
        waited = {**pids, **({STRIPE_ID: stripe_pid} if stripe_pid is not None else {})}
        _wait_healthy([*apps, *([stripe] if stripe is not None else [])], waited, state_dir, timeout_s)
    except BaseException:
        procs.stop([*pids.values(), *([stripe_pid] if stripe_pid is not None else [])], timeout_s=2.0)
        (state_dir / STATE_FILE).unlink(missing_ok=True)
        raise
    return state


def _load(state_dir: Path) -> SandboxState | None:
    path = state_dir / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise SandboxError(f"cannot read {path}: {exc}") from None
    try:
        return SandboxState.from_json(state_dir, data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SandboxError(f"cannot read {path}: missing or invalid {exc}") from None


def status(state_dir: Path) -> SandboxState | None:
    """The recorded sandbox while at least one of its processes runs; None otherwise."""
    state_dir = Path(state_dir).resolve()
    state = _load(state_dir)
    if state is None or not state.processes_alive():
        return None
    return state


def down(state_dir: Path, *, timeout_s: float = 5) -> list[str]:
    """Stop the recorded apps and the local Stripe API; the ids of the apps that were running."""
    state_dir = Path(state_dir).resolve()
    state = _load(state_dir)
    if state is None:
        return []
    running = {app_id: pid for app_id, pid in state.pids.items() if procs.is_sandbox_app(pid, app_id, state_dir)}
    stripe = [state.stripe_pid] if state.stripe_pid and procs.is_sandbox_stripe(state.stripe_pid, state_dir) else []
    procs.stop([*running.values(), *stripe], timeout_s)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    return list(running)

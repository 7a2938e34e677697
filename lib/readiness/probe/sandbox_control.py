"""Start, find and stop the bundled sandbox for a params file that targets it.

The sandbox plays the part of a real ecosystem, including its secrets: it generates
test-only values for the secret names it provides (A8 telemetry key, Stripe test keys…)
so that the secret-presence checks and the authenticated paths run for real. They are
always generated, never taken from the caller's environment (a real key must not end up
in a sandbox), and for a sandbox target they replace any value the environment had, in
this process only. They live in the environment and in the sandbox's private state
folder (mode 0600); the run folder redacts them like any other secret.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from readiness.core import aio
from readiness.params.model import Params
from readiness.probe.client import GuardedClient, SyntheticPolicy
from sandbox import launcher

ADMIN_TOKEN_ENV = "SANDBOX_ADMIN_TOKEN"
_SECRETS_FILE = "secrets.json"  # pragma: allowlist secret


def admin_headers() -> dict[str, str]:
    """The sandbox admin API's bearer header, from the token the launcher exported; empty
    when no sandbox of this process exported one (the admin call is then refused, 401)."""
    token = os.environ.get(ADMIN_TOKEN_ENV)
    return {"Authorization": f"Bearer {token}"} if token else {}


class SandboxError(Exception):
    """The sandbox could not be started or found."""


def _specs(params: Params) -> list[launcher.AppSpec]:
    return [launcher.AppSpec(app_id=a.id, port=a.port, host=a.host) for a in params.apps]


def state_dir(params: Params) -> Path:
    return Path(params.sandbox.state_dir) if params.sandbox.state_dir else launcher.default_state_dir(_specs(params))


def _test_value(name: str) -> str:
    prefix = {"STRIPE_SECRET_KEY": "sk_test_", "STRIPE_PUBLISHABLE_KEY": "pk_test_",  # pragma: allowlist secret
              "STRIPE_WEBHOOK_SECRET": "whsec_"}.get(name, "sandbox_")  # pragma: allowlist secret
    return prefix + secrets.token_urlsafe(24)


def _load_secrets(folder: Path) -> dict[str, str]:
    f = folder / _SECRETS_FILE
    return json.loads(f.read_text()) if f.is_file() else {}


def _save_secrets(folder: Path, values: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    f = folder / _SECRETS_FILE
    fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(values, fh)


def ensure_sandbox(params: Params) -> tuple[launcher.SandboxState, bool]:
    """Make sure the sandbox of ``params`` runs; returns (state, started_here).

    Exports the sandbox's secrets and admin token into ``os.environ`` so that this
    process and the notebook kernels it starts see them, as they would see a real
    ecosystem's secrets.
    """
    if params.target != "sandbox":
        raise SandboxError("params target an external ecosystem; there is no sandbox to start")
    folder = state_dir(params)
    current = launcher.status(folder)
    wanted = {a.id: a.base_url for a in params.apps}
    if current is not None and dict(current.apps) == wanted and all(launcher.health(current).values()):
        _export(_load_secrets(folder), current.admin_token)
        return current, False
    if current is not None:  # other apps, or some of them died: start clean
        launcher.down(folder)
    values = {n: _test_value(n) for n in params.sandbox.provides_secrets}
    _save_secrets(folder, values)
    try:
        state = launcher.up(_specs(params), folder, flags=params.sandbox.flags, env=values,
                            dedupe_window_s=params.windows.active.dedupe_s,
                            timeout_s=params.sandbox.startup_timeout_s)
    except Exception as exc:  # the launcher's errors are already explicit; keep the type uniform
        raise SandboxError(f"sandbox did not start: {exc}") from exc
    _export(values, state.admin_token)
    return state, True


def _export(values: dict[str, str], admin_token: str) -> None:
    os.environ.update(values)
    os.environ[ADMIN_TOKEN_ENV] = admin_token


def _admin_client(params: Params) -> GuardedClient:
    policy = SyntheticPolicy(identities=frozenset(params.synthetic.identities.values()),
                             tags=dict(params.synthetic.tags), env_tag="staging")
    return GuardedClient(environment="staging", synthetic=policy,
                         allowed_hosts=frozenset(a.host for a in params.apps))


def set_flag(params: Params, app_id: str, flag: str, value: bool) -> dict[str, bool]:
    """Switch one sandbox flag on one app (admin API); returns the app's flags afterwards."""
    if params.target != "sandbox":
        raise SandboxError("flags can only be switched on the bundled sandbox")
    token = os.environ.get(ADMIN_TOKEN_ENV)
    if not token:
        raise SandboxError(f"{ADMIN_TOKEN_ENV} is not set: is the sandbox running (readiness sandbox up)?")
    url = params.app(app_id).url("/admin/flags")

    async def go() -> dict[str, bool]:
        async with _admin_client(params) as client:
            sample = await client.put(url, json={flag: value}, headers={"Authorization": f"Bearer {token}"},
                                      app=app_id, keep_body=True)
        if not sample.ok:
            raise SandboxError(f"could not set {flag}={value} on {app_id}: {sample.status or sample.error}")
        return dict(sample.json())

    return aio.run(go())


def get_flags(params: Params, app_id: str) -> dict[str, bool]:
    """Read one sandbox app's flags back (admin API): what a switch is verified against."""
    if params.target != "sandbox":
        raise SandboxError("flags can only be read on the bundled sandbox")
    token = os.environ.get(ADMIN_TOKEN_ENV)
    if not token:
        raise SandboxError(f"{ADMIN_TOKEN_ENV} is not set: is the sandbox running (readiness sandbox up)?")

    async def go() -> dict[str, bool]:
        async with _admin_client(params) as client:
            sample = await client.get(params.app(app_id).url("/admin/flags"), app=app_id, keep_body=True,
                                      headers={"Authorization": f"Bearer {token}"})
        if not sample.ok:
            raise SandboxError(f"could not read the flags of {app_id}: {sample.status or sample.error}")
        return dict(sample.json())

    return aio.run(go())


def reset_sandbox(params: Params, state: launcher.SandboxState) -> dict[str, Any]:
    """Set every app's flags to the params' values and clear every fault knob.

    A run starts from the state its params describe, whatever an earlier session left
    switched on. Returns the flags each app reports afterwards (evidence for the run).
    """
    headers = {"Authorization": f"Bearer {state.admin_token}"}

    async def go() -> dict[str, Any]:
        async with _admin_client(params) as client:
            applied: dict[str, Any] = {}
            for app_id, url in state.apps.items():
                cleared = await client.delete(f"{url}/admin/faults", headers=headers, app=app_id)
                flagged = await client.put(f"{url}/admin/flags", json=dict(params.sandbox.flags), headers=headers,
                                           app=app_id, keep_body=True)
                if not (cleared.ok and flagged.ok):
                    raise SandboxError(f"could not reset {app_id}: faults → {cleared.status or cleared.error}, "
                                       f"flags → {flagged.status or flagged.error}")
                applied[app_id] = flagged.json()
            return applied

    return aio.run(go())


def stop_sandbox(params: Params) -> list[str]:
    return launcher.down(state_dir(params))


def sandbox_status(params: Params) -> launcher.SandboxState | None:
    return launcher.status(state_dir(params))

"""The one configuration model of the suite.

Every notebook, the runner and the sandbox launcher read the same YAML file through
:func:`load_params`; notebooks receive the file *path*, never a copy of its values, so a
run is reproducible from ``params.json`` (the redacted snapshot in the run folder).

Validation is strict on purpose: an unknown key is far more often a typo that would
silently fall back to a default (``p59_ms``) than a deliberate extension, and a wrong
threshold makes every verdict downstream wrong. Errors name the field
(``apps[2].base_url: …``) so that a user can fix the file without reading code.

Paths written in the params (``rubric_file``, ``security.scan_paths``) resolve against the
params file's folder, never the working directory, so a params file means the same thing
wherever it is copied and whoever runs it; a path that does not exist is refused while
validating rather than discovered by the phase that needs it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from readiness.params.apps import HTTP_METHODS, App, Route, Slo, is_loopback
from readiness.params.autonomy import Learning, Load, Resiliency
from readiness.params.contracts import B2B, Funnels, Hardening, TelemetryContract
from readiness.params.growth import Activation, Growth
from readiness.params.ops import Monitoring
from readiness.params.registry import CAPABILITIES as _REGISTRY_CAPABILITIES
from readiness.params.registry import PHASES
from readiness.params.sections import (
    SANDBOX_APP_IDS,
    Approval,
    Attestation,
    Design,
    Gate,
    HttpLimits,
    Latency,
    Release,
    Sandbox,
    Secrets,
    Security,
    Smoke,
    StrictModel,
    Stripe,
    Synthetic,
    Thresholds,
    Windows,
)

__all__ = ["BUNDLED_RUBRIC", "CAPABILITIES", "DEFAULT_RUBRIC_NAME", "HTTP_METHODS", "PHASES", "SANDBOX_SCAN_PATHS", "SUITE_ROOT",
           "App", "Capability", "ConfigFileError", "Params", "ParamsError", "Route", "Slo", "format_validation_error",
           "interpolate", "is_loopback", "load_params", "parse_params", "read_yaml", "resolve_param_path"]

SMOKE_ENDPOINTS = 3  # health, ready and one action per app, probed in turn

#: The suite's own checkout (this file is lib/readiness/params/model.py). Found from the library's
#: path, not from the working directory or the params file, so the bundled rubric and the
#: sandbox's sources are found wherever the params file lives.
SUITE_ROOT = Path(__file__).resolve().parents[3]
BUNDLED_RUBRIC = SUITE_ROOT / "params" / "rubric.yaml"
DEFAULT_RUBRIC_NAME = "rubric.yaml"  # looked for beside the params file before the bundled one
#: What the secret scan covers on the sandbox target when ``security.scan_paths`` is unset.
SANDBOX_SCAN_PATHS = (SUITE_ROOT / "sandbox", SUITE_ROOT / "lib")

#: What an ecosystem may provide (names and meanings in the phase registry). A phase that
#: needs something the params do not declare is SKIPPED as not applicable instead of failing
#: against an ecosystem that never had it. Checked by the ``capabilities`` validator.
Capability = str
CAPABILITIES: tuple[str, ...] = tuple(_REGISTRY_CAPABILITIES)


def resolve_param_path(value: str, params_file: str | os.PathLike[str] | None) -> Path:
    """A path written in the params, made absolute: relative ones resolve against the params
    file's folder (the working directory when the params come from no file).

    The params file is resolved first, so a relative ``--params`` and a run started from
    another folder agree. The result is not normalised (``/x/params/../sandbox``): it shows
    how it was formed, and the filesystem resolves it the same either way.
    """
    path = Path(value)
    return path if path.is_absolute() else _base_dir(params_file) / path


def _base_dir(params_file: str | os.PathLike[str] | None) -> Path:
    return Path(params_file).resolve().parent if params_file is not None else Path.cwd()


def _missing(field: str, value: str, params_file: str | os.PathLike[str] | None, *, file: bool = False) -> str | None:
    """``field: value does not exist (resolved against …)`` when the path is not there, else None."""
    path = resolve_param_path(value, params_file)
    if path.exists() and (path.is_file() or not file):
        return None
    problem = "is not a file" if path.exists() else "does not exist"
    if Path(value).is_absolute():
        return f"{field}: {value} {problem}"
    where = (f"{Path(params_file).resolve()}'s folder" if params_file is not None else "the working directory")
    return f"{field}: {value} {problem} (resolved against {where}: {path})"


class ConfigFileError(Exception):
    """A configuration file is invalid; ``errors`` holds one ``field.path: message`` line per problem."""

    what = "configuration"

    def __init__(self, source: str, errors: list[str]):
        self.source = source
        self.errors = errors
        super().__init__(f"{source}: invalid {self.what}\n" + "\n".join(f"  - {e}" for e in errors))


class ParamsError(ConfigFileError):
    """Invalid parameters (exit code 2, nothing written)."""

    what = "parameters"


class Params(StrictModel):
    """Everything the suite is configured by, validated. See ``params/sandbox.yaml`` for a commented example."""

    version: Literal[1] = 1
    ecosystem: str = Field(min_length=1)
    environment: Literal["staging", "prod"]
    target: Literal["sandbox", "external"]
    apps: list[App] = Field(min_length=1)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    design: Design = Field(default_factory=Design)
    windows: Windows
    synthetic: Synthetic = Field(default_factory=Synthetic)
    secrets: Secrets = Field(default_factory=Secrets)
    approvals: list[Approval] = Field(default_factory=list)
    smoke: Smoke = Field(default_factory=Smoke)
    latency: Latency = Field(default_factory=Latency)
    gate: Gate = Field(default_factory=Gate)
    stripe: Stripe = Field(default_factory=Stripe)
    http: HttpLimits = Field(default_factory=HttpLimits)
    sandbox: Sandbox = Field(default_factory=Sandbox)
    funnels: Funnels = Field(default_factory=Funnels)
    hardening: Hardening = Field(default_factory=Hardening)
    b2b: B2B = Field(default_factory=B2B)
    telemetry_contract: TelemetryContract = Field(default_factory=TelemetryContract)
    load: Load = Field(default_factory=Load)
    learning: Learning = Field(default_factory=Learning)
    resiliency: Resiliency = Field(default_factory=Resiliency)
    security: Security = Field(default_factory=Security)
    monitoring: Monitoring = Field(default_factory=Monitoring)
    activation: Activation = Field(default_factory=Activation)
    growth: Growth = Field(default_factory=Growth)
    attestation: Attestation = Field(default_factory=Attestation)
    release: Release = Field(default_factory=Release)
    capabilities: list[Capability] = Field(default_factory=lambda: list(CAPABILITIES))
    telemetry_app: str | None = "A8"  # None: the ecosystem has no telemetry store
    telemetry_key_secret: str | None = "A8_TELEMETRY_KEY"  # secret name of the ingest bearer token
    # None: rubric.yaml beside the params file if there is one, else the bundled one (rubric_path)
    rubric_file: str | None = Field(default=None, min_length=1)
    phases: list[str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _capability_defaults(cls, data: Any) -> Any:
        """Capabilities left out mean everything, except a telemetry store the params say is absent.

        Done before validation so that the validated model states what it means; an explicit
        list that contradicts a null ``telemetry_app`` is refused later (``_cross_checks``).
        """
        if isinstance(data, dict) and "capabilities" not in data and "telemetry_app" in data \
                and data["telemetry_app"] is None:
            return {**data, "capabilities": [c for c in CAPABILITIES if c != "telemetry_store"]}
        return data

    @field_validator("capabilities", mode="before")
    @classmethod
    def _capability_names(cls, v: Any) -> Any:
        """Unknown and repeated names in one line each (a typo must not silently skip a phase)."""
        if not isinstance(v, list):
            return v  # pydantic reports the type
        unknown = [c for c in v if c not in CAPABILITIES]
        if unknown:
            raise ValueError(f"unknown capabilities {unknown} (known: {', '.join(CAPABILITIES)})")
        dupes = [c for c in CAPABILITIES if v.count(c) > 1]
        if dupes:
            raise ValueError(f"duplicate capabilities: {', '.join(dupes)}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _slo_defaults(cls, data: Any) -> Any:
        """An app's SLO fields default to the global thresholds, so one edit moves them all."""
        if not isinstance(data, dict) or not isinstance(data.get("apps"), list):
            return data
        t = data.get("thresholds") if isinstance(data.get("thresholds"), dict) else {}
        # only valid numbers travel; a bad threshold is reported once, at thresholds.*
        base = {k: v for k, v in (("p95_ms", t.get("p95_ms")), ("error_rate_max", t.get("error_rate_max")))
                if isinstance(v, int | float) and not isinstance(v, bool) and 0 < v and (k == "p95_ms" or v < 1)}
        apps = [{**a, "slo": {**base, **(a.get("slo") or {})}} if isinstance(a, dict) else a for a in data["apps"]]
        return {**data, "apps": apps}

    @field_validator("apps")
    @classmethod
    def _unique_apps(cls, apps: list[App]) -> list[App]:
        ids = [a.id for a in apps]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate app ids: {', '.join(dupes)}")
        return apps

    @field_validator("phases")
    @classmethod
    def _phases(cls, v: list[str] | None) -> list[str] | None:
        unknown = [p for p in v or [] if p not in PHASES]
        if unknown:
            raise ValueError(f"unknown phases {unknown}; known: {', '.join(PHASES)}")
        return v


    def _contract_cross_checks(self, ids: set[str]) -> None:
        """Apps, identities and secrets *set* in the contract phases' sections must exist.

        Defaults name the sandbox's roles (A7 landing, A1 identity…); an ecosystem without
        those apps that never mentions the section is not wrong, its phase reports what
        is missing instead.
        """
        def known(section: Any, where: str, field: str, app: str) -> None:
            if field in section.model_fields_set and app not in ids:
                raise ValueError(f"{where}.{field}: unknown app {app!r}")
        f = self.funnels
        for name in ("landing_app", "identity_app", "student_app"):
            known(f, "funnels", name, getattr(f, name))
        if "session_cookies" in f.model_fields_set:
            for i, cookie in enumerate(f.session_cookies):
                if cookie.app not in ids:
                    raise ValueError(f"funnels.session_cookies[{i}].app: unknown app {cookie.app!r}")
        if f.oidc_client_secret not in self.secrets.names and "oidc_client_secret" in f.model_fields_set:
            raise ValueError(f"funnels.oidc_client_secret: {f.oidc_client_secret!r} is not in secrets.names")
        for name in ("landing_app", "portal_app"):
            known(self.b2b, "b2b", name, getattr(self.b2b, name))
        known(self.telemetry_contract, "telemetry_contract", "probe_app", self.telemetry_contract.probe_app)
        for event, producer in self.telemetry_contract.producers.items():
            if producer not in PHASES:
                raise ValueError(f"telemetry_contract.producers.{event}: unknown phase {producer!r}")
        known(self.load, "load", "autonomy_app", self.load.autonomy_app)
        for i, app in enumerate(self.load.apps):
            if app not in ids:
                raise ValueError(f"load.apps[{i}]: unknown app {app!r}")
        for name in ("app", "upstream_app"):
            known(self.resiliency, "resiliency", name, getattr(self.resiliency, name))
        for name in ("retry_app", "cta_app"):
            known(self.learning, "learning", name, getattr(self.learning, name))
        known(self.growth, "growth", "app", self.growth.app)
        capacity = self.monitoring.capacity
        if "queue_probes" in capacity.model_fields_set:
            for i, probe in enumerate(capacity.queue_probes):
                if probe.app not in ids:
                    raise ValueError(f"monitoring.capacity.queue_probes[{i}].app: unknown app {probe.app!r}")
        for i, route in enumerate(self.hardening.routes):
            if route.app not in ids:
                raise ValueError(f"hardening.routes[{i}].app: unknown app {route.app!r}")
            if route.identity not in self.synthetic.identities:
                raise ValueError(f"hardening.routes[{i}].identity: {route.identity!r} is not one of "
                                 f"synthetic.identities ({', '.join(sorted(self.synthetic.identities))})")

    @model_validator(mode="after")
    def _cross_checks(self) -> Params:
        ids = {a.id for a in self.apps}
        if self.telemetry_key_secret and self.telemetry_key_secret not in self.secrets.names:
            raise ValueError(f"telemetry_key_secret: {self.telemetry_key_secret!r} is not in secrets.names")
        if self.telemetry_app is None and "telemetry_store" in self.capabilities:
            raise ValueError("capabilities: telemetry_store is declared but telemetry_app is null; name the app "
                             "that stores telemetry in telemetry_app, or remove telemetry_store from capabilities")
        if self.telemetry_app is not None and self.telemetry_app not in ids:
            raise ValueError(f"telemetry_app: {self.telemetry_app!r} is not one of the apps ({', '.join(sorted(ids))})")
        for i, route in enumerate(self.gate.enforcement_routes):
            if route.app not in ids:
                raise ValueError(f"gate.enforcement_routes[{i}].app: unknown app {route.app!r}")
        for i, appr in enumerate(self.approvals):
            unknown = [a for a in appr.apps if a not in ids]
            if unknown:
                raise ValueError(f"approvals[{i}].apps: unknown apps {unknown}")
        rate = self.smoke.samples_per_app / SMOKE_ENDPOINTS / self.windows.active.stable_window_s
        if rate > self.http.max_qps:
            raise ValueError(f"smoke: {self.smoke.samples_per_app} samples per app over the {self.windows.profile} "
                             f"stable window ({self.windows.active.stable_window_s:g} s) is {rate:.2f} requests/s "
                             f"per endpoint, above http.max_qps ({self.http.max_qps:g})")
        if self.latency.qps > self.http.max_qps:
            raise ValueError(f"latency.qps: {self.latency.qps:g} requests/s per endpoint is above "
                             f"http.max_qps ({self.http.max_qps:g})")
        for i, cmp in enumerate(self.latency.compare_flags):
            if cmp.app not in ids:
                raise ValueError(f"latency.compare_flags[{i}].app: unknown app {cmp.app!r}")
            if cmp.route not in {r.name for r in self.app(cmp.app).critical_routes}:
                raise ValueError(f"latency.compare_flags[{i}].route: {cmp.route!r} is not a critical route of {cmp.app}")
        self._contract_cross_checks(ids)
        if self.latency.compare_flags and self.target != "sandbox":
            raise ValueError("latency.compare_flags: flags can only be switched on the bundled sandbox")
        if self.target == "sandbox":
            foreign = [a.id for a in self.apps if a.id not in SANDBOX_APP_IDS]
            if foreign:
                raise ValueError(f"target sandbox: the sandbox serves {', '.join(SANDBOX_APP_IDS)}; "
                                 f"no app {', '.join(foreign)}")
            remote = [a.id for a in self.apps if not is_loopback(a.host)]
            if remote:
                raise ValueError(f"target sandbox: base_url of {', '.join(remote)} is not a loopback address")
            if self.environment != "staging":
                raise ValueError("target sandbox: environment must be staging")
        return self

    # -- conveniences used across phases ---------------------------------------------
    def app(self, app_id: str) -> App:
        for a in self.apps:
            if a.id == app_id:
                return a
        raise KeyError(f"no app {app_id!r} in params (apps: {', '.join(a.id for a in self.apps)})")

    @property
    def owners(self) -> dict[str, str]:
        return {a.id: a.owner for a in self.apps}

    def provides(self, name: str) -> bool:
        """Whether the ecosystem declares ``name`` (see :data:`Capability`).

        An unknown name raises instead of answering False: a misspelt requirement would
        otherwise skip its phase on every ecosystem.
        """
        if name not in CAPABILITIES:
            raise ValueError(f"unknown capability {name!r} (known: {', '.join(CAPABILITIES)})")
        return name in self.capabilities

    def rubric_path(self, params_file: str | os.PathLike[str] | None) -> Path:
        """The rubric file of this configuration; the one answer for validate, the runner and scoring.

        An explicit ``rubric_file`` resolves against the params file's folder (validation has
        checked that it exists). Left unset, it is ``rubric.yaml`` beside the params file when
        there is one, else the bundled ``params/rubric.yaml``: a params file copied out of
        the project still scores with the default ladder.
        """
        if self.rubric_file is not None:
            return resolve_param_path(self.rubric_file, params_file)
        beside = resolve_param_path(DEFAULT_RUBRIC_NAME, params_file)
        return beside if beside.is_file() else BUNDLED_RUBRIC

    def scan_roots(self, params_file: str | os.PathLike[str] | None) -> list[tuple[str, Path]]:
        """What the secret scan covers: each entry as written (or defaulted) and its absolute path.

        The one place that resolves ``security.scan_paths`` (validation and the scan both
        call it). Unset, it is the suite's own sources on the sandbox and nothing elsewhere.
        """
        entries = self.security.scan_paths
        if entries is None:
            entries = [str(p) for p in SANDBOX_SCAN_PATHS] if self.target == "sandbox" else []
        return [(entry, resolve_param_path(entry, params_file)) for entry in entries]

    def path_problems(self, params_file: str | os.PathLike[str] | None) -> list[str]:
        """``field: …`` lines for paths in the params that are not there (empty when all are).

        Only paths the user wrote are checked; the defaults fall back (rubric) or are the
        suite's own business (the sandbox's scan).
        """
        problems = []
        if self.rubric_file is not None:
            problems.append(_missing("rubric_file", self.rubric_file, params_file, file=True))
        for i, entry in enumerate(self.security.scan_paths or []):
            problems.append(_missing(f"security.scan_paths[{i}]", entry, params_file))
        return [p for p in problems if p is not None]

    @property
    def profile_note(self) -> str:
        return self.windows.note()

    def digest(self) -> str:
        """sha256 of the canonical JSON of the validated params (identifies a configuration)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


# -- loading -------------------------------------------------------------------------
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _loc(parts: tuple[Any, ...] | list[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def interpolate(node: Any, env: Mapping[str, str], path: tuple[Any, ...] = ()) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in string values; an unset ``${VAR}`` fails.

    Failing loudly matters: a silently empty base URL or token would send the audit at
    the wrong target or make every auth check fail for the wrong reason.
    ``$${`` stays a literal ``${``.
    """
    if isinstance(node, dict):
        return {k: interpolate(v, env, path + (k,)) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, env, path + (i,)) for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ParamsError("", [f"{_loc(path)}: environment variable {name} is not set (referenced as ${{{name}}})"])

    escaped = node.replace("$${", "\0")
    return _VAR.sub(sub, escaped).replace("\0", "${")


def format_validation_error(err: Mapping[str, Any]) -> str:
    loc = _loc(err.get("loc", ()))
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return f"{loc}: unknown key"
    if kind == "missing":
        return f"{loc}: required field is missing"
    msg = str(err.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    if kind.endswith("_type") or kind.endswith("_parsing"):
        msg = f"{msg} (got {err.get('input')!r})"
    if loc == "(top level)" and ": " in msg:  # model-level validators already name the field
        return msg
    return f"{loc}: {msg}"


def parse_params(data: Any, source: str = "<params>", env: Mapping[str, str] | None = None, *,
                 params_file: str | os.PathLike[str] | None = None) -> Params:
    """Validate an already-parsed YAML/JSON document.

    ``params_file`` is where the document was read from: relative paths in it resolve
    against that file's folder, or against the working directory when it is None.
    """
    if not isinstance(data, dict):
        raise ParamsError(source, ["(top level): expected a mapping of keys to values"])
    try:
        data = interpolate(data, os.environ if env is None else env)
    except ParamsError as exc:
        raise ParamsError(source, exc.errors) from None
    try:
        params = Params.model_validate(data)
    except ValidationError as exc:
        raise ParamsError(source, [format_validation_error(e) for e in exc.errors()]) from None
    problems = params.path_problems(params_file)
    if problems:
        raise ParamsError(source, problems)
    return params


def read_yaml(path: str | os.PathLike[str], error: Callable[[str, list[str]], Exception]) -> Any:
    """Parse a YAML file; unreadable or malformed files raise ``error(source, [message])``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(str(p), [f"cannot read file: {exc.strerror or exc}"]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise error(str(p), [f"{where}not valid YAML ({getattr(exc, 'problem', exc)})"]) from None


def load_params(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Params:
    """Read and validate a params file; :class:`ParamsError` names every bad field."""
    return parse_params(read_yaml(path, ParamsError), str(Path(path)), env, params_file=path)

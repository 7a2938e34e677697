"""Run the suite: every phase notebook in order, headless, into one run folder (DESIGN §2).

Each notebook is executed by :mod:`readiness.run.notebook_exec` (papermill's Python API, in
this process). A failing notebook does not end the run: it is
kept as evidence, its phase is ERROR, phases that depend on it are BLOCKED, and the run
goes on to render and score what it has. Ctrl-C or SIGTERM ends the run as
``interrupted``; a complete run is the only kind that keeps ``readiness_score.json``.

Human approval gates (:mod:`readiness.run.gates`) sit before the first phase that changes
staging (Gate 1) or acts on production (Gate 2). Without the approval in the params the
run stops there with status ``paused`` (rendered, signed, exit code 3) and the gate file
says what waits; ``run_suite(resume=RUN_DIR)`` continues the same folder once the params
hold it — only the approvals may differ, any other change is refused.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from readiness.core.check import Check, CheckFileError, Status, summarize
from readiness.core.runfolder import (
    PARAMS_SNAPSHOT,
    PENDING_SCORE,
    SCORE_FILE,
    DiskFull,
    RunFolder,
    RunFolderError,
    run_status,
)
from readiness.params.model import Params, load_params
from readiness.params.registry import REGISTRY, not_applicable_reason, phase_with
from readiness.phasekit.context import default_outputs_dir, project_root
from readiness.probe.sandbox_control import ensure_sandbox, reset_sandbox, stop_sandbox
from readiness.report.render import render_index, render_notebook
from readiness.run import gates
from readiness.run.notebook_exec import execute_notebook
from readiness.score.attestation import AttestationError, sign_run, signing_key, write_attestation
from readiness.score.rubric import load_rubric

SCORE_PHASE = phase_with("score")
GATE_PHASE = phase_with("gate")
GATE_CHECK = "inventory.gate.go"
PAUSED_EXIT = 3  # the run waits at a human approval gate (readiness run --resume RUN_DIR continues it)


class RunnerError(Exception):
    """Bad runner input (unknown phase, no notebooks); nothing has been written."""


class RunFailed(Exception):
    """The run itself failed (not a phase): the folder is kept with status failed."""

    def __init__(self, message: str, run_dir: Path):
        super().__init__(message)
        self.run_dir = run_dir


@dataclass
class PhaseResult:
    phase: str
    status: str  # OK | ERROR | SKIPPED (not applicable) | BLOCKED | STOPPED | WAITING (behind a human approval gate)
    elapsed_s: float
    notebook: str | None = None
    html: str | None = None
    leadership_html: str | None = None
    error: str | None = None


@dataclass
class RunOutcome:
    run_dir: Path
    status: str
    grade: str | None
    overall_score: float | None
    exit_code: int
    phases: list[PhaseResult]

    @property
    def index(self) -> Path:
        return self.run_dir / "index.html"


def notebooks_dir() -> Path:
    return Path(os.environ.get("READINESS_NOTEBOOKS", project_root() / "notebooks"))


def discover(folder: Path | None = None) -> dict[str, Path]:
    """Phase name → notebook path, for the registered phases that exist in the folder."""
    folder = folder or notebooks_dir()
    return {p.name: folder / p.notebook for p in REGISTRY if (folder / p.notebook).is_file()}


def select_phases(available: dict[str, Path], wanted: Sequence[str] | None) -> list[str]:
    """Resolve ``--phases`` (names or their two-digit prefixes) in execution order."""
    if not available:
        raise RunnerError(f"no phase notebooks found in {notebooks_dir()}")
    if not wanted:
        return list(available)
    chosen = []
    for w in wanted:
        match = [p for p in available if p == w or p.split("_", 1)[0] == w]
        if not match:
            raise RunnerError(f"unknown phase {w!r}; available: {', '.join(available)}")
        chosen.extend(match)
    return [p for p in available if p in chosen]


def _sigterm(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


_DISK_FULL = ("disk full", "No space left on device", "[Errno 28]")


def _disk_full(error: str | None) -> bool:
    """A phase that failed because the run folder's disk is full: the run cannot go on."""
    return bool(error) and any(mark in error for mark in _DISK_FULL)


def _blocked(run: RunFolder, phase: str, reason: str, status: Status) -> None:
    run.record_checks(phase, [Check(id=f"run.{phase}", phase=phase, title=f"phase {phase} executed",
                                    status=status, severity="P1", tags=("release_engineering",), detail=reason)])


def _gate_failure(run: RunFolder) -> str | None:
    """None when the gate says GO; otherwise why later phases are blocked.

    Only a PASS opens the gate: an undecided gate (INCONCLUSIVE) does not let mutating or
    loading phases proceed on the strength of data that could not decide.
    """
    gate = next((c for c in run.read_checks(GATE_PHASE) if c.id == GATE_CHECK), None)
    if gate is None:
        return "the Phase 0 gate was not evaluated"
    if gate.status is Status.PASS:
        return None
    verdict = "NO-GO" if gate.status is Status.FAIL else f"not GO ({gate.status})"
    return f"Phase 0 gate is {verdict}: {gate.detail}"


def _stop_condition(run: RunFolder) -> str | None:
    """A stop condition marked by an earlier phase (docs/phases.md#guardrails): later phases do not run."""
    stops = run.info().get("stop_conditions") or []
    return "stop condition: " + "; ".join(f"{s['phase']}: {s['reason']}" for s in stops) if stops else None


def _score(run: RunFolder, name: str = SCORE_FILE) -> dict[str, Any] | None:
    path = run.path(name)
    return json.loads(path.read_text()) if path.exists() else None


def _exit_code(fail_on: str | None, grade: str | None) -> int:
    if fail_on is None:
        return 0
    bad = {"red": {"Red"}, "yellow": {"Red", "Yellow"}}[fail_on]
    return 1 if grade is None or grade in bad else 0


def _index(run: RunFolder, params: Params, results: list[PhaseResult], score: dict[str, Any] | None) -> None:
    checks = run.read_decisions().checks
    per_phase = {r.phase: summarize(c for c in checks if c.phase == r.phase) for r in results}
    render_index(run, title=f"Readiness audit — {params.ecosystem} ({params.environment})",
                 phases=[asdict(r) for r in results], score=score, profile_note=params.profile_note,
                 checks_summary=per_phase)


def _core_digest(params: Params) -> str:
    """Digest of the params without their approvals: what must not change across a resume."""
    import hashlib

    data = params.model_dump(mode="json")
    data.pop("approvals", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _validated(params_path: Path) -> Params:
    """Params, rubric and attestation key checked: bad input is refused before anything is written."""
    params = load_params(params_path)  # ParamsError
    load_rubric(params.rubric_path(params_path))  # RubricError
    try:
        signing_key(params)
    except AttestationError as exc:
        raise RunnerError(str(exc)) from None
    return params


def _start(params_file: str | Path, phases: Sequence[str] | None, outputs: str | Path | None,
           available: dict[str, Path]) -> tuple[RunFolder, Path, Params, list[str], list[PhaseResult]]:
    """A new run: params and rubric validated, the run folder created (nothing written before)."""
    params_path = Path(params_file).resolve()
    params = _validated(params_path)
    chosen = select_phases(available, phases or params.phases)
    run = RunFolder.create(outputs or default_outputs_dir(), params, params_path)
    run.update_info(phases_selected=chosen, params_core_digest=_core_digest(params))
    return run, params_path, params, chosen, []


def _resume(run_dir: str | Path, params_file: str | Path | None, available: dict[str, Path],
            ) -> tuple[RunFolder, Path, Params, list[str], list[PhaseResult]]:
    """A paused run continued: same folder, same phases; only the approvals may have changed."""
    root = Path(run_dir).resolve()
    try:
        run = RunFolder.open(root, producer="runner")
    except RunFolderError as exc:
        raise RunnerError(str(exc)) from None
    status = run_status(root)
    if status != "paused":
        raise RunnerError(f"{root} is {status}, not paused at a gate: only a paused run can be resumed")
    info = run.info()
    params_path = Path(params_file or info["params_file"]).resolve()
    params = _validated(params_path)
    if _core_digest(params) != info.get("params_core_digest"):
        raise RunnerError(f"the params in {params_path} changed beyond their approvals since the run paused; "
                          "a resumed run must be judged by the params it started with: start a new run instead")
    chosen = list(info.get("phases_selected") or [])
    missing = [p for p in chosen if p not in available]
    if missing:
        raise RunnerError(f"cannot resume: the notebooks of {', '.join(missing)} are gone from {notebooks_dir()}")
    done = [PhaseResult(phase=p, **{k: v for k, v in (info.get("phases") or {}).get(p, {}).items()
                                    if k in PhaseResult.__dataclass_fields__})
            for p in chosen if (info.get("phases") or {}).get(p, {}).get("status") not in (None, "WAITING")]
    resumes = list(info.get("resumes") or []) + [{"at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                                                  "params_digest": params.digest(), "pid": os.getpid()}]
    run.write_json(PARAMS_SNAPSHOT, params.model_dump(mode="json"), producer="runner")
    run.update_info(status="running", pid=os.getpid(), finished_at=None, params_digest=params.digest(),
                    params_file=str(params_path), resumes=resumes)
    return run, params_path, params, chosen, done


def _blocked_after(run: RunFolder, done: Sequence[PhaseResult]) -> str | None:
    """On a resume: why later phases are blocked, from the Phase 0 gate that already ran."""
    gate = next((r for r in done if r.phase == GATE_PHASE), None)
    if gate is None or gate.status not in ("OK", "ERROR"):
        return None
    return f"{GATE_PHASE} failed: {gate.error}" if gate.status == "ERROR" else _gate_failure(run)


def run_suite(params_file: str | Path | None = None, *, phases: Sequence[str] | None = None,
              outputs: str | Path | None = None, fail_on: str | None = None, echo: Callable[[str], None] = print,
              resume: str | Path | None = None) -> RunOutcome:
    """Validate, create (or resume) the run folder, run the phases, render, finalize. See module doc."""
    if fail_on not in (None, "red", "yellow"):
        raise RunnerError(f"--fail-on must be red or yellow, got {fail_on!r}")
    if resume is None and params_file is None:
        raise RunnerError("give the params file (--params), or a paused run to continue (--resume RUN_DIR)")
    if resume is not None and phases:
        raise RunnerError("--phases cannot change on a resume: the run continues the phases it started with")
    available = discover()
    if resume is not None:
        run, params_path, params, chosen, results = _resume(resume, params_file, available)
    else:
        run, params_path, params, chosen, results = _start(params_file, phases, outputs, available)  # type: ignore[arg-type]

    def say(line: str) -> None:  # console output is redacted like files
        echo(run.redactor.redact_text(line))

    say(f"run folder: {run.root}" + (f" (resumed; {len(results)} phases already done)" if resume else ""))
    say(params.profile_note)
    previous = signal.signal(signal.SIGTERM, _sigterm)
    started_sandbox = False
    status = "failed"
    waiting_at: str | None = None
    t_run = time.monotonic()
    try:
        if params.target == "sandbox":
            t0 = time.monotonic()
            state, started_sandbox = ensure_sandbox(params)
            run.write_json("evidence/sandbox_flags.json", {"flags_by_app": reset_sandbox(params, state),
                                                            "faults": "cleared at run start"}, producer="runner")
            say(f"sandbox {'started' if started_sandbox else 'already running, reset to its params'} "
                 f"({time.monotonic() - t0:.1f} s)")
        blocked_reason: str | None = _blocked_after(run, results)
        if GATE_PHASE not in chosen and not resume:
            say(f"note: {GATE_PHASE} is not selected, so the Phase 0 gate is not evaluated in this run")
            run.record_checks("run", [Check(id="run.gate", phase="run", title="Phase 0 gate evaluated in this run",
                                            status=Status.INCONCLUSIVE, severity="P1", tags=("release_engineering",),
                                            detail=f"{GATE_PHASE} was not among the selected phases")])
        done = {r.phase for r in results}
        for i, phase in enumerate(chosen, 1):
            if phase in done:
                continue
            t0 = time.monotonic()
            stopped = _stop_condition(run)
            not_applicable = not_applicable_reason(phase, params.capabilities)
            gate = gates.gate_for(params, phase) if not not_applicable else None
            if not_applicable:
                _blocked(run, phase, not_applicable, Status.SKIPPED)
                result = PhaseResult(phase, "SKIPPED", 0.0, error=not_applicable)
            elif stopped and phase != SCORE_PHASE:
                _blocked(run, phase, stopped, Status.STOPPED)
                result = PhaseResult(phase, "STOPPED", 0.0, error=stopped)
            elif blocked_reason and phase != SCORE_PHASE:
                _blocked(run, phase, blocked_reason, Status.BLOCKED)
                result = PhaseResult(phase, "BLOCKED", 0.0, error=blocked_reason)
            elif gate and not (opened := gates.pass_gate(
                    run, params, gate, phase, waiting=chosen[i - 1:], so_far=run.info().get("phases") or {}
                    )).granted:
                waiting_at = opened.file
                for later in chosen[i - 1:]:
                    run.set_phase(later, status="WAITING", elapsed_s=0.0, error=f"waits for Gate {gate}")
                    results.append(PhaseResult(later, "WAITING", 0.0, error=f"waits for Gate {gate} approval"))
                say(f"paused at Gate {gate} before {phase}: {opened.reason}")
                say(f"what waits and how to continue: {run.path(opened.file)}")
                break
            else:
                say(f"[{i}/{len(chosen)}] {phase} …")
                error = execute_notebook(run, phase, available[phase], params_path)
                result = PhaseResult(phase, "ERROR" if error else "OK", 0.0, notebook=f"notebooks/{phase}.ipynb",
                                     error=error)
                if _disk_full(error):
                    raise DiskFull(f"{phase}: {error}")
                if error:
                    _blocked(run, phase, f"notebook failed: {error}", Status.ERROR)
                try:
                    result.html, result.leadership_html = render_notebook(run.path(result.notebook), run,
                                                                          phase=phase)
                except DiskFull:
                    raise
                except Exception as exc:  # the executed notebook is kept; only its HTML is missing
                    result.status = "ERROR"
                    result.error = f"{result.error + '; ' if result.error else ''}rendering failed: {exc}"
                if phase == GATE_PHASE:
                    blocked_reason = (f"{GATE_PHASE} failed: {error}" if error else _gate_failure(run))
            result.elapsed_s = round(time.monotonic() - t0, 1)
            run.set_phase(phase, **{k: v for k, v in asdict(result).items() if k != "phase"})
            results.append(result)
            say(f"[{i}/{len(chosen)}] {phase} {result.status} ({result.elapsed_s} s)"
                 + (f" — {result.error}" if result.error else ""))
        erred = _erred(results)
        status = "paused" if waiting_at else ("failed" if erred else "complete")
        if erred:
            run.update_info(error=f"phases ended ERROR: {', '.join(erred)}")
        if status == "complete" and "2" not in (run.info().get("gates") or {}):
            gates.handover_gate_2(run, params, run.info().get("phases") or {})
    except KeyboardInterrupt:
        status = "interrupted"
        say("interrupted: the run folder is kept with status interrupted")
    except DiskFull as exc:  # nothing more can be written: stop at once, keep what is there
        status = "failed"
        failure = f"disk full, the run stopped: {exc}"
        say(f"run failed: {failure}")
        try:
            run.update_info(error=failure)
        except RunFolderError:
            pass
    except Exception as exc:
        message = run.redactor.redact_text(str(exc))
        run.update_info(error=f"{type(exc).__name__}: {message}")
        say(f"run failed: {message}")
        raise RunFailed(message, run.root) from exc
    finally:
        signal.signal(signal.SIGTERM, previous)
        if started_sandbox:
            stop_sandbox(params)
        try:
            try:  # before the index (it links reports/) and before finalize (so the manifest lists it)
                write_attestation(run, params, status=status)
            except (CheckFileError, RunFolderError) as exc:
                say(f"attestation not written: {exc}")
            try:
                _index(run, params, results, _score(run, PENDING_SCORE) if status == "complete" else None)
            except RunFolderError as exc:  # a full disk: the index is lost, the evidence is kept
                say(f"index not written: {exc}")
        finally:
            try:
                run.finalize(status)
            except RunFolderError as exc:  # run.json keeps its last state; a dead 'running' reads interrupted
                say(f"run folder not finalized: {exc}")
            try:  # after finalize: the signature covers the final manifest.json
                signed = sign_run(run.root, params)
                say(f"signed manifest.json ({signed.key_source}, key sha256 {signed.fingerprint[:16]}…)")
            except (AttestationError, OSError, RunFolderError) as exc:
                say(f"run not signed: {exc}")
    score = _score(run) if status == "complete" else None
    grade = score.get("grade") if score else None
    codes = {"interrupted": 130, "paused": PAUSED_EXIT}
    outcome = RunOutcome(run.root, status, grade, score.get("overall_score") if score else None,
                         _exit_code(fail_on, grade) if status == "complete" else codes.get(status, 1), results)
    say(f"run {status} in {time.monotonic() - t_run:.1f} s"
         + (f" — grade {grade}, score {outcome.overall_score}" if grade else "")
         + (f" — waiting for approval: {run.path(waiting_at)}" if waiting_at else ""))
    say(f"report: {outcome.index}")
    erred = _erred(results)
    if erred:  # the last line says which phases erred (the exit code is non-zero)
        say(f"phases ended ERROR: {', '.join(erred)} (status {status}, exit {outcome.exit_code})")
    elif status == "failed":
        say(f"run failed (exit {outcome.exit_code}): {run_error(run)}")
    return outcome


def _erred(results: Sequence[PhaseResult]) -> list[str]:
    """The phases that ended ERROR, in run order."""
    return [r.phase for r in results if r.status == "ERROR"]


def run_error(run: RunFolder) -> str:
    """The recorded reason a run failed, or a note that none was recorded."""
    try:
        return str(run.info().get("error") or "no reason recorded")
    except (OSError, ValueError):
        return "run.json unreadable"

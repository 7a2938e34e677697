"""Command line: ``readiness run | validate | verify | sandbox up|down|status | latest | load-segment | load-merge
| cleanup``.

Exit codes: 0 success; 1 the run failed or ``--fail-on`` was met (``verify``: a hash or the
signature does not match); 2 bad input (params, phase names, no such run folder), with
nothing written; 3 the run is paused at a human approval gate (``run --resume RUN_DIR``
continues it once the params hold the approval); 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from readiness.core.runfolder import MANIFEST, RunFolderError, latest_complete_run
from readiness.params.model import ConfigFileError, load_params
from readiness.phasekit.context import default_outputs_dir, project_root
from readiness.score.rubric import load_rubric


def default_params() -> str:
    return str(project_root() / "params" / "sandbox.yaml")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="readiness", description="Readiness audit suite for a fleet of web services.")
    sub = ap.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the audit phases into a new run folder (or continue a paused one)")
    run.add_argument("--params", help="params YAML (default: the bundled sandbox; on --resume: the run's own)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue a run paused at a gate, in its own folder")
    run.add_argument("--phases", help="comma-separated phases, by name or number (e.g. 00,01,11)")
    run.add_argument("--fail-on", choices=("red", "yellow"), help="exit 1 when the grade is this bad or worse")
    run.add_argument("--out", help="outputs folder (default: outputs/ in the project)")

    val = sub.add_parser("validate", help="validate a params file and print its digest")
    val.add_argument("--params", default=default_params())

    ver = sub.add_parser("verify", help="check a run folder against its manifest and the manifest's signature")
    ver.add_argument("run_dir", metavar="RUN_DIR", help="the run folder (outputs/<YYYYMMDD-HHMMSS>)")
    ver.add_argument("--public-key", help="PEM Ed25519 public key you trust (default: the one beside the signature)")

    sb = sub.add_parser("sandbox", help="start, stop or inspect the bundled sandbox")
    sb.add_argument("action", choices=("up", "down", "status"))
    sb.add_argument("--params", default=default_params())

    latest = sub.add_parser("latest", help="print the latest complete run folder")
    latest.add_argument("--out", help="outputs folder (default: outputs/ in the project)")

    seg = sub.add_parser("load-segment", help="run one execution segment of the baseline load (docs/distributed_load.md)")
    seg.add_argument("--params", default=default_params())
    seg.add_argument("--index", type=int, required=True, help="this segment, 0-based")
    seg.add_argument("--of", type=int, required=True, help="number of segments (machines)")
    seg.add_argument("--out", required=True, help="folder for this segment's points, summary and log")
    seg.add_argument("--token", help="trace-id prefix shared by the segments (default: a new one)")

    merge = sub.add_parser("load-merge", help="merge load-segment folders into a run folder's load evidence")
    merge.add_argument("dirs", nargs="+", help="the folders written by load-segment, one per segment")
    merge.add_argument("--run-dir", required=True, help="run folder to receive the merged points")

    clean = sub.add_parser("cleanup", help="list (--dry-run) or delete the synthetic data of a namespace")
    clean.add_argument("--params", default=default_params())
    clean.add_argument("--namespace", required=True, help="the synthetic namespace (params.synthetic.tags.namespace)")
    clean.add_argument("--dry-run", action="store_true", help="list what would be deleted; delete nothing")
    clean.add_argument("--run-dir", help="run folder to receive the log (default: a new run folder under --out)")
    clean.add_argument("--out", help="outputs folder for a new run folder (default: outputs/ in the project)")
    clean.add_argument("--force-namespace", action="store_true",
                       help="allow a namespace other than the one the params tag synthetic traffic with")
    return ap


def _load_segment(args: argparse.Namespace) -> int:
    from readiness.phases.load.segments import run_segment

    try:
        meta = run_segment(args.params, args.index, args.of, args.out, token=args.token)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stopped = (meta["stop"] or {}).get("met")
    print(f"segment {meta['index']}/{meta['of']}: k6 exit {meta['exit_code']}, written to {args.out}"
          + (f"; stopped: {stopped['reason']}" if stopped else ""))
    return 0 if meta["exit_code"] in (0, 99) or stopped else 1


def _load_merge(args: argparse.Namespace) -> int:
    from readiness.phases.load.segments import merge_segments

    try:
        meta = merge_segments(args.dirs, args.run_dir)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"merged {meta['segments']} segments from {', '.join(meta['hosts'])} into {args.run_dir}; analyse with "
          "notebook 03_baseline_load (use_existing_points=True)")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from readiness.score.attestation import ALGORITHM, AttestationError, verify_run

    try:
        result = verify_run(Path(args.run_dir), Path(args.public_key) if args.public_key else None)
    except AttestationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    notes = [f"  note: {note}" for note in result.notes]
    if result.ok:
        print("\n".join([f"{result.run_dir}: verified",
                         f"  files: {result.files_checked} match {MANIFEST} (sha256 and size)",
                         f"  signature: {ALGORITHM} over sha256({MANIFEST}) {result.manifest_sha256} verifies with "
                         f"{result.key_used} (key sha256 {result.fingerprint})", *notes]))
        return 0
    n = len(result.problems)
    print("\n".join([f"{result.run_dir}: NOT verified — {n} problem{'s' * (n != 1)}",
                     *[f"  - {p}" for p in result.problems], *notes]))
    return 1


def _sandbox(action: str, params_file: str) -> int:
    from readiness.probe.sandbox_control import SandboxError, ensure_sandbox, sandbox_status, stop_sandbox

    params = load_params(params_file)
    if params.target != "sandbox":
        print(f"{params_file}: target is {params.target}; only a sandbox target has a sandbox", file=sys.stderr)
        return 2
    if action == "up":
        try:
            state, started = ensure_sandbox(params)
        except SandboxError as exc:
            print(str(exc), file=sys.stderr)
            return 1
        print(f"sandbox {'started' if started else 'already running'} (state: {state.state_dir})")
        for app_id, url in state.apps.items():
            print(f"  {app_id}  {url}")
        return 0
    if action == "down":
        stopped = stop_sandbox(params)
        print(f"stopped: {', '.join(stopped)}" if stopped else "sandbox was not running")
        return 0
    state = sandbox_status(params)
    if state is None:
        print("sandbox is not running")
        return 3
    print(f"sandbox running since {state.started_at} (state: {state.state_dir})")
    for app_id, url in state.apps.items():
        print(f"  {app_id}  {url}  pid {state.pids.get(app_id)}")
    return 0


def _cleanup(args: argparse.Namespace) -> int:
    """``readiness cleanup``: 0 done, 1 an app failed or rows remain after a real run, 2 bad input."""
    from readiness.core.runfolder import RunFolder
    from readiness.phases.security_ops.cleanup import CleanupError, check_namespace, log_lines, run_cleanup
    from readiness.probe.sandbox_control import ensure_sandbox, sandbox_status
    from sandbox import launcher

    params = load_params(args.params)
    try:
        check_namespace(params, args.namespace, force=args.force_namespace)
    except CleanupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if params.target == "sandbox":  # never start one: a fresh sandbox holds nothing to clean
        state = sandbox_status(params)
        wanted = {a.id: a.base_url for a in params.apps}
        if state is None or dict(state.apps) != wanted or not all(launcher.health(state).values()):
            print(f"error: the sandbox of {args.params} is not running (start it with `readiness sandbox up "
                  f"--params {args.params}`); nothing to clean", file=sys.stderr)
            return 2
        ensure_sandbox(params)  # running as wanted: only exports its admin token to this process
    try:
        run = RunFolder.open(args.run_dir, producer="cleanup") if args.run_dir else \
            RunFolder.create(args.out or default_outputs_dir(), params, args.params, mode="cleanup")
    except RunFolderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        report = run_cleanup(params, namespace=args.namespace, dry_run=args.dry_run, run=run,
                             force_namespace=args.force_namespace)
    except CleanupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.run_dir:
        run.finalize("complete" if report.ok else "failed")
    print("\n".join(log_lines(report)))
    print(f"log: {run.path(report.log or '')}")
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "validate":
            params = load_params(args.params)
            rubric = params.rubric_path(args.params)
            load_rubric(rubric)
            print(f"{args.params}: valid ({len(params.apps)} apps, {params.environment}, "
                  f"profile {params.windows.profile}, digest {params.digest()[:12]}); rubric {rubric}: valid")
            return 0
        if args.command == "sandbox":
            return _sandbox(args.action, args.params)
        if args.command == "verify":
            return _verify(args)
        if args.command == "load-segment":
            return _load_segment(args)
        if args.command == "load-merge":
            return _load_merge(args)
        if args.command == "cleanup":
            return _cleanup(args)
        if args.command == "latest":
            found = latest_complete_run(args.out or default_outputs_dir())
            if found is None:
                print("no complete run found", file=sys.stderr)
                return 1
            print(found)
            return 0
        from readiness.run.runner import RunFailed, RunnerError, run_suite

        phases = [p.strip() for p in args.phases.split(",") if p.strip()] if args.phases else None
        try:
            params = Path(args.params) if args.params else None if args.resume else Path(default_params())
            outcome = run_suite(params, phases=phases, outputs=args.out, fail_on=args.fail_on, resume=args.resume)
        except RunnerError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except RunFailed as exc:
            print(f"run failed: {exc} (run folder kept: {exc.run_dir})", file=sys.stderr)
            return 1
        return outcome.exit_code
    except ConfigFileError as exc:  # params or rubric: nothing has been written
        print(str(exc), file=sys.stderr)
        return 2
    except RunFolderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

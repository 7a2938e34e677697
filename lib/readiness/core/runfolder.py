"""The run folder: the only writer of files a run produces.

Why one writer: every artifact must be written atomically (a killed run leaves either
the old file or the new one, never half of one), must have configured secret values
redacted before the bytes reach disk, and must appear in the manifest with its producer.
Doing that in one place is the only way to make it true everywhere.

Layout (relative to ``outputs/<YYYYMMDD-HHMMSS>/``)::

    run.json  params.json  manifest.json  readiness_score.json  index.html
    checks/<phase>.json  reports/  evidence/  charts/  notebooks/  html/  html/leadership/
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import math
import os
import platform
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from readiness.core.check import Check, load_checks
from readiness.core.multiplicity import Adjusted, adjust
from readiness.core.redact import Redactor

RUN_FILE = "run.json"
MANIFEST = "manifest.json"
PARAMS_SNAPSHOT = "params.json"
SCORE_FILE = "readiness_score.json"
PENDING_SCORE = "readiness_score.pending.json"
INCOMPLETE_SCORE = "readiness_score.incomplete.json"
# formats whose bytes cannot be patched in place (compressed or framed): data is redacted before
# serialising (see write_frame), and a secret still found in the bytes is an error, not a patch
BINARY_SUFFIXES = (".parquet", ".gz", ".zip", ".png", ".jpg", ".jpeg", ".pdf")
_PRODUCERS = ".producers.jsonl"
STATUSES = ("running", "complete", "interrupted", "failed", "paused")  # paused: waiting at a human approval gate
_UMASK = os.umask(0o022)
os.umask(_UMASK)
ALWAYS_SECRET = ("SANDBOX_ADMIN_TOKEN",)  # the sandbox's admin token is a secret too


class RunFolderError(Exception):
    """A run-folder operation failed; the message says what and that nothing was replaced."""


class DiskFull(RunFolderError):
    """The run folder's disk is full: nothing more can be written, so the run must stop at once."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def library_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("readiness-audit")
    except PackageNotFoundError:
        return "0+unknown"


class RunFolder:
    """A run folder on disk. Create with :meth:`create`, reopen with :meth:`open`."""

    def __init__(self, root: Path, secret_names: list[str], producer: str | None = None):
        self.root = root
        self.secret_names = list(secret_names) + [n for n in ALWAYS_SECRET if n not in secret_names]
        self.producer = producer

    @property
    def redactor(self) -> Redactor:
        """Built from the environment at each write: secrets may appear mid-run (sandbox start)."""
        return Redactor.from_names(self.secret_names)

    # -- creation ------------------------------------------------------------------
    @classmethod
    def create(cls, outputs_dir: str | os.PathLike[str], params: Any, params_file: str | os.PathLike[str],
               *, now: dt.datetime | None = None, mode: str = "runner") -> RunFolder:
        """Make ``outputs/<YYYYMMDD-HHMMSS>/`` and write ``run.json`` (status running)."""
        start = now or _now()
        outputs = Path(outputs_dir)
        try:
            outputs.mkdir(parents=True, exist_ok=True)
            stamp = start.astimezone().strftime("%Y%m%d-%H%M%S")
            root, k = outputs / stamp, 1
            while True:
                try:
                    root.mkdir()
                    break
                except FileExistsError:
                    k += 1
                    root = outputs / f"{stamp}-{k}"
        except OSError as exc:
            raise RunFolderError(f"cannot create a run folder under {outputs}: {exc.strerror or exc}") from None
        run = cls(root, params.secrets.names)
        run.write_json(PARAMS_SNAPSHOT, params.model_dump(mode="json"), producer="runner")
        run.write_json(RUN_FILE, {
            "version": library_version(),
            "status": "running",
            "mode": mode,  # runner: `readiness run` finalizes it; interactive: a notebook session does
            "started_at": _iso(start),
            "finished_at": None,
            "pid": os.getpid(),
            "params_file": str(Path(params_file).resolve()),
            "params_digest": params.digest(),
            "ecosystem": params.ecosystem,
            "environment": params.environment,
            "profile": params.windows.profile,
            "profile_note": params.profile_note,
            "platform": {"python": sys.version.split()[0], "system": platform.platform(),
                         "machine": platform.machine(), "node": platform.node()},
            "phases": {},
        }, producer="runner")
        return run

    @classmethod
    def open(cls, run_dir: str | os.PathLike[str], producer: str | None = None) -> RunFolder:
        """Reopen an existing run folder (a notebook joining the run, or an analyst)."""
        root = Path(run_dir)
        if not (root / RUN_FILE).is_file():
            raise RunFolderError(f"{root} is not a run folder (no {RUN_FILE})")
        names: list[str] = []
        snap = root / PARAMS_SNAPSHOT
        if snap.is_file():
            names = json.loads(snap.read_text()).get("secrets", {}).get("names", [])
        return cls(root, names, producer)

    # -- writing -------------------------------------------------------------------
    def path(self, relpath: str) -> Path:
        target = (self.root / relpath).resolve()
        if self.root.resolve() not in target.parents and target != self.root.resolve():
            raise RunFolderError(f"{relpath!r} points outside the run folder")
        return target

    def write_bytes(self, relpath: str, data: bytes, *, producer: str | None = None) -> Path:
        """Write atomically (temp file + fsync + rename) after redacting secret values."""
        target = self.path(relpath)
        redactor = self.redactor
        if target.suffix.lower() in BINARY_SUFFIXES:
            leaked = redactor.found_in(data)
            if leaked:
                raise RunFolderError(f"could not write {relpath}: it contains the value of {', '.join(leaked)}; "
                                     "binary artifacts must be redacted before they are serialised")
        else:
            data = redactor.redact_bytes(data)
        tmp_name = None
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; artifacts are meant to be shared
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp_name, target)
        except OSError as exc:
            if tmp_name and os.path.exists(tmp_name):
                os.unlink(tmp_name)
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            why = "disk full" if full else (exc.strerror or str(exc))
            raise (DiskFull if full else RunFolderError)(
                f"could not write {relpath}: {why}; the previous content (if any) is unchanged") from None
        self._note_producer(relpath, producer or self.producer)
        return target

    def write_text(self, relpath: str, text: str, *, producer: str | None = None) -> Path:
        return self.write_bytes(relpath, text.encode("utf-8"), producer=producer)

    def write_json(self, relpath: str, obj: Any, *, producer: str | None = None) -> Path:
        """Strict JSON: a non-finite float (a latency without an answer, a NaN) is written as null,
        since JSON has no infinity; the report beside it says what the missing value means."""
        text = json.dumps(_finite(obj), indent=2, sort_keys=False, default=str, allow_nan=False)
        return self.write_text(relpath, text + "\n", producer=producer)

    def write_frame(self, relpath: str, frame: Any, *, producer: str | None = None) -> Path:
        """A pandas DataFrame as Parquet, with secret values redacted in every text column first."""
        import io

        from pandas.api.types import is_object_dtype, is_string_dtype

        redactor = self.redactor
        clean = frame.copy()
        for col in clean.columns:
            if is_object_dtype(clean[col]) or is_string_dtype(clean[col]):
                clean[col] = clean[col].map(lambda v: redactor.redact_text(v) if isinstance(v, str) else v)
        buf = io.BytesIO()
        clean.to_parquet(buf, index=False)
        return self.write_bytes(relpath, buf.getvalue(), producer=producer)

    def _note_producer(self, relpath: str, producer: str | None) -> None:
        if producer is None or relpath == _PRODUCERS:
            return
        line = json.dumps({"path": relpath, "producer": producer}) + "\n"
        try:  # a single short O_APPEND write is atomic between the kernels sharing a run
            with open(self.root / _PRODUCERS, "a", encoding="utf-8") as fh:
                fh.write(line)
        except OSError:
            pass  # losing provenance must not lose the artifact itself

    # -- checks --------------------------------------------------------------------
    def record_checks(self, phase: str, checks: Iterable[Check]) -> Path:
        """Merge checks into ``checks/<phase>.json`` (same id replaces), keep order of arrival."""
        existing = {c.id: c for c in self.read_checks(phase)}
        for c in checks:
            existing[c.id] = c
        return self.write_json(f"checks/{phase}.json",
                               {"phase": phase, "checks": [c.to_dict() for c in existing.values()]},
                               producer=phase)

    def read_checks(self, phase: str | None = None) -> list[Check]:
        """Recorded checks of one phase or of all; a malformed file raises CheckFileError naming it."""
        return load_checks(self.root, phase)

    def read_decisions(self, *, exclude_phase: str | None = None) -> Adjusted:
        """Every phase's checks (but ``exclude_phase``'s) as the run decides them: each FAIL
        held to the run-wide multiplicity correction (:mod:`readiness.core.multiplicity`).
        What the score, the closing report and the cards read; each phase's own file keeps
        the check as its rule decided it."""
        return adjust([c for c in load_checks(self.root) if c.phase != exclude_phase])

    # -- status and manifest ---------------------------------------------------------
    def info(self) -> dict[str, Any]:
        return json.loads((self.root / RUN_FILE).read_text())

    def update_info(self, **fields: Any) -> None:
        info = self.info()
        info.update(fields)
        self.write_json(RUN_FILE, info, producer="runner")

    def set_phase(self, phase: str, **fields: Any) -> None:
        info = self.info()
        info.setdefault("phases", {}).setdefault(phase, {}).update(fields)
        self.write_json(RUN_FILE, info, producer="runner")

    def finalize(self, status: str) -> None:
        """Write the manifest and the final status.

        The score phase writes ``readiness_score.pending.json``; only a complete run
        promotes it to ``readiness_score.json``. Any other run keeps it as
        ``readiness_score.incomplete.json`` (for diagnosis, never taken as a score).
        """
        if status not in STATUSES[1:]:
            raise ValueError(f"final status must be one of {STATUSES[1:]}, got {status!r}")
        for name in (PENDING_SCORE, SCORE_FILE):
            src = self.root / name
            if src.exists() and not (status == "complete" and name == SCORE_FILE):
                os.replace(src, self.root / (SCORE_FILE if status == "complete" else INCOMPLETE_SCORE))
        self.write_manifest()
        self.update_info(status=status, finished_at=_iso(_now()))

    def reopen(self) -> bool:
        """Make a finished (or abandoned) run writable again for an analyst's re-run of a phase.

        The run becomes ``running`` in ``interactive`` mode under this process; its score,
        now stale, is kept as ``readiness_score.superseded.json``. Returns False (and does
        nothing) while the run is still being written by a live process.
        """
        if run_status(self.root) == "running":
            return False
        score = self.root / SCORE_FILE
        if score.exists():
            os.replace(score, self.root / "readiness_score.superseded.json")
        self.update_info(status="running", mode="interactive", pid=os.getpid(), reopened_at=_iso(_now()),
                         finished_at=None)
        return True

    def write_manifest(self) -> Path:
        """sha256 and size of every file. ``run.json`` is left out: it is written after the
        manifest, last, so that its ``complete`` status is the final word on the run."""
        producers: dict[str, str] = {}
        ledger = self.root / _PRODUCERS
        if ledger.is_file():
            for line in ledger.read_text().splitlines():
                try:
                    row = json.loads(line)
                    producers[row["path"]] = row["producer"]
                except (ValueError, KeyError):
                    continue
        files = []
        for f in sorted(p for p in self.root.rglob("*") if p.is_file()):
            rel = f.relative_to(self.root).as_posix()
            if rel in (MANIFEST, RUN_FILE) or f.name.startswith(".") or rel.startswith("attestation/"):
                continue
            digest = hashlib.sha256(f.read_bytes()).hexdigest()
            files.append({"path": rel, "sha256": digest, "bytes": f.stat().st_size,
                          "producer": producers.get(rel)})
        return self.write_json(MANIFEST, {"generated_at": _iso(_now()), "files": files}, producer="runner")


def _finite(obj: Any) -> Any:
    """``obj`` with every non-finite float (inf, NaN) replaced by None, containers walked."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if hasattr(obj, "dtype") and getattr(obj, "shape", None) == ():  # a numpy scalar
        return _finite(obj.item())
    return obj


def run_status(run_dir: str | os.PathLike[str]) -> str:
    """Status of a run; a 'running' run whose process is gone is reported 'interrupted'."""
    try:
        info = json.loads((Path(run_dir) / RUN_FILE).read_text())
    except (OSError, ValueError):
        return "unknown"
    status = info.get("status", "unknown")
    if status == "running" and not _pid_alive(info.get("pid")):
        return "interrupted"
    return status


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def latest_complete_run(outputs_dir: str | os.PathLike[str], *, exclude: str | os.PathLike[str] | None = None,
                        ecosystem: str | None = None, phase_ok: str | None = None) -> Path | None:
    """The newest complete run under ``outputs_dir`` (baselines), skipping ``exclude``.

    ``phase_ok`` also requires that phase to have run without error in it: a complete run
    whose latency phase failed is no baseline for latency.
    """
    outputs = Path(outputs_dir)
    if not outputs.is_dir():
        return None
    skip = Path(exclude).resolve() if exclude else None
    for d in sorted((p for p in outputs.iterdir() if p.is_dir()), key=lambda p: p.name, reverse=True):
        if skip is not None and d.resolve() == skip:
            continue
        if run_status(d) != "complete":
            continue
        try:
            info = json.loads((d / RUN_FILE).read_text())
        except (OSError, ValueError):
            continue
        if ecosystem is not None and info.get("ecosystem") != ecosystem:
            continue
        if phase_ok is not None and (info.get("phases") or {}).get(phase_ok, {}).get("status") != "OK":
            continue
        return d
    return None

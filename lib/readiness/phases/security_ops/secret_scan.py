"""Hard-coded secret scan (docs/phases.md#10-security-and-ops): detect-secrets
over the source trees named by ``params.security.scan_paths``, as resolved by
:meth:`readiness.params.model.Params.scan_roots` (relative to the params file's folder).

detect-secrets is used through its Python API with its default plugins and filters, so
a finding here is exactly what ``detect-secrets scan`` would report, including its
inline ``pragma: allowlist secret`` opt-out. What to leave out is configuration, never
code: deliberately fake fixtures are excluded by a ``security.scan_exclude`` regex, so
the exclusion is visible in the params and in the evidence.

A finding is reported as file, line and detector type only. The matched value never
leaves memory, and neither does detect-secrets' ``hashed_secret``: an unsalted SHA-1 of
a short or structured token can be reversed by guessing, so it would be a leak of its
own.
"""

from __future__ import annotations

import os
import re
from importlib.metadata import version
from pathlib import Path

import pandas as pd

from readiness.core.check import Check, Status
from readiness.core.verdict import value_check
from readiness.phasekit.context import Phase

EVIDENCE = "evidence/secret_scan.json"
CHECK_ID = "security.secrets.scan"
COLUMNS = ["file", "line", "type"]


def compile_excludes(patterns: list[str]) -> list[re.Pattern[str]]:
    """The ``scan_exclude`` regexes, compiled; a bad one is an error naming it."""
    out = []
    for i, pattern in enumerate(patterns):
        try:
            out.append(re.compile(pattern))
        except re.error as exc:
            raise ValueError(f"security.scan_exclude[{i}]: invalid regex {pattern!r}: {exc}") from None
    return out


def _excluded(rel: str, excludes: list[re.Pattern[str]]) -> bool:
    return any(p.search(rel) for p in excludes)


def collect_files(base: Path, roots: list[tuple[str, Path]],
                  excludes: list[re.Pattern[str]]) -> tuple[list[tuple[Path, str]], list[str]]:
    """Files to scan as (absolute path, path shown in findings) and the scan paths not found.

    ``roots`` are the scan paths as written and where they resolve
    (:meth:`~readiness.params.model.Params.scan_roots`; resolving is not repeated here). The
    shown path is relative to ``base`` (the params file's folder) with ``/`` separators,
    and it is what the exclude regexes are searched in (a directory is tested with a
    trailing ``/`` so that ``\\.venv/`` prunes the whole tree). Symbolic links to
    directories are not followed. A path validated at load time may have gone since: it is
    reported missing, not skipped.
    """
    files: dict[Path, str] = {}
    missing: list[str] = []

    def shown(path: Path) -> str:
        return Path(os.path.relpath(path, base)).as_posix()

    for entry, path in roots:
        root = path.resolve()
        if root.is_file():
            if not _excluded(shown(root), excludes):
                files.setdefault(root, shown(root))
            continue
        if not root.is_dir():
            missing.append(entry)
            continue
        for folder, dirs, names in os.walk(root):
            here = Path(folder)
            dirs[:] = sorted(d for d in dirs if not _excluded(shown(here / d) + "/", excludes))
            for name in sorted(names):
                path = here / name
                if path.is_file() and not path.is_symlink() and not _excluded(shown(path), excludes):
                    files.setdefault(path, shown(path))
    return sorted(files.items(), key=lambda item: item[1]), missing


def scan_files(files: list[tuple[Path, str]]) -> list[dict[str, object]]:
    """detect-secrets (default plugins and filters) over ``files``: file, line, type per finding."""
    from detect_secrets import SecretsCollection
    from detect_secrets.settings import default_settings

    shown = {str(path): rel for path, rel in files}
    collection = SecretsCollection()
    with default_settings():
        for path, _rel in files:
            collection.scan_file(str(path))
    findings = [{"file": shown.get(filename, filename), "line": int(secret.line_number), "type": secret.type}
                for filename, secret in collection]
    return sorted(findings, key=lambda f: (str(f["file"]), int(str(f["line"])), str(f["type"])))


def _plugins() -> list[str]:
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class

    return sorted(cls.__name__ for cls in get_mapping_from_secret_type_to_class().values())


def secrets_check(phase_name: str, findings: list[dict[str, object]], files_scanned: int,
                  missing: list[str]) -> Check:
    """FAIL naming every finding; PASS with the files scanned; INCONCLUSIVE with nothing
    scanned, or when a configured scan path is missing (the scan did not cover what the
    params promise, so a clean result proves less than it says)."""
    listed = "; ".join(f"{f['file']}:{f['line']}:{f['type']}" for f in findings)
    gap = f"scan paths not found: {', '.join(missing)}" if missing else ""
    if findings:
        observed: int | None = len(findings)
        detail = "; ".join(x for x in (listed, gap) if x)
    elif files_scanned == 0:
        observed, detail = None, "no file was scanned" + (f" ({gap})" if gap else "")
    elif missing:
        observed, detail = None, f"{files_scanned} files scanned, none with a finding, but {gap}"
    else:
        observed, detail = 0, f"{files_scanned} files scanned, no finding"
    return value_check(id=CHECK_ID, phase=phase_name, title="No hard-coded secrets in the scanned sources",
                       observed=observed, expected=0, comparator="==", unit="findings", n=files_scanned,
                       tags=("security",), evidence=(EVIDENCE,), severity="P0", detail=detail)


def scan_secrets(phase: Phase) -> pd.DataFrame:
    """Scan, record ``security.secrets.scan`` and write ``evidence/secret_scan.json``;
    returns the findings (file, line, type), empty when there are none."""
    sec = phase.params.security
    base = phase.params_file.resolve().parent
    roots = phase.params.scan_roots(phase.params_file)
    excludes = compile_excludes(sec.scan_exclude)
    files, missing = collect_files(base, roots, excludes)
    findings = scan_files(files)
    check = secrets_check(phase.name, findings, len(files), missing)
    if not roots:  # nothing to scan was named: not applicable, rather than undecided
        check = check.with_status(Status.SKIPPED, "not applicable: no source paths to scan are configured "
                                                  "(params security.scan_paths)")
    phase.run.write_json(EVIDENCE, {
        "tool": f"detect-secrets {version('detect-secrets')}", "plugins": _plugins(),
        "base": "the params file's folder", "scan_paths": [entry for entry, _ in roots], "scan_exclude": list(sec.scan_exclude),
        "missing_paths": missing, "files_scanned": len(files), "findings": findings,
        "note": "file, line and detector type only; no secret value or hash is recorded",
        "check": check.to_dict()})
    phase.record([check])
    return pd.DataFrame(findings, columns=COLUMNS)

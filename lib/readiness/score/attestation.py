"""The signed "live and autonomous" attestation, and the verifier a reviewer runs on it.

Three steps, in this order, because each one covers the one before: :func:`write_attestation`
writes ``reports/system_live_and_autonomous.md`` (one statement per claim (docs/phases.md#11-readiness-score), its
verdict from the recorded checks, links to their evidence) *before* the run finalizes, so
the manifest lists it; the run folder writes ``manifest.json`` (sha256 and size of every
file); :func:`sign_run` signs the SHA-256 of ``manifest.json`` with Ed25519.

:func:`verify_run` (``readiness verify RUN_DIR``) walks the chain back: every file against
the manifest, the manifest against the signature. ``run.json`` is the one file outside the
chain: the run folder rewrites it after the manifest so that its final status is the last
word on the run; the verifier says so rather than pretending it is covered.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from readiness.core.check import Check, Status
from readiness.core.runfolder import MANIFEST, PENDING_SCORE, RUN_FILE, SCORE_FILE, RunFolder
from readiness.core.verdict import combine
from readiness.params.model import Params
from readiness.params.registry import CLAIMS as REGISTRY_CLAIMS
from readiness.params.registry import claim_phases, claim_prefixes
from readiness.report.markdown import header, md_table

REPORT = "reports/system_live_and_autonomous.md"
ATTESTATION_DIR = "attestation"
SIGNATURE = f"{ATTESTATION_DIR}/manifest.sig"
PUBLIC_KEY = f"{ATTESTATION_DIR}/public_key.pem"
ALGORITHM = "Ed25519"
NOT_EVIDENCED = "NOT EVIDENCED"


class AttestationError(Exception):
    """Signing or verifying cannot start (no manifest, unusable key); the message says why."""


@dataclass(frozen=True)
class Claim:
    """One statement of the attestation and the checks that can evidence it."""

    key: str
    statement: str
    prefixes: tuple[str, ...]  # check ids starting with one of these evidence the claim
    phases: tuple[str, ...]  # the notebooks that record those checks


#: The claims, their statements and their evidence, as the phase registry declares them.
CLAIMS: tuple[Claim, ...] = tuple(Claim(key, statement, claim_prefixes(key), claim_phases(key))
                                  for key, statement in REGISTRY_CLAIMS.items())


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    verdict: str  # a Status value, or NOT_EVIDENCED
    why: str
    evidence: tuple[str, ...]  # run-relative paths that exist


def _inside(root: Path, rel: str) -> Path | None:
    target = (root / rel).resolve()
    return target if root.resolve() in target.parents else None


def assess(claim: Claim, checks: list[Check], phases: dict[str, Any], root: Path) -> ClaimResult:
    """The verdict of one claim from the recorded checks (the all-of rule of ``verdict.combine``).

    The claim is NOT EVIDENCED, with the reason, when one of its phases recorded no check for
    it (did not run, was blocked, or measured something else) or when its checks name evidence
    that is not in the folder: a statement nobody can follow to its evidence is no claim.
    """
    own = [c for c in checks if c.id.startswith(claim.prefixes)
           or (c.id.startswith("run.") and c.phase in claim.phases)]
    reasons = []
    for p in (p for p in claim.phases if not any(c.phase == p for c in own)):
        ran = phases.get(p)
        if ran is None:
            reasons.append(f"phase {p} did not run")
        elif ran.get("status") != "OK":
            reasons.append(f"phase {p} is {ran.get('status')}" + (f" ({ran['error']})" if ran.get("error") else ""))
        else:
            reasons.append(f"phase {p} recorded no check with an id starting {' or '.join(claim.prefixes)}")
    if not own and not claim.phases:
        reasons.append(f"no check with an id starting {' or '.join(claim.prefixes)} was recorded in this run")
    verdict = combine(f"attestation.{claim.key}", "attestation", claim.statement, own)
    named = list(dict.fromkeys([f"checks/{c.phase}.json" for c in own] + [e for c in own for e in c.evidence]))
    missing = [e for e in named if (t := _inside(root, e)) is None or not t.exists()]
    if missing:
        reasons.append(f"evidence named by its checks is missing: {', '.join(missing)}")
    if reasons:
        said = f"; the checks it has say {verdict.status}" if own else ""
        return ClaimResult(claim, NOT_EVIDENCED, "; ".join(reasons) + said, ())
    return ClaimResult(claim, verdict.status.value, verdict.detail, tuple(named))


def _score(root: Path) -> str:
    """Grade and score of this run's ERS, as far as the score phase got."""
    for name in (n for n in (SCORE_FILE, PENDING_SCORE) if (root / n).is_file()):
        try:
            data = json.loads((root / name).read_text())
            return f"{data['grade']} ({float(data['overall_score']):.2f} / 100, {name})"
        except (OSError, ValueError, KeyError, TypeError):
            return f"{name} is unreadable"
    return "no score in this run"


def write_attestation(run: RunFolder, params: Params, *, status: str | None = None) -> Path:
    """Write ``reports/system_live_and_autonomous.md`` from the checks recorded so far.

    Call it before the run finalizes so the manifest (and thus the signature) covers it;
    ``status`` is the final status the runner is about to write (default: ``run.json``'s).
    """
    info = run.info()
    checks = run.read_decisions(exclude_phase="attestation").checks
    results = [assess(c, checks, info.get("phases") or {}, run.root) for c in CLAIMS]
    passing = sum(r.verdict == Status.PASS.value for r in results)
    overall = ("**Attested**: every claim below holds on the evidence of this run." if passing == len(results)
               else f"**Not attested**: {passing} of {len(results)} claims hold on the evidence of this run; "
                    "the others say why below.")
    lines = [header("System live and autonomous — attestation", ecosystem=params.ecosystem,
                    environment=params.environment, run_name=run.root.name, profile_note=params.profile_note),
             f"- Params digest: `{info.get('params_digest')}`",
             f"- Run status when written: {status or info.get('status')}",
             f"- Enterprise readiness: {_score(run.root)}", "", overall, "",
             md_table(["claim", "verdict"], [(r.claim.statement, f"**{r.verdict}**") for r in results]), ""]
    for r in results:
        lines += [f"## {r.claim.statement}", "", f"Verdict: **{r.verdict}**"
                  + (f" — not evidenced in this run: {r.why}" if r.verdict == NOT_EVIDENCED else f" — {r.why}"), ""]
        lines += [f"- [{e}](../{quote(e)})" for e in r.evidence] + ([""] if r.evidence else [])  # from reports/
    lines += ["## How to check this document", "",
              f"This report is listed in `{MANIFEST}` with its SHA-256 and size, like every file of the run. "
              f"`{SIGNATURE}` holds an {ALGORITHM} signature over the SHA-256 of `{MANIFEST}`'s bytes, so "
              f"the signature covers `{MANIFEST}` and through it every file it lists; `{PUBLIC_KEY}` is the "
              "key that verifies it. Run `readiness verify <run folder>` (add `--public-key <pem>` to check "
              f"against a key you trust rather than the one in the folder). `{RUN_FILE}` is written after "
              "the manifest, with the final status, and is not covered.", ""]
    return run.write_text(REPORT, "\n".join(lines), producer=run.producer or "runner")


# -- signing ---------------------------------------------------------------------------
def _fingerprint(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def signing_key(params: Params) -> tuple[Ed25519PrivateKey, str]:
    """The private key and where it came from (the runner may call this first, to fail early).

    ``attestation.key_env`` names a variable holding an unencrypted PEM (PKCS#8) Ed25519 key;
    unset or empty means a fresh key for this run. Errors name the variable, never its value.
    """
    name = params.attestation.key_env
    value = os.environ.get(name, "") if name else ""
    if not value.strip():
        return Ed25519PrivateKey.generate(), "per-run key (its private half is not kept)"
    prefix = f"environment variable {name} does not hold an unencrypted PEM (PKCS#8) Ed25519 private key"
    try:
        key = serialization.load_pem_private_key(value.encode("utf-8"), password=None)
    except TypeError:
        raise AttestationError(f"{prefix}: the key is password-protected") from None
    except (ValueError, UnsupportedAlgorithm):
        raise AttestationError(f"{prefix}: the value is not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise AttestationError(f"{prefix}: it holds a key of another type ({type(key).__name__})")
    return key, f"environment variable {name}"


def _write_atomic(path: Path, data: bytes) -> None:
    """Temp file + fsync + rename, like the run folder's writer — which these files avoid on purpose.

    The signature files sign the manifest, so they cannot be artifacts of it: going through
    :meth:`RunFolder.write_bytes` would enter them in the producer ledger and every later
    ``write_manifest`` (a re-finalized run) would list them, making the manifest contain a hash
    of its own signature. Its redaction step must not touch them either: a signature is only
    valid byte for byte, and these files hold nothing but public values.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@dataclass(frozen=True)
class SignResult:
    signature: Path
    public_key: Path
    manifest_sha256: str
    key_source: str
    fingerprint: str  # sha256 of the raw public key, to compare with a published one


def _manifest_digest(run_dir: Path) -> bytes:
    manifest = run_dir / MANIFEST
    if not manifest.is_file():
        raise AttestationError(f"{run_dir}: no {MANIFEST}; a run is signed after it is finalized")
    return hashlib.sha256(manifest.read_bytes()).digest()


def _manifest_entries(run_dir: Path) -> dict[str, tuple[str, int]]:
    """path → (sha256, bytes) of ``manifest.json``; an AttestationError says why it is unusable."""
    try:
        return {str(f["path"]): (str(f["sha256"]), int(f["bytes"]))
                for f in json.loads((run_dir / MANIFEST).read_text())["files"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise AttestationError(f"{MANIFEST}: unreadable as a manifest ({type(exc).__name__}: {exc})") from None


def sign_run(run_dir: Path, params: Params) -> SignResult:
    """Sign the final ``manifest.json`` of ``run_dir``; writes ``attestation/manifest.sig`` and
    ``attestation/public_key.pem`` (the private key is never written)."""
    run_dir = Path(run_dir)
    digest = _manifest_digest(run_dir)
    listed = [rel for rel in _manifest_entries(run_dir) if rel.startswith(f"{ATTESTATION_DIR}/")]
    if listed:
        raise AttestationError(f"{MANIFEST} lists {', '.join(listed)}: a manifest cannot cover the signature "
                               f"that signs it; leave {ATTESTATION_DIR}/ out of the manifest and finalize again")
    key, source = signing_key(params)
    public = key.public_key()
    record = {"algorithm": ALGORITHM, "signed": f"sha256({MANIFEST}) as 32 raw bytes", "manifest": MANIFEST,
              "manifest_sha256": digest.hex(), "signature": base64.b64encode(key.sign(digest)).decode("ascii"),
              "public_key": Path(PUBLIC_KEY).name, "public_key_sha256": _fingerprint(public), "key_source": source,
              "signed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")}
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    _write_atomic(run_dir / PUBLIC_KEY, pem)
    _write_atomic(run_dir / SIGNATURE, (json.dumps(record, indent=2) + "\n").encode("utf-8"))
    return SignResult(run_dir / SIGNATURE, run_dir / PUBLIC_KEY, digest.hex(), source, _fingerprint(public))


# -- verifying -------------------------------------------------------------------------
@dataclass
class VerifyResult:
    run_dir: Path
    files_checked: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    signature_ok: bool = False
    key_used: str | None = None
    fingerprint: str | None = None
    manifest_sha256: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A PEM Ed25519 public key; a ValueError says what is wrong with the file (callers name it)."""
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except FileNotFoundError:
        raise ValueError("missing") from None
    except OSError as exc:
        raise ValueError(f"cannot read ({exc.strerror or exc})") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError("not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"not an {ALGORITHM} public key")
    return key


def _check_files(run_dir: Path, result: VerifyResult) -> None:
    try:
        entries = _manifest_entries(run_dir)
    except FileNotFoundError:
        result.problems.append(f"{MANIFEST}: missing (the run was never finalized)")
        return
    except (OSError, AttestationError) as exc:
        result.problems.append(str(exc))
        return
    for rel, (sha, size) in entries.items():
        target = _inside(run_dir, rel)
        if rel.startswith(f"{ATTESTATION_DIR}/"):
            result.problems.append(f"{rel}: listed in {MANIFEST}, which cannot cover the signature that signs it")
        elif target is None:
            result.problems.append(f"{rel}: listed in {MANIFEST} but points outside the run folder")
        elif not target.is_file():
            result.problems.append(f"{rel}: missing")
        else:
            with open(target, "rb") as fh:
                actual = hashlib.file_digest(fh, "sha256").hexdigest()
            length = target.stat().st_size
            if actual != sha or length != size:
                result.problems.append(f"{rel}: changed since the manifest (sha256 {actual[:12]}…, {length} bytes; "
                                       f"manifest {sha[:12]}…, {size} bytes)")
            else:
                result.files_checked += 1
    for f in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        rel = f.relative_to(run_dir).as_posix()
        # what RunFolder.write_manifest leaves out: itself, run.json, hidden files (producer ledger, temp
        # files); and the two files that sign the manifest
        if rel not in entries and rel not in (MANIFEST, RUN_FILE, SIGNATURE, PUBLIC_KEY) and not f.name.startswith("."):
            result.problems.append(f"{rel}: not in {MANIFEST} (added after the run was finalized)")


def _check_signature(run_dir: Path, key_path: Path, key: Ed25519PublicKey | None, result: VerifyResult) -> None:
    try:
        record = json.loads((run_dir / SIGNATURE).read_text())
        signature = base64.b64decode(record["signature"], validate=True)
        algorithm, signed_sha = record.get("algorithm"), str(record.get("manifest_sha256"))
    except FileNotFoundError:
        result.problems.append(f"{SIGNATURE}: missing (the run was not signed)")
        return
    except (OSError, ValueError, KeyError, TypeError, binascii.Error) as exc:
        result.problems.append(f"{SIGNATURE}: unreadable ({type(exc).__name__}: {exc})")
        return
    if algorithm != ALGORITHM:
        result.problems.append(f"{SIGNATURE}: algorithm {algorithm!r}, expected {ALGORITHM!r}")
        return
    try:
        key = key or load_public_key(key_path)
    except ValueError as exc:
        result.problems.append(f"{PUBLIC_KEY}: {exc}")
        return
    if not (run_dir / MANIFEST).is_file():
        return  # reported by the file check
    digest = _manifest_digest(run_dir)
    result.manifest_sha256, result.fingerprint = digest.hex(), _fingerprint(key)
    if signed_sha != digest.hex():
        result.problems.append(f"{MANIFEST}: changed after signing (sha256 {digest.hex()[:12]}…, "
                               f"signed {signed_sha[:12]}…)")
    try:
        key.verify(signature, digest)
        result.signature_ok = True
    except InvalidSignature:
        result.problems.append(f"{SIGNATURE}: the signature does not verify against {MANIFEST} "
                               f"with {result.key_used} (key sha256 {result.fingerprint})")


def verify_run(run_dir: Path, public_key: Path | None = None) -> VerifyResult:
    """Recompute every hash of the manifest and check the signature over the manifest.

    ``public_key`` is the key a reviewer trusts; without it the key beside the signature is
    used, which proves the folder is unchanged since signing but not who signed it.
    Raises :class:`AttestationError` only for bad input (no such folder, unusable ``public_key``).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AttestationError(f"{run_dir}: no such run folder")
    try:
        trusted = load_public_key(public_key) if public_key is not None else None
    except ValueError as exc:
        raise AttestationError(f"--public-key {public_key}: {exc}") from None
    result = VerifyResult(run_dir, key_used=str(public_key) if public_key else PUBLIC_KEY)
    _check_files(run_dir, result)
    _check_signature(run_dir, run_dir / PUBLIC_KEY, trusted, result)
    try:
        status = json.loads((run_dir / RUN_FILE).read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        status = "unreadable"
    result.notes.append(f"{RUN_FILE} is not covered: it is written after the manifest, with the final status "
                        f"(status: {status})")
    if public_key is None:
        result.notes.append("checked with the key stored in the folder: this shows nothing changed since "
                            "signing, not who signed; pass --public-key with a key you trust for that")
    if not (run_dir / REPORT).is_file():
        result.notes.append(f"no {REPORT} in this run")
    return result

"""Synthetic-data cleanup without servers: the sandbox's namespace rules on real SQLite files,
the library's answer parsing, passes, refusals, log lines and checks."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from readiness.core.approvals import LOG as APPROVALS_LOG
from readiness.core.check import Status
from readiness.core.runfolder import RunFolder
from readiness.params.model import Params, parse_params
from readiness.phases.security_ops import cleanup
from readiness.phases.security_ops.cleanup import (
    AppPlan,
    CleanupError,
    CleanupReport,
    TableResult,
    check_namespace,
    parse_listing,
)
from readiness.probe.client import Sample
from sandbox.apps import load_definition
from sandbox.common import synthetic_cleanup as sc
from sandbox.common import synthetic_tables as st
from sandbox.common.sqlite import META_SCHEMA, Database

ROOT = Path(__file__).resolve().parents[2]
NS, OTHER = "simulated_audit", "other_audit"


def make_params(**changes: Any) -> Params:
    data = yaml.safe_load((ROOT / "params" / "sandbox.yaml").read_text())
    data.update(changes)
    if data.get("target") == "external":
        data["latency"]["compare_flags"] = []
    return parse_params(data, "t.yaml", {})


# -- the sandbox side: which rows belong to a namespace -----------------------------------
def open_db(tmp_path: Path, app_id: str) -> tuple[Database, tuple[st.SyntheticTable, ...]]:
    definition = load_definition(app_id)
    return Database(tmp_path / f"{app_id}.sqlite", META_SCHEMA + definition.schema), definition.synthetic_tables


def test_a6_deletes_only_its_namespace_and_what_tagged_providers_own(tmp_path: Path) -> None:
    db, tables = open_db(tmp_path, "A6")
    for pid, ns in (("p_ns", NS), ("p_other", OTHER), ("p_plain", None)):
        db.execute("INSERT INTO providers (id, name, created_at, namespace) VALUES (?, 'n', 't', ?)", (pid, ns))
    # an untagged listing of a synthetic provider goes with it; a tagged listing of a real provider goes alone
    rows = [("l1", "p_ns", None), ("l2", "p_plain", NS), ("l3", "p_plain", None), ("l4", "p_other", OTHER)]
    for lid, pid, ns in rows:
        db.execute("INSERT INTO listings (id, provider_id, title, price_cents, currency, status, updated_at, namespace)"
                   " VALUES (?, ?, 't', 1, 'usd', 'published', 't', ?)", (lid, pid, ns))
    listed = sc.inventory(db, tables, NS)
    assert listed["items"] == {"usage_charges": 0, "listings": 2, "providers": 1}
    assert listed["sample"]["listings"] == ["l1", "l2"]
    assert sc.delete(db, tables, NS) == {"usage_charges": 0, "listings": 2, "providers": 1}
    assert sorted(r[0] for r in db.query("SELECT id FROM listings")) == ["l3", "l4"]
    assert sorted(r[0] for r in db.query("SELECT id FROM providers")) == ["p_other", "p_plain"]
    assert sc.inventory(db, tables, NS)["items"] == {"usage_charges": 0, "listings": 0, "providers": 0}


def test_a2_learner_goes_with_sessions_and_actions_without_breaking_foreign_keys(tmp_path: Path) -> None:
    db, tables = open_db(tmp_path, "A2")
    for uid, ns in (("u_ns", NS), ("u_plain", None)):
        db.execute("INSERT INTO learners (user_id, email, name, attribution, credits, signed_up_at, signed_up_epoch,"
                   " namespace) VALUES (?, 'e', 'n', '{}', 3, 't', 0, ?)", (uid, ns))
        db.execute("INSERT INTO learner_sessions (id_hash, user_id, csrf, expires_epoch) VALUES (?, ?, 'c', 0)",
                   (f"h_{uid}", uid))
    for aid, uid, ns in (("a1", "u_ns", None), ("a2", "u_plain", NS), ("a3", "u_plain", None)):
        db.execute("INSERT INTO ai_actions (id, user_id, idempotency_key, request_hash, response, created_at,"
                   " namespace) VALUES (?, ?, ?, 'h', '{}', 't', ?)", (aid, uid, aid, ns))
    assert sc.delete(db, tables, NS) == {"ai_actions": 2, "learner_sessions": 1, "learners": 1}
    assert [r[0] for r in db.query("SELECT id FROM ai_actions")] == ["a3"]
    assert [r[0] for r in db.query("SELECT user_id FROM learners")] == ["u_plain"]


def test_a2_writes_record_the_request_namespace(tmp_path: Path) -> None:
    from sandbox.apps.a2_actions import _perform
    from sandbox.apps.a2_onboarding import _store_learner

    db, tables = open_db(tmp_path, "A2")
    ctx: Any = SimpleNamespace(db=db)
    _store_learner(ctx, {"sub": "u_ns", "email": "e@x.org"}, {}, NS)
    _store_learner(ctx, {"sub": "u_plain", "email": "f@x.org"}, {})
    assert _perform(ctx, "u_plain", "k1", "h", "quiz", "t", NS)[0] == 201
    assert _perform(ctx, "u_plain", "k2", "h", "quiz", "t")[0] == 201
    assert sc.inventory(db, tables, NS)["items"] == {"ai_actions": 1, "learner_sessions": 1, "learners": 1}


def test_json_tags_match_exactly_and_untagged_rows_never(tmp_path: Path) -> None:
    db, tables = open_db(tmp_path, "A8")
    for tags in ({"namespace": NS}, {"namespace": NS + "_x"}, {}, {"test_run": "true"}):
        db.execute("INSERT INTO events (received_at, ts_epoch, event_type, app_id, trace_id, idempotency_key, body)"
                   " VALUES (0, 0, 'http_request', 'A3', 't', 'k', ?)", (json.dumps({"tags": tags}),))
    assert sc.inventory(db, tables, NS)["items"] == {"events": 1, "banners": 0}
    assert sc.delete(db, tables, NS)["events"] == 1
    assert db.scalar("SELECT count(*) FROM events") == 3


def test_migrate_adds_the_namespace_column_to_an_older_table(tmp_path: Path) -> None:
    old = Database(tmp_path / "old.sqlite", "CREATE TABLE pages (id TEXT PRIMARY KEY, title TEXT);"
                                            "INSERT INTO pages VALUES ('pg_old', 't');")
    tables = (st.tagged("pages"),)
    assert sc.migrate(old, tables) == ["pages.namespace"]
    assert sc.migrate(old, tables) == []
    assert sc.inventory(old, tables, NS)["items"] == {"pages": 0}  # old rows are untagged, so kept


def test_namespace_validation_messages() -> None:
    assert sc.namespace_error(None) == "namespace is required: /admin/synthetic?namespace=<namespace>"
    assert sc.namespace_error(" ") == sc.NAMESPACE_REQUIRED
    assert sc.namespace_error("a b") == ("namespace must be 1 to 128 characters: letters, digits, '_', '-' or '.', "
                                         "starting with a letter or digit")
    assert sc.namespace_error("x" * 129) == sc.NAMESPACE_INVALID
    assert sc.namespace_error(NS) is None
    with pytest.raises(ValueError, match="match must compare with the namespace"):
        st.SyntheticTable("pages", match="1 = 1")


# -- the library side ---------------------------------------------------------------------
def test_check_namespace() -> None:
    params = make_params()
    assert check_namespace(params, NS) == NS
    with pytest.raises(CleanupError) as exc:
        check_namespace(params, OTHER)
    assert str(exc.value) == ("namespace 'other_audit' is not the one these params tag synthetic traffic with "
                              "(namespace 'simulated_audit'); pass --force-namespace to clean it anyway")
    assert check_namespace(params, OTHER, force=True) == OTHER
    with pytest.raises(CleanupError, match=r"^namespace 'a;b' is not valid: 1 to 128 letters, digits"):
        check_namespace(params, "a;b", force=True)


def sample(status: int | None, body: Any = None, error: str | None = None) -> Sample:
    raw = json.dumps(body).encode() if body is not None else b"not json"
    return Sample(app="A3", method="GET", url="http://127.0.0.1/admin/synthetic", route=None, status=status,
                  ok=status == 200, error=error, started_at=0.0, connect_ms=None, tls_ms=None, wait_ms=None,
                  total_ms=1.0, bytes=len(raw), trace_id=None, idempotency_key=None, server_timing_ms=None,
                  body=raw if status is not None else None, error_detail="refused" if error else None)


def test_parse_listing() -> None:
    ok = parse_listing("A3", sample(200, {"items": {"pages": 2}, "sample": {"pages": ["pg_1", "pg_2"]}}))
    assert (ok.status, ok.items, ok.sample, ok.total) == ("ok", {"pages": 2}, {"pages": ["pg_1", "pg_2"]}, 2)
    assert parse_listing("A1", sample(200, {"items": {}, "sample": {}})).note == "declares no table of synthetic data"
    assert parse_listing("X", sample(404, {"error": "x"})).status == "no_api"
    assert parse_listing("A3", sample(401, {"error": "x"})).note.startswith("admin credential refused (401)")
    assert parse_listing("A3", sample(200, {"items": {"pages": -1}})).status == "error"
    assert parse_listing("A3", sample(200)).note == 'answer is not {"items": {table: count}}'
    assert parse_listing("A3", sample(None, error="connect_error")).note == "unreachable: refused"


def fake_app(monkeypatch: pytest.MonkeyPatch, listings: list[dict[str, int]]) -> list[str]:
    """``plan`` answers the listings in turn (A3 only); returns the DELETEs sent."""
    sent: list[str] = []
    answers = iter(listings)

    async def plan(params: Params, client: Any, namespace: str) -> list[AppPlan]:
        items = next(answers)
        return [AppPlan("A3", "ok", items, {t: [f"{t}_{i}" for i in range(n)] for t, n in items.items()})]

    async def delete(params: Params, client: Any, app_id: str, namespace: str) -> dict[str, int]:
        sent.append(app_id)
        return {"pages": 2}

    monkeypatch.setattr(cleanup, "plan", plan)
    monkeypatch.setattr(cleanup, "_delete", delete)
    monkeypatch.setattr(cleanup, "SETTLE_S", 0.0)
    return sent


def test_real_run_repeats_while_late_rows_arrive_and_logs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    params = make_params()
    run = RunFolder.create(tmp_path, params, ROOT / "params" / "sandbox.yaml")
    sent = fake_app(monkeypatch, [{"pages": 2}, {"pages": 2}, {"pages": 0}])
    report = cleanup.run_cleanup(params, namespace=NS, dry_run=False, run=run)
    assert sent == ["A3", "A3"] and report.passes == 2
    assert (report.planned, report.deleted, report.remaining, report.ok) == (2, 4, 0, True)
    lines = run.path(cleanup.LOG).read_text().splitlines()
    assert lines[0].startswith("# cleanup real namespace=simulated_audit environment=staging started=")
    assert lines[1].startswith("real A3 pages planned=2 deleted=4 remaining=0 time=")
    assert json.loads(run.path("evidence/cleanup_real.json").read_text())["tables"][0]["sample"] == ["pages_0",
                                                                                                     "pages_1"]


def test_dry_run_deletes_nothing_and_remaining_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    sent = fake_app(monkeypatch, [{"pages": 2}])
    report = cleanup.run_cleanup(make_params(), namespace=NS, dry_run=True, run=None)
    assert sent == [] and report.ok and report.remaining is None and report.log is None
    assert cleanup.log_lines(report)[1].startswith("dry-run A3 pages planned=2 deleted=- remaining=- time=")
    stuck = fake_app(monkeypatch, [{"pages": 2}, {"pages": 1}, {"pages": 1}, {"pages": 1}])
    real = cleanup.run_cleanup(make_params(), namespace=NS, dry_run=False, run=None)
    assert len(stuck) == cleanup.MAX_PASSES and real.remaining == 1 and not real.ok


def test_prod_real_cleanup_needs_an_approval(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    params = make_params(environment="prod", target="external")
    with pytest.raises(CleanupError, match="a real cleanup in prod needs a run folder"):
        cleanup.run_cleanup(params, namespace=NS, dry_run=False, run=None)
    run = RunFolder.create(tmp_path, params, ROOT / "params" / "sandbox.yaml")
    sent = fake_app(monkeypatch, [{"pages": 2}])
    report = cleanup.run_cleanup(params, namespace=NS, dry_run=False, run=run)
    assert sent == [] and report.refused == "refused: no approval for this action in params.approvals"
    assert (report.deleted, report.remaining, report.ok) == (0, 2, False)
    assert json.loads(run.path(APPROVALS_LOG).read_text().splitlines()[0])["action"] == "production_write"
    assert "REFUSED: refused: no approval" in run.path(cleanup.LOG).read_text()
    fake_app(monkeypatch, [{"pages": 2}])
    assert cleanup.run_cleanup(params, namespace=NS, dry_run=True, run=None).ok  # a dry run needs none


def report(dry_run: bool, planned: int, deleted: int | None, remaining: int | None, **kw: Any) -> CleanupReport:
    table = TableResult("A3", "pages", planned, deleted, remaining, "t")
    return CleanupReport(NS, dry_run, "staging", "t0", "t1", (AppPlan("A3", "ok", {"pages": planned}, {}),),
                         (table,), log=None if dry_run else cleanup.LOG, **kw)


def test_cleanup_checks() -> None:
    dry = report(True, 3, None, None)
    statuses = [c.status for c in cleanup.cleanup_checks(dry, report(False, 3, 3, 0))]
    assert statuses == [Status.PASS] * 4
    failed = {c.id: c.status for c in cleanup.cleanup_checks(dry, report(False, 3, 2, 1))}
    assert failed == {"cleanup.dry_run.listed": Status.PASS, "cleanup.real.remaining": Status.FAIL,
                      "cleanup.real.covers_plan": Status.FAIL, "cleanup.log": Status.PASS}
    refused = cleanup.cleanup_checks(dry, report(False, 3, 0, 3, refused="refused: no approval"))
    assert [c.status for c in refused[1:3]] == [Status.BLOCKED, Status.BLOCKED]

"""`readiness cleanup` against a running sandbox: a dry run deletes nothing, a real run
deletes only the rows of its namespace — another namespace and untagged rows stay.

The sandbox runs seven apps on 29602–29608 and its local Stripe API on 29601 (A4, the
content hub, stores nothing synthetic and is left out to stay within eight ports). Data
of two namespaces and untagged data are created through the public APIs, each kind
recorded by its read-back URL, so the test checks what stays and what goes without
trusting the cleanup API it tests.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from readiness.core.runfolder import RunFolder
from readiness.params.model import load_params
from readiness.run.cli import main

pytestmark = pytest.mark.integration

NS, OTHER = "simulated_audit", "other_audit"
KINDS = (NS, OTHER, None)
PORT_BASE = 29600


def _seven_apps(data: dict[str, Any]) -> None:
    data["apps"] = [a for a in data["apps"] if a["id"] != "A4"]
    for i, app in enumerate(data["apps"], 2):  # lowest app port 29602: Stripe takes 29601
        app["base_url"] = f"http://127.0.0.1:{PORT_BASE + i}"
    data["approvals"] = []
    data["resiliency"]["upstream_app"] = "A5"


def _headers(namespace: str | None) -> dict[str, str]:
    tags = {"X-Test-Run": "true", "X-Source": "qa", "X-Namespace": namespace} if namespace else {}
    return {"X-Trace-Id": uuid.uuid4().hex, "X-Idempotency-Key": uuid.uuid4().hex, **tags}


def _post(http: httpx.Client, url: str, body: dict[str, Any], namespace: str | None, **headers: str) -> Any:
    answer = http.post(url, json=body, headers={**_headers(namespace), **headers})
    assert answer.status_code in (200, 201), f"{url}: {answer.status_code} {answer.text}"
    return answer.json()


def _create(apps: dict[str, str], admin: str, namespace: str | None) -> list[str]:
    """One of each synthetic-bearing row, tagged with ``namespace`` (None: untagged); their read-back URLs."""
    a3, a5, a6, a7, a8 = (apps[a] for a in ("A3", "A5", "A6", "A7", "A8"))
    with httpx.Client(timeout=10) as http:
        page = _post(http, f"{a3}/api/pages", {"learner_id": "l1", "template": "first_page", "title": "Hi"}, namespace)
        session = _post(http, f"{a5}/api/checkout/sessions", {"price_id": "price_micro_qa", "user_id": "u1"},
                        namespace)
        _post(http, f"{a5}/api/checkout/sessions/{session['id']}/complete", {"payment_method": "pm_card_visa"},
              None)  # an untagged completion of a session belongs to the session's namespace
        provider = _post(http, f"{a6}/api/providers", {"name": "Prov"}, namespace)
        listing = _post(http, f"{a6}/api/listings", {"provider_id": provider["provider_id"], "title": "L",
                                                     "price_cents": 100}, namespace)
        charge = _post(http, f"{a6}/api/billing/usage", {"provider_id": provider["provider_id"],
                                                         "listing_id": listing["listing_id"], "base_cost_cents": 10},
                       namespace)
        lead = _post(http, f"{a7}/api/leads", {"email": "qa@example.com", "name": "QA"}, namespace)
        banner = _post(http, f"{a8}/api/banners", {"app_id": "A3", "message": "m"}, namespace,
                       Authorization=f"Bearer {admin}")
    return [f"{a3}/api/pages/{page['page_id']}", f"{a5}/api/checkout/sessions/{session['id']}",
            f"{a5}/api/ledger/u1", f"{a6}/api/providers/{provider['provider_id']}",
            f"{a6}/api/listings/{listing['listing_id']}", f"{a6}/api/billing/charges/{charge['charge_id']}",
            f"{a7}/api/leads/{lead['lead_id']}", f"{a8}/api/banners/{banner['banner']['id']}"]


def _counts(apps: dict[str, str], admin: str, namespace: str) -> dict[str, dict[str, int]]:
    with httpx.Client(timeout=10, headers={"Authorization": f"Bearer {admin}"}) as http:
        return {a: http.get(f"{url}/admin/synthetic", params={"namespace": namespace}).json()["items"]
                for a, url in apps.items()}


def _settled(apps: dict[str, str], admin: str) -> dict[str, dict[str, dict[str, int]]]:
    """Counts of both namespaces once the telemetry of the set-up has reached A8 (two equal readings)."""
    last: Any = None
    for _ in range(20):
        now = {ns: _counts(apps, admin, ns) for ns in (NS, OTHER)}
        if now == last:
            return now
        last = now
        time.sleep(0.6)
    raise AssertionError(f"synthetic counts never settled: {last}")


@pytest.fixture(scope="module")
def sandbox_with_data(tmp_path_factory: pytest.TempPathFactory, params_factory: Callable[..., Path],
                      start_sandbox: Callable[[Path], Any]) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("cleanup")
    params_file = params_factory(folder, port_base=PORT_BASE, edit=_seven_apps)
    with start_sandbox(params_file) as state:
        apps, admin = dict(state.apps), state.admin_token
        urls = {kind: _create(apps, admin, kind) for kind in KINDS}
        yield {"params": params_file, "apps": apps, "admin": admin, "urls": urls, "out": folder / "outputs",
               "before": _settled(apps, admin)}


def _status(url: str) -> int:
    answer = httpx.get(url, timeout=10)
    if url.endswith("/api/ledger/u1"):  # one ledger shared by the three kinds: its entries say what is left
        return answer.json()["entries_total"]
    return answer.status_code


def test_admin_api_needs_the_token_and_a_valid_namespace(sandbox_with_data: dict[str, Any]) -> None:
    a3, admin = sandbox_with_data["apps"]["A3"], sandbox_with_data["admin"]
    assert httpx.get(f"{a3}/admin/synthetic", params={"namespace": NS}).status_code == 401
    auth = {"Authorization": f"Bearer {admin}"}
    missing = httpx.delete(f"{a3}/admin/synthetic", headers=auth)
    assert (missing.status_code, missing.json()["error"]) == (
        422, "namespace is required: /admin/synthetic?namespace=<namespace>")
    bad = httpx.get(f"{a3}/admin/synthetic", params={"namespace": "x' OR 1=1 --"}, headers=auth)
    assert bad.status_code == 422 and bad.json()["field"] == "namespace"
    listed = httpx.get(f"{a3}/admin/synthetic", params={"namespace": NS}, headers=auth).json()
    assert listed["items"] == {"pages": 1} and listed["sample"]["pages"] == [
        sandbox_with_data["urls"][NS][0].rsplit("/", 1)[1]]


def test_bad_input_exits_2(sandbox_with_data: dict[str, Any], params_factory: Callable[..., Path],
                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = str(sandbox_with_data["params"])
    assert main(["cleanup", "--params", params, "--namespace", OTHER, "--dry-run"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: namespace 'other_audit' is not the one these params tag synthetic traffic with "
        "(namespace 'simulated_audit'); pass --force-namespace to clean it anyway")
    stopped = params_factory(tmp_path, port_base=PORT_BASE, edit=_seven_apps)  # same ports, no sandbox state
    assert main(["cleanup", "--params", str(stopped), "--namespace", NS, "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: the sandbox of {stopped} is not running (start it with `readiness sandbox up --params {stopped}`);"
        " nothing to clean")
    assert not (tmp_path / "o").exists()


def test_dry_run_lists_everything_and_deletes_nothing(sandbox_with_data: dict[str, Any],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    data = sandbox_with_data
    before = data["before"]
    assert before[NS]["A3"] == {"pages": 1} and before[NS]["A6"] == {"usage_charges": 1, "listings": 1,
                                                                      "providers": 1}
    assert before[NS]["A5"] == {"credit_ledger": 1, "checkout_completions": 1, "sessions": 1}
    assert before[NS]["A7"] == {"lead_requests": 1, "leads": 1} and before[NS]["A8"]["banners"] == 1
    assert before[NS]["A8"]["events"] > 0 and before[OTHER] == {**before[NS], "A8": before[OTHER]["A8"]}
    code = main(["cleanup", "--params", str(data["params"]), "--namespace", NS, "--dry-run", "--out", str(data["out"])])
    out = capsys.readouterr().out
    assert code == 0
    assert _settled(data["apps"], data["admin"]) == before  # nothing went
    assert all(_status(url) in (200, 3) for urls in data["urls"].values() for url in urls)
    assert "dry-run A3 pages planned=1 deleted=- remaining=- time=" in out
    assert f"dry-run A8 events planned={before[NS]['A8']['events']} deleted=-" in out
    run_dir = next(data["out"].iterdir())
    assert "# cleanup dry-run namespace=simulated_audit" in (run_dir / "reports/updated_cleanup_log.txt").read_text()
    data["run_dir"] = run_dir


def test_real_run_deletes_only_its_namespace(sandbox_with_data: dict[str, Any],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    data = sandbox_with_data
    run_dir = data.get("run_dir") or RunFolder.create(data["out"], load_params(data["params"]), data["params"]).root
    code = main(["cleanup", "--params", str(data["params"]), "--namespace", NS, "--run-dir", str(run_dir)])
    out = capsys.readouterr().out
    assert code == 0, out
    after = _counts(data["apps"], data["admin"], NS)
    assert all(n == 0 for items in after.values() for n in items.values()), after
    assert _counts(data["apps"], data["admin"], OTHER) == data["before"][OTHER]  # the other namespace stays
    gone = [url for url in data["urls"][NS] if not url.endswith("/api/ledger/u1")]
    assert [_status(url) for url in gone] == [404] * len(gone)
    for kind in (OTHER, None):
        assert [_status(url) for url in data["urls"][kind]] == [200, 200, 2, 200, 200, 200, 200, 200], kind
    log = (Path(run_dir) / "reports/updated_cleanup_log.txt").read_text()
    assert "# cleanup dry-run" in log and "# cleanup real namespace=simulated_audit" in log
    assert "real A6 providers planned=1 deleted=1 remaining=0 time=" in log
    assert "real A5 credit_ledger planned=1 deleted=1 remaining=0 time=" in log

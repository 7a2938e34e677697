"""Method B: the telemetry store's own view, behind one interface.

Dual-source checks compare what the suite saw directly (method A) with what the
ecosystem's telemetry store recorded for the same window (method B). Phases never parse
raw telemetry themselves: they ask a :class:`TelemetrySource`, so that the same checks
run against the A8 HTTP API of a live ecosystem or against an exported JSONL file.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from readiness.probe.client import GuardedClient


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _from_ms(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def parse_ts(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


class TelemetryUnavailable(Exception):
    """The telemetry store could not be read; method B has no data (never a PASS)."""


class TelemetryAbsent(TelemetryUnavailable):
    """There is no telemetry source to read: the store's route does not exist or never answered.

    Distinct from a store that answers but lost events. Events that go missing from a
    working store are a finding about the ecosystem (a stop condition under load); a store
    that is not there at all leaves every method-B check without data, so those checks say
    INCONCLUSIVE "no telemetry source" and nothing is stopped on its account.
    """


# A route the store does not serve, or a request that never got an answer: no source at all.
ABSENT_STATUSES = frozenset({404, 405, 410, 501})


class TelemetrySource(Protocol):
    """What method B needs from a telemetry store."""

    async def events(self, *, since: dt.datetime, until: dt.datetime, app_id: str | None = None,
                     event_type: str | None = None, limit: int = 10_000) -> list[dict[str, Any]]: ...

    async def stats(self, *, since: dt.datetime, until: dt.datetime) -> dict[str, int]: ...

    async def copies(self, *, trace_id: str, since: dt.datetime, until: dt.datetime) -> list[dict[str, Any]]: ...


class AbsentSource:
    """The source of an ecosystem that declares no telemetry store: every read says so.

    Reads raise :class:`TelemetryAbsent` where a real store's reads would fail, so callers
    handle an undeclared store exactly like a store that is not there.
    """

    def __init__(self, reason: str):
        self.reason = reason

    async def events(self, **_query: Any) -> list[dict[str, Any]]:
        raise TelemetryAbsent(self.reason)

    async def stats(self, **_query: Any) -> dict[str, int]:
        raise TelemetryAbsent(self.reason)

    async def copies(self, **_query: Any) -> list[dict[str, Any]]:
        raise TelemetryAbsent(self.reason)


class A8HttpSource:
    """Reads the A8 query API (``/api/telemetry/events``, ``/api/telemetry/stats``)."""

    def __init__(self, base_url: str, client: GuardedClient, app_id: str = "A8", page_size: int = 1000):
        self.base_url = base_url.rstrip("/")
        self.page_size = page_size
        self.client = client
        self.app_id = app_id

    async def _get(self, path: str, params: dict[str, Any]) -> Any:
        query = "&".join(f"{k}={quote(str(v))}" for k, v in params.items() if v is not None)
        sample = await self.client.get(f"{self.base_url}{path}?{query}", app=self.app_id, route=path, keep_body=True)
        if not sample.ok:
            why = sample.error_detail or sample.error or ""
            if sample.body:
                try:
                    why = str(sample.json().get("error", why))
                except (ValueError, AttributeError):
                    pass
            message = f"GET {path} → {sample.status or sample.error}: {why}".rstrip(": ")
            if sample.status is None or sample.status in ABSENT_STATUSES:
                raise TelemetryAbsent(f"no telemetry source: {message}")
            raise TelemetryUnavailable(message)
        try:
            return sample.json()
        except ValueError as exc:
            raise TelemetryUnavailable(f"GET {path}: {exc}") from None

    async def events(self, *, since: dt.datetime, until: dt.datetime, app_id: str | None = None,
                     event_type: str | None = None, limit: int = 10_000) -> list[dict[str, Any]]:
        """Every matching event in [since, until], up to ``limit``, oldest first.

        The store answers at most ``page_size`` events per query (the newest ones), so a
        full page means the window holds more: it is cut in two overlapping halves until
        each half fits. Events seen twice at a boundary are de-duplicated on
        (trace_id, idempotency_key). More than a page of events within one millisecond
        cannot be paged at the query's resolution: that is an error, never a silent cut.
        """
        seen: dict[tuple[Any, Any], dict[str, Any]] = {}
        lo = math.floor(since.timestamp() * 1000)
        hi = math.ceil(until.timestamp() * 1000)
        stack = [(lo, hi)]
        queries = 0
        while stack and len(seen) < limit:
            a, b = stack.pop()
            queries += 1
            if queries > 10_000:
                raise TelemetryUnavailable("telemetry query needed more than 10000 pages; narrow the window")
            data = await self._get("/api/telemetry/events", {
                "since": iso(_from_ms(a)), "until": iso(_from_ms(b)), "app_id": app_id,
                "event_type": event_type, "limit": self.page_size})
            page = list(data["events"] if isinstance(data, dict) else data)
            if len(page) < self.page_size:
                for e in page:
                    seen.setdefault((e.get("trace_id"), e.get("idempotency_key")), e)
                continue
            if b - a <= 1:
                raise TelemetryUnavailable(f"more than {self.page_size} events within one millisecond "
                                           f"({iso(_from_ms(a))}); the store cannot be paged at this resolution")
            mid = (a + b) // 2
            stack.extend([(mid, b), (a, mid)])  # older half popped first
        rows = sorted(seen.values(), key=lambda e: str(e.get("timestamp", "")))
        return rows[:limit]

    async def stats(self, *, since: dt.datetime, until: dt.datetime) -> dict[str, int]:
        data = await self._get("/api/telemetry/stats", {"since": iso(since), "until": iso(until)})
        return {k: int(data[k]) for k in ("received", "accepted", "duplicates", "rejected")}

    async def copies(self, *, trace_id: str, since: dt.datetime, until: dt.datetime) -> list[dict[str, Any]]:
        """Every stored copy of one trace's events, duplicates included.

        :meth:`events` folds copies of the same (trace_id, idempotency_key) into one, which
        is right for counting what happened and wrong for auditing the store's dedupe: a
        duplicate the store failed to drop must be seen as two rows.
        """
        data = await self._get("/api/telemetry/events", {
            "since": iso(since), "until": iso(until), "trace_id": trace_id, "limit": self.page_size})
        page = list(data["events"] if isinstance(data, dict) else data)
        if len(page) >= self.page_size:
            raise TelemetryUnavailable(f"trace {trace_id} holds {self.page_size} or more events; cannot count copies")
        return page


class JsonlSource:
    """Reads an exported JSONL file of events (one JSON object per line)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _rows(self) -> Iterable[dict[str, Any]]:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise TelemetryUnavailable(f"cannot read {self.path}: {exc.strerror or exc}") from None
        for i, line in enumerate(lines, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError:
                    raise TelemetryUnavailable(f"{self.path}:{i}: not a JSON object") from None

    async def events(self, *, since: dt.datetime, until: dt.datetime, app_id: str | None = None,
                     event_type: str | None = None, limit: int = 10_000) -> list[dict[str, Any]]:
        out = []
        for row in self._rows():
            try:
                ts = parse_ts(row["timestamp"])
            except (KeyError, ValueError):
                continue
            if not (since <= ts <= until):
                continue
            if app_id and row.get("app_id") != app_id or event_type and row.get("event_type") != event_type:
                continue
            out.append(row)
        return out[-limit:]

    async def stats(self, *, since: dt.datetime, until: dt.datetime) -> dict[str, int]:
        n = len(await self.events(since=since, until=until))
        return {"received": n, "accepted": n, "duplicates": 0, "rejected": 0}

    async def copies(self, *, trace_id: str, since: dt.datetime, until: dt.datetime) -> list[dict[str, Any]]:
        """Every line of the export with this trace id in the window (an export keeps duplicates as lines)."""
        return [e for e in await self.events(since=since, until=until, limit=10**9) if e.get("trace_id") == trace_id]


def event_epoch(value: Any) -> float | None:
    """An event's time as epoch seconds, from a number or an ISO-8601 string; None when unreadable."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return parse_ts(value).timestamp()
        except ValueError:
            return None
    return None

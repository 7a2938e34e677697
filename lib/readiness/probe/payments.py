"""Stripe for the audit: one code path for Stripe test mode and the sandbox's local Stripe.

Everything here talks to Stripe through stripe-python's ``StripeClient`` and its async
methods. The only difference between auditing a real ecosystem (Stripe itself, test
mode) and the sandbox (localstripe on loopback) is the client's API base URL
(:func:`api_base`); no call, parameter or branch differs. The HTTP traffic of that client
goes through the suite's :class:`~readiness.probe.client.GuardedClient`
(:class:`GuardedStripeHttp`), so the host guard and the environment policy apply to
Stripe as to every other request, and each call is timed like any other sample.

The secret key is read from the environment by name (``STRIPE_SECRET_KEY``) when a
client is opened and is never returned, printed, logged or written; only its *mode*
(test or live, from its prefix) is. A live-mode key is refused unless the params hold an
approval for ``stripe_live_charge`` (:func:`readiness.core.approvals.require_approval`, which
logs the decision either way).

:func:`resolve_or_create_price` finds the micro price by its lookup key, then by the
metadata the suite puts on the prices it creates, and only then creates it — with an
idempotency key derived from what the price is, so two runs (or two concurrent
resolutions) can never create two prices.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import stripe

from readiness.core.approvals import require_approval
from readiness.core.runfolder import RunFolder
from readiness.params.model import Params
from readiness.params.sections import Stripe as StripeParams
from readiness.probe.client import GuardedClient, Sample

SECRET_KEY_NAME = "STRIPE_SECRET_KEY"  # pragma: allowlist secret (a name, not a value)
LIVE_ACTION = "stripe_live_charge"
AUTO = "AUTO_RESOLVE_OR_CREATE"
#: A payment method id that both Stripe test mode and localstripe turn into a Visa test
#: card that succeeds; no card number ever passes through the suite.
TEST_PAYMENT_METHOD = "pm_card_visa"
METADATA_KEY = "readiness_lookup_key"
MAX_SCANNED_PRICES = 1000
NETWORK_RETRIES = 2
Mode = Literal["test", "live"]


class PaymentsError(Exception):
    """Stripe could not be used or answered something unusable; the message says why (never a key)."""


class CreationRefused(PaymentsError):
    """The price is missing and creating it was not approved; nothing was written."""


class LiveModeRefused(PaymentsError):
    """A live-mode key without an approval for ``stripe_live_charge``."""


def key_mode(key: str, name: str = SECRET_KEY_NAME) -> Mode:
    """``test`` or ``live`` from a secret or restricted key's prefix; the value is never shown."""
    if key.startswith(("sk_test_", "rk_test_")):
        return "test"
    if key.startswith(("sk_live_", "rk_live_")):
        return "live"
    raise PaymentsError(f"{name} is not a Stripe secret key (expected sk_test_… or sk_live_…); value not shown")


def api_base(params: Params) -> str:
    """``stripe.api_base`` when the params name a Stripe-compatible API; else Stripe's API for
    an external ecosystem and the sandbox's local Stripe for the sandbox."""
    if params.stripe.api_base is not None:
        return params.stripe.api_base
    if params.target != "sandbox":
        return stripe.DEFAULT_API_BASE
    from readiness.probe.sandbox_control import sandbox_status

    state = sandbox_status(params)
    if state is None or not state.stripe_url:
        raise PaymentsError("the sandbox's local Stripe API is not running (it runs with A5: start the sandbox "
                            "with A5 among its apps)")
    return state.stripe_url


class GuardedStripeHttp(stripe.HTTPClient):
    """stripe-python's HTTP layer, sending through a :class:`GuardedClient` (async only).

    Every call becomes a :class:`~readiness.probe.client.Sample` in :attr:`samples` (no request
    header is recorded, so the key is not either). A request that got no HTTP answer is
    raised as ``APIConnectionError`` so stripe-python's retry rules apply unchanged.
    """

    name = "readiness-guarded"

    def __init__(self, client: GuardedClient, synthetic_identity: str | None = None) -> None:
        super().__init__()
        self._client = client
        self._identity = synthetic_identity
        self.samples: list[Sample] = []

    async def request_async(self, method: str, url: str, headers: Mapping[str, str],
                            post_data: Any = None) -> tuple[bytes, int, Mapping[str, str]]:
        sample = await self._client.request(method.upper(), url, content=post_data, headers=dict(headers),
                                            trace=False, idempotency_key=None, app="stripe",
                                            route=urlsplit(url).path, synthetic_identity=self._identity,
                                            keep_body=True)
        self.samples.append(sample)
        if sample.status is None:
            raise stripe.APIConnectionError(f"Stripe API not reachable: {sample.error_detail or sample.error}",
                                            should_retry=True)
        return sample.body or b"", sample.status, httpx.Headers(sample.headers)

    def sleep_async(self, secs: float) -> Awaitable[None]:
        return asyncio.sleep(secs)

    async def close_async(self) -> None:
        """The guarded client belongs to its caller, who closes it."""

    def request(self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None) -> Any:
        raise RuntimeError("the suite calls Stripe through the async methods only (…_async)")

    def close(self) -> None:
        """Nothing to close: see :meth:`close_async`."""

    def calls(self) -> list[dict[str, Any]]:
        """The Stripe calls made so far, for evidence: method, path, status, time."""
        return [{"method": s.method, "path": s.route, "status": s.status, "error": s.error,
                 "total_ms": round(s.total_ms, 2) if s.total_ms is not None else None} for s in self.samples]


@dataclasses.dataclass
class StripeAccess:
    """An open Stripe client and what may be said about it (its mode and base URL, never its key)."""

    client: stripe.StripeClient
    http: GuardedStripeHttp
    mode: Mode
    api_base: str
    approval_id: str | None = None


def open_stripe(params: Params, run: RunFolder, http: GuardedClient, *, phase: str, purpose: str,
                synthetic_identity: str | None = None, apps: tuple[str, ...] = (),
                base_url: str | None = None) -> StripeAccess:
    """A Stripe client for ``purpose``; raises :class:`PaymentsError` or :class:`LiveModeRefused`.

    ``base_url`` replaces :func:`api_base` (tests and tools pointing at another local API).
    """
    key = os.environ.get(SECRET_KEY_NAME, "")
    if not key:
        raise PaymentsError(f"{SECRET_KEY_NAME} is not set in the environment")
    mode = key_mode(key)
    approval_id = None
    if mode == "live":
        decision = require_approval(params, run, LIVE_ACTION, phase=phase, apps=apps,
                                    detail=f"live-mode Stripe key used to {purpose}")
        if not decision.granted:
            raise LiveModeRefused(f"{SECRET_KEY_NAME} is a live-mode key and live-mode Stripe use is not approved: "
                                  f"{decision.reason}")
        approval_id = decision.approval.id if decision.approval else None
    base = base_url or api_base(params)
    guarded = GuardedStripeHttp(http, synthetic_identity)
    client = stripe.StripeClient(key, base_addresses={"api": base}, http_client=guarded,
                                 max_network_retries=NETWORK_RETRIES)
    return StripeAccess(client=client, http=guarded, mode=mode, api_base=base, approval_id=approval_id)


@dataclasses.dataclass(frozen=True)
class PriceResolution:
    """Which price the suite uses and how it was found (``configured``, ``lookup_key``, ``metadata``, ``created``)."""

    price_id: str
    how: str
    unit_amount: int | None
    currency: str | None
    lookup_key: str | None
    active: bool
    livemode: bool
    product: str | None

    @classmethod
    def of(cls, obj: Any, how: str) -> PriceResolution:
        price = obj.to_dict()
        product = price.get("product")
        return cls(price_id=price["id"], how=how, unit_amount=price.get("unit_amount"), currency=price.get("currency"),
                   lookup_key=price.get("lookup_key"), active=bool(price.get("active")),
                   livemode=bool(price.get("livemode")), product=product if isinstance(product, str) else None)

    def to_record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def creation_key(p: StripeParams, mode: Mode) -> str:
    """The idempotency key of the price creation: a digest of what the price is.

    Same lookup key, amount, currency, product name and mode → same key, so a second
    creation (another run, a retry, a concurrent run) returns the first price. Stripe
    forgets keys after 24 hours; by then the lookup key finds the price first.
    """
    what = json.dumps([p.lookup_key, p.micro_amount_cents, p.currency.lower(), p.product_name, mode])
    return "readiness-price-" + hashlib.sha256(what.encode()).hexdigest()[:32]


def _matches(obj: Any, p: StripeParams) -> bool:
    price = obj.to_dict()
    metadata = price.get("metadata") or {}
    return (metadata.get(METADATA_KEY) == p.lookup_key and price.get("unit_amount") == p.micro_amount_cents
            and price.get("currency") == p.currency.lower() and price.get("type", "one_time") == "one_time")


async def resolve_or_create_price(access: StripeAccess, p: StripeParams, *,
                                  creation_refused: Callable[[], str | None] | None = None) -> PriceResolution:
    """The micro price: configured id, else lookup key, else metadata, else created once.

    ``creation_refused`` is asked only when the price must be created (a write to the
    Stripe account): a reason it returns raises :class:`CreationRefused` and nothing is
    created. Prod audits pass the production-write approval check here, so a price that
    already exists never costs an approval request.
    """
    prices = access.client.v1.prices
    try:
        if p.price_id_micro_sku != AUTO:
            try:
                return PriceResolution.of(await prices.retrieve_async(p.price_id_micro_sku), "configured")
            except stripe.InvalidRequestError:
                raise PaymentsError(f"price_id_micro_sku {p.price_id_micro_sku!r} was not found in the Stripe "
                                    f"account ({access.mode} mode)") from None
        found = await prices.list_async({"lookup_keys": [p.lookup_key], "active": True, "limit": 1})
        if found.data:
            return PriceResolution.of(found.data[0], "lookup_key")
        scanned = 0
        async for price in (await prices.list_async({"active": True, "limit": 100})).auto_paging_iter():
            if _matches(price, p):
                return PriceResolution.of(price, "metadata")
            scanned += 1
            if scanned >= MAX_SCANNED_PRICES:
                break
        refusal = creation_refused() if creation_refused is not None else None
        if refusal:
            raise CreationRefused(f"the micro price {p.lookup_key!r} does not exist and creating it is not allowed: "
                                  f"{refusal}")
        created = await prices.create_async(
            {"currency": p.currency.lower(), "unit_amount": p.micro_amount_cents, "lookup_key": p.lookup_key,
             "nickname": p.product_name, "product_data": {"name": p.product_name},
             "metadata": {METADATA_KEY: p.lookup_key, "created_by": "readiness-audit"}},
            {"idempotency_key": creation_key(p, access.mode)})
        return PriceResolution.of(created, "created")
    except stripe.StripeError as exc:
        raise PaymentsError(f"Stripe refused the price lookup: {exc.user_message or type(exc).__name__}") from None


@dataclasses.dataclass(frozen=True)
class PaymentRecord:
    """A PaymentIntent as Stripe reports it: what the audit compares with the checkout's answer."""

    payment_intent: str
    status: str
    amount: int
    currency: str
    livemode: bool
    metadata: dict[str, str]

    def to_record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


async def fetch_payment(access: StripeAccess, payment_intent: str) -> PaymentRecord:
    """The PaymentIntent from Stripe itself (method B of the checkout: not the app's word for it)."""
    try:
        intent = await access.client.v1.payment_intents.retrieve_async(payment_intent)
    except stripe.StripeError as exc:
        raise PaymentsError(f"Stripe could not return PaymentIntent {payment_intent}: "
                            f"{exc.user_message or type(exc).__name__}") from None
    return PaymentRecord(payment_intent=intent.id, status=str(intent.status), amount=int(intent.amount),
                         currency=str(intent.currency), livemode=bool(intent.livemode),
                         metadata={str(k): str(v) for k, v in (intent.to_dict().get("metadata") or {}).items()})

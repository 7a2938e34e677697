"""What the sandbox's local Stripe adds to localstripe: Prices and idempotent requests.

localstripe (1.15) predates Stripe's Prices API and ignores ``Idempotency-Key``. The
suite's payments code is the same stripe-python code that runs against Stripe test
mode, so the local API must answer those calls the way Stripe does:

* ``/v1/prices``: create (with ``product`` or ``product_data``), retrieve, update
  (``active``, ``metadata``, ``nickname``, ``lookup_key``) and list with the filters
  stripe-python sends (``active``, ``currency``, ``product``, ``type``,
  ``lookup_keys[]``), newest first. A lookup key belongs to one price at a time; reusing
  it is refused unless ``transfer_lookup_key`` moves it, as on Stripe.
* ``Idempotency-Key`` on every ``POST``: the same key with the same parameters replays
  the first answer (``Idempotent-Replayed: true``) and runs nothing; the same key with
  other parameters is an ``idempotency_error``; a key whose first request is still
  running is a 409. As on Stripe, only answers of requests that ran are kept (2xx and
  card declines, 402); validation errors and server errors are not. Keys are scoped per
  API key and kept in the store, so they survive a restart of the process.

Checkout Sessions are not added: a hosted Checkout page cannot be completed through the
API on Stripe either, so the sandbox's checkout confirms a PaymentIntent with a test
payment method — a call both Stripe test mode and localstripe answer alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from localstripe import server
from localstripe.errors import UserError
from localstripe.resources import (
    List,
    Product,
    StripeObject,
    store,
    try_convert_to_bool,
    try_convert_to_int,
)

PRICE_UPDATABLE = ("active", "metadata", "nickname", "lookup_key", "transfer_lookup_key")
IDEMPOTENCY_PREFIX = "idempotency:"
KEPT_STATUSES = frozenset({402})  # besides 2xx: a decline means the request ran
MAX_METADATA_KEYS = 50


def _bad(message: str, param: str | None = None) -> UserError:
    return UserError(400, message, {"param": param} if param else None)


def _metadata(value: Any) -> dict[str, str]:
    if value is None or value == "":
        return {}
    if not isinstance(value, dict) or len(value) > MAX_METADATA_KEYS:
        raise _bad(f"metadata must be an object of at most {MAX_METADATA_KEYS} keys", "metadata")
    if not all(isinstance(k, str) and len(k) <= 40 and isinstance(v, str) and len(v) <= 500
               for k, v in value.items()):
        raise _bad("metadata keys must be strings of at most 40 characters, values at most 500", "metadata")
    return dict(value)


def _price_with_lookup_key(lookup_key: str) -> Price | None:
    for key, value in store.items():
        if key.startswith("price:") and value.lookup_key == lookup_key:
            return value
    return None


class Price(StripeObject):
    """A one-time or recurring price of a product, with Stripe's fields and rules."""

    object = "price"
    _id_prefix = "price_"

    def __init__(self, currency: Any = None, unit_amount: Any = None, product: Any = None,
                 product_data: Any = None, lookup_key: Any = None, transfer_lookup_key: Any = None,
                 metadata: Any = None, nickname: Any = None, active: Any = True, recurring: Any = None,
                 tax_behavior: Any = None, **kwargs: Any) -> None:
        if kwargs:
            raise UserError(400, "Unexpected " + ", ".join(kwargs.keys()))
        unit_amount = try_convert_to_int(unit_amount)
        active = try_convert_to_bool(active)
        transfer = try_convert_to_bool(transfer_lookup_key) is True
        if not isinstance(currency, str) or len(currency) != 3 or not currency.isalpha():
            raise _bad("currency must be a three-letter ISO code", "currency")
        if not isinstance(unit_amount, int) or isinstance(unit_amount, bool) or unit_amount < 0:
            raise _bad("unit_amount must be a non-negative integer (minor units)", "unit_amount")
        if not isinstance(active, bool):
            raise _bad("active must be a boolean", "active")
        if (product is None) == (product_data is None):
            raise _bad("give exactly one of product or product_data", "product")
        if product is not None:
            if not isinstance(product, str):
                raise _bad("product must be a product id", "product")
            Product._api_retrieve(product)  # 404 when unknown
        elif not isinstance(product_data, dict) or not isinstance(product_data.get("name"), str) \
                or not product_data["name"]:
            raise _bad("product_data needs a name", "product_data[name]")
        if lookup_key is not None and (not isinstance(lookup_key, str) or not 0 < len(lookup_key) <= 200):
            raise _bad("lookup_key must be a string of 1 to 200 characters", "lookup_key")
        if recurring is not None and (not isinstance(recurring, dict)
                                      or recurring.get("interval") not in ("day", "week", "month", "year")):
            raise _bad("recurring.interval must be day, week, month or year", "recurring[interval]")
        owner = _price_with_lookup_key(lookup_key) if lookup_key else None
        if owner is not None and not transfer:
            raise _bad(f"A price (`{owner.id}`) already uses that lookup key.", "lookup_key")
        meta = _metadata(metadata)
        if product_data is not None:
            extra = {k: v for k, v in product_data.items() if k not in ("name", "metadata")}
            if extra:
                raise UserError(400, "Unexpected product_data " + ", ".join(extra))
            product = Product(name=product_data["name"], metadata=_metadata(product_data.get("metadata"))).id
        # All exceptions must be raised before this point.
        super().__init__()
        if owner is not None:
            owner.lookup_key = None
        self.active = active
        self.billing_scheme = "per_unit"
        self.currency = currency.lower()
        self.lookup_key = lookup_key
        self.metadata = meta
        self.nickname = nickname if isinstance(nickname, str) else None
        self.product = product
        self.recurring = dict(recurring) if recurring is not None else None
        self.tax_behavior = tax_behavior if isinstance(tax_behavior, str) else "unspecified"
        self.type = "recurring" if recurring is not None else "one_time"
        self.unit_amount = unit_amount
        self.unit_amount_decimal = str(unit_amount)

    @classmethod
    def _api_update(cls, id: str, **data: Any) -> Price:
        unknown = sorted(set(data) - set(PRICE_UPDATABLE))
        if unknown:
            raise UserError(400, "Unexpected " + ", ".join(unknown))
        obj = cls._api_retrieve(id)
        transfer = try_convert_to_bool(data.pop("transfer_lookup_key", None)) is True
        if "active" in data:
            active = try_convert_to_bool(data["active"])
            if not isinstance(active, bool):
                raise _bad("active must be a boolean", "active")
            obj.active = active
        if "metadata" in data:  # Stripe merges metadata; an empty value clears a key
            for key, value in _metadata(data["metadata"]).items():
                if value == "":
                    obj.metadata.pop(key, None)
                else:
                    obj.metadata[key] = value
        if "nickname" in data:
            obj.nickname = data["nickname"] or None
        if "lookup_key" in data:
            new = data["lookup_key"] or None
            owner = _price_with_lookup_key(new) if new else None
            if owner is not None and owner is not obj:
                if not transfer:
                    raise _bad(f"A price (`{owner.id}`) already uses that lookup key.", "lookup_key")
                owner.lookup_key = None
            obj.lookup_key = new
        return obj

    @classmethod
    def _api_delete(cls, id: str) -> Any:
        raise UserError(405, "Method Not Allowed")

    @classmethod
    def _api_list_all(cls, url: str, active: Any = None, currency: Any = None, product: Any = None,
                      lookup_keys: Any = None, type: Any = None, limit: Any = None,
                      starting_after: Any = None, **kwargs: Any) -> List:
        if kwargs:
            raise UserError(400, "Unexpected " + ", ".join(kwargs.keys()))
        active = try_convert_to_bool(active)
        if active is not None and not isinstance(active, bool):
            raise _bad("active must be a boolean", "active")
        if isinstance(lookup_keys, str):
            lookup_keys = [lookup_keys]
        if lookup_keys is not None and (not isinstance(lookup_keys, list)
                                        or not all(isinstance(k, str) for k in lookup_keys)):
            raise _bad("lookup_keys must be a list of strings", "lookup_keys")
        li = super()._api_list_all(url, limit=limit, starting_after=starting_after)
        li._list = [p for p in li._list
                    if (active is None or p.active == active)
                    and (currency is None or p.currency == str(currency).lower())
                    and (product is None or p.product == product)
                    and (type is None or p.type == type)
                    and (lookup_keys is None or p.lookup_key in lookup_keys)]
        li._list.sort(key=lambda p: p.created, reverse=True)
        return li


def _api_key_scope(request: web.Request) -> str:
    """A digest standing for the API key: idempotency keys are per account, as on Stripe."""
    credential = request.headers.get("Authorization", "")
    return hashlib.sha256(credential.encode()).hexdigest()[:24]


def _fingerprint(request: web.Request, body: bytes) -> str:
    """Method, path and parameters in canonical order: the same request, the same print."""
    try:
        pairs = sorted(parse_qsl(body.decode(), keep_blank_values=True))
        canonical = "&".join(f"{k}={v}" for k, v in pairs)
    except UnicodeDecodeError:
        canonical = body.hex()
    return hashlib.sha256(f"{request.method} {request.path}?{canonical}".encode()).hexdigest()


def _idempotency_error(status: int, message: str) -> web.Response:
    return server.json_response({"error": {"type": "idempotency_error", "message": message}}, status=status)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_in_flight: set[str] = set()


@web.middleware
async def idempotency_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Stripe's idempotent requests (see the module docstring)."""
    key = request.headers.get("Idempotency-Key", "").strip()
    if request.method != "POST" or not key or request.path.startswith("/_config/"):
        return await handler(request)
    body = await request.read()  # cached by aiohttp: the handler reads it again
    slot = f"{IDEMPOTENCY_PREFIX}{_api_key_scope(request)}:{key}"
    fingerprint = _fingerprint(request, body)
    kept = store.get(slot)
    if kept is not None:
        if kept["fingerprint"] != fingerprint:
            return _idempotency_error(400, "Keys for idempotent requests can only be used with the same parameters "
                                           f"they were first used with. Try using a key other than '{key}' if you "
                                           "meant to execute a different request.")
        return web.Response(body=kept["body"], status=kept["status"], content_type="application/json",
                            headers={"Idempotent-Replayed": "true"})
    if slot in _in_flight:
        return _idempotency_error(409, "There is currently another in-progress request using this idempotency "
                                       f"key ('{key}'). Please try again later.")
    _in_flight.add(slot)
    try:
        try:
            response = await handler(request)
        except UserError as exc:
            response = exc.to_response()
        if isinstance(response, web.Response) and (200 <= response.status < 300 or response.status in KEPT_STATUSES):
            store[slot] = {"fingerprint": fingerprint, "status": response.status, "body": bytes(response.body)}
        return response
    finally:
        _in_flight.discard(slot)


def install(app: web.Application) -> None:
    """Register the Price routes and the idempotency middleware on localstripe's app.

    Must run before the app starts (aiohttp freezes routes and middlewares then). The
    middleware goes last, inside localstripe's own: authentication runs before a
    request can be replayed, and the store is saved after the answer is kept.
    """
    url = "/v1/prices"
    for method, path, make in (("POST", url, server.api_create),
                               ("GET", url + "/{id}", server.api_retrieve),
                               ("POST", url + "/{id}", server.api_update),
                               ("GET", url, server.api_list_all)):
        app.router.add_route(method, path, make(Price, url))
    app.middlewares.append(idempotency_middleware)

"""A1's session-cookie policy and the ``identity`` fault knob that can break it on purpose.

The session cookie A1 sets after a login is the one an audit inspects attribute by
attribute, so its shape is decided here and nowhere else::

    a1_session=<opaque>; Domain=<A1 host>; Path=/; Max-Age=3600; Expires=<date>;
    Secure; HttpOnly; SameSite=None

* ``SameSite=None; Secure``: the session must survive the cross-site requests of an
  embedded sign-in, and browsers drop a ``SameSite=None`` cookie that is not ``Secure``.
  Chromium treats loopback (``127.0.0.1``, ``localhost``) as a secure context, so it
  keeps a ``Secure`` cookie set over plain ``http://127.0.0.1`` and the sandbox flow
  works without TLS while the attributes stay exactly what production would send.
* ``Domain`` is the host A1 serves (for an IP address a browser accepts only an exact
  match, which keeps the cookie host-only); ``Max-Age`` equals the server-side session
  TTL (:data:`SESSION_TTL_S`, one hour) and ``Expires`` mirrors it for old clients.

The ``identity`` knob (``PUT /admin/faults {"identity": {...}}``, admin token required,
cleared by ``DELETE /admin/faults``) rehearses the regressions an audit must catch:
``cookie_secure: false`` (the browser then rejects the cookie), ``cookie_samesite``
other than ``None``, a ``cookie_max_age_s`` that disagrees with the session TTL, and
``signing_key: "unlisted"`` (id tokens signed by a key absent from the JWKS).
"""

from __future__ import annotations

import math
import threading
from email.utils import formatdate
from typing import Any

from sandbox.common.knobs import KnobError

KNOB = "identity"
SESSION_COOKIE = "a1_session"
SESSION_TTL_S = 3600
SAMESITE_VALUES = ("None", "Lax", "Strict")
SIGNING_KEYS = ("published", "unlisted")
MAX_COOKIE_AGE_S = 400 * 86_400  # browsers cap cookie lifetimes at 400 days
_FIELDS = ("cookie_secure", "cookie_samesite", "cookie_max_age_s", "signing_key")


def default_policy() -> dict[str, Any]:
    return {"cookie_secure": True, "cookie_samesite": "None", "cookie_max_age_s": None, "signing_key": "published"}


def validate_policy(value: Any) -> dict[str, Any]:
    """Check an ``identity`` knob value; return it with defaults filled in, or raise :class:`KnobError`."""
    if not isinstance(value, dict):
        raise KnobError(KNOB, f"{KNOB} must be an object with any of: {', '.join(_FIELDS)}")
    extra = sorted(set(value) - set(_FIELDS))
    if extra:
        raise KnobError(f"{KNOB}.{extra[0]}", f"{KNOB}: unexpected field {extra[0]}")
    out = default_policy()
    if "cookie_secure" in value:
        if not isinstance(value["cookie_secure"], bool):
            raise KnobError(f"{KNOB}.cookie_secure", f"{KNOB}.cookie_secure must be true or false")
        out["cookie_secure"] = value["cookie_secure"]
    if "cookie_samesite" in value:
        if value["cookie_samesite"] not in SAMESITE_VALUES:
            raise KnobError(f"{KNOB}.cookie_samesite",
                            f"{KNOB}.cookie_samesite must be one of {', '.join(SAMESITE_VALUES)}")
        out["cookie_samesite"] = value["cookie_samesite"]
    if value.get("cookie_max_age_s") is not None:
        age = value["cookie_max_age_s"]
        if isinstance(age, bool) or not isinstance(age, int) or not 0 <= age <= MAX_COOKIE_AGE_S:
            raise KnobError(f"{KNOB}.cookie_max_age_s",
                            f"{KNOB}.cookie_max_age_s must be an integer between 0 and {MAX_COOKIE_AGE_S} or null")
        out["cookie_max_age_s"] = age
    if "signing_key" in value:
        if value["signing_key"] not in SIGNING_KEYS:
            raise KnobError(f"{KNOB}.signing_key", f"{KNOB}.signing_key must be one of {', '.join(SIGNING_KEYS)}")
        out["signing_key"] = value["signing_key"]
    return out


class IdentityPolicy:
    """The live cookie and signing policy of A1 (an ``ExtraKnob`` of its fault knobs)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._policy = default_policy()

    def validate(self, value: Any) -> dict[str, Any]:
        return validate_policy(value)

    def apply(self, value: Any) -> None:
        with self._lock:
            self._policy = dict(value)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._policy)

    def reset(self) -> None:
        self.apply(default_policy())

    @property
    def unlisted_key(self) -> bool:
        return self.snapshot()["signing_key"] == "unlisted"

    def session_cookie(self, value: str, domain: str, now: float) -> str:
        """The ``Set-Cookie`` value of a new A1 session, shaped by the current policy."""
        policy = self.snapshot()
        age = SESSION_TTL_S if policy["cookie_max_age_s"] is None else policy["cookie_max_age_s"]
        parts = [f"{SESSION_COOKIE}={value}", f"Domain={domain}", "Path=/", f"Max-Age={age}",
                 f"Expires={formatdate(math.floor(now) + age, usegmt=True)}"]
        if policy["cookie_secure"]:
            parts.append("Secure")
        parts += ["HttpOnly", f"SameSite={policy['cookie_samesite']}"]
        return "; ".join(parts)

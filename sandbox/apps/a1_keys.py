"""A1's RSA signing keys: generated once, kept in the state folder, published as a JWKS.

An identity provider that made a new key at every start would invalidate every id token
a relying party holds and would make "is the token signed by a published key?" a trivial
question. So the key is generated at the first start (RSA 2048, ``kid`` = its RFC 7638
thumbprint), written as a private JWK to ``<state>/keys/a1_signing.jwk.json`` with mode
0600, and loaded from there on every later start. ``/.well-known/jwks.json`` carries
only its public half.

For the broken state an audit must detect, :class:`SigningKeys` can also sign with an
*unlisted* key: a second RSA key made in memory, never persisted and never published, so
a relying party that validates against the JWKS rejects the token (its ``kid`` is not
in the set).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import RSAKey

ALGORITHM = "RS256"
KEY_BITS = 2048
KEY_FILE = "a1_signing.jwk.json"


def _generate() -> RSAKey:
    return RSAKey.generate_key(KEY_BITS, parameters={"use": "sig", "alg": ALGORITHM}, auto_kid=True)


def _write_private(path: Path, key: RSAKey) -> None:
    """Atomically write the private JWK readable by this user only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(key.as_dict(private=True), out)
    os.replace(tmp, path)


def load_or_create(folder: Path) -> RSAKey:
    """The signing key stored in ``folder``, created there on first use."""
    path = folder / KEY_FILE
    if path.is_file():
        data = json.loads(path.read_text())
        return RSAKey.import_key(data, parameters={"use": "sig", "alg": ALGORITHM})
    key = _generate()
    _write_private(path, key)
    return key


class SigningKeys:
    """The published key (persisted) and, on demand, an unlisted one (memory only)."""

    def __init__(self, folder: Path) -> None:
        self.key = load_or_create(folder)
        self._unlisted: RSAKey | None = None
        self._lock = threading.Lock()

    @property
    def kid(self) -> str:
        return str(self.key.kid)

    def jwks(self) -> dict[str, Any]:
        """The JSON Web Key Set relying parties verify id tokens against (public half only)."""
        public = self.key.as_dict(private=False)
        return {"keys": [{**public, "kid": self.kid, "use": "sig", "alg": ALGORITHM}]}

    def _unlisted_key(self) -> RSAKey:
        with self._lock:
            if self._unlisted is None:
                self._unlisted = _generate()
            return self._unlisted

    def sign(self, claims: dict[str, Any], *, unlisted: bool = False) -> str:
        """A compact RS256 JWS of ``claims`` with ``kid`` in the header."""
        key = self._unlisted_key() if unlisted else self.key
        header = {"alg": ALGORITHM, "typ": "JWT", "kid": str(key.kid)}
        return jwt.encode(header, claims, key, algorithms=[ALGORITHM])

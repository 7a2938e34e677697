"""Redaction of secret values before anything reaches disk or a notebook output.

The suite only ever knows secrets by *name* (params ``secrets.names``); their values live
in the environment of the process. Anything the suite writes might still contain a value
by accident — an echoed header, an error message quoting a URL, a response body — so the
run folder passes every byte through a :class:`Redactor` built from the current values of
those names. Values shorter than :data:`MIN_SECRET_LEN` are not redacted: replacing every
"1" in a report would destroy it while protecting nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

MIN_SECRET_LEN = 6


@dataclass(frozen=True)
class Redactor:
    """Replaces each known secret value by ``[REDACTED:NAME]``."""

    secrets: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_names(cls, names: Iterable[str], env: Mapping[str, str] | None = None,
                   extra: Mapping[str, str] | None = None) -> Redactor:
        source = os.environ if env is None else env
        found = {n: source[n] for n in names if len(source.get(n, "")) >= MIN_SECRET_LEN}
        found.update({k: v for k, v in (extra or {}).items() if len(v) >= MIN_SECRET_LEN})
        return cls(found)

    def redact_text(self, text: str) -> str:
        for name, value in self._ordered():
            if value in text:
                text = text.replace(value, f"[REDACTED:{name}]")
        return text

    def redact_bytes(self, data: bytes) -> bytes:
        for name, value in self._ordered():
            raw = value.encode("utf-8")
            if raw in data:
                data = data.replace(raw, f"[REDACTED:{name}]".encode())
        return data

    def found_in(self, data: bytes) -> list[str]:
        """Names of the secrets whose value occurs in ``data``."""
        return [name for name, value in self.secrets.items() if value.encode("utf-8") in data]

    def _ordered(self) -> list[tuple[str, str]]:
        # longest first, so a secret that contains another is replaced whole
        return sorted(self.secrets.items(), key=lambda kv: len(kv[1]), reverse=True)

"""The scoring layer: the rubric, the Enterprise Readiness Score and the signed attestation.

It reads recorded checks (never measures) and turns them into maturity levels, a weighted score
and a statement of claims. It may import ``report``, ``core``, ``stats`` and ``params``; the
phases and the runner sit above it.
"""

__all__ = ["attestation", "rubric", "scoring"]

"""The verdict core: checks, the verdict rules, the comparison rule, the run folder and its redaction, approvals, stop conditions, run history and the asyncio helpers.

This is where a measurement becomes a PASS, FAIL, INCONCLUSIVE, SKIPPED or BLOCKED check and is
written durably. It may import ``readiness.params`` and ``readiness.stats`` and nothing above;
it never talks to a network.
"""

__all__ = ["aio", "approvals", "check", "comparison_rule", "history", "multiplicity", "redact", "runfolder", "sizing",
           "stop_conditions", "verdict"]

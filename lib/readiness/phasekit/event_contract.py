"""The telemetry event contract as a validator: the packaged JSON Schema, the params' choices, readable errors.

The contract is a JSON Schema (draft 2020-12, ``schemas/telemetry_event.schema.json``,
shipped with the package) so that a producer team can validate its own events with any
tool. Params choose which fields are required and which event types are finance events;
:func:`contract_schema` writes them into a copy of the schema. Phase 06 judges the
contract over the run's events; phase 07 validates the events its journeys cause.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import json
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker, ValidationError

from readiness.params.contracts import TELEMETRY_CONTRACT_FIELDS
from readiness.phasekit.context import Phase

__all__ = ["SCHEMA_RESOURCE", "ContractValidator", "contract_schema", "load_schema", "validator_for"]

SCHEMA_RESOURCE = ("schemas", "telemetry_event.schema.json")
_FORMATS = FormatChecker(formats=())


@_FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    """ISO-8601 date-time with an explicit offset: events from many hosts must compare as instants."""
    if not isinstance(value, str):
        return True  # the type keyword reports non-strings
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None


@functools.cache
def load_schema() -> dict[str, Any]:
    """The packaged schema, as shipped (parse once; callers get copies via contract_schema)."""
    text = resources.files("readiness").joinpath(*SCHEMA_RESOURCE).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def contract_schema(required_fields: Sequence[str] = TELEMETRY_CONTRACT_FIELDS,
                    finance_events: Sequence[str] = ("checkout_completed", "revenue_settled")) -> dict[str, Any]:
    """The schema with the params' required fields and finance event types written in."""
    unknown = [f for f in required_fields if f not in TELEMETRY_CONTRACT_FIELDS]
    if unknown:
        raise ValueError(f"unknown contract fields {unknown} (known: {', '.join(TELEMETRY_CONTRACT_FIELDS)})")
    schema = copy.deepcopy(load_schema())
    schema["required"] = ["event_type", *required_fields]
    schema["allOf"][0]["if"]["properties"]["event_type"]["enum"] = list(finance_events)
    return schema


def _where(path: Iterable[Any]) -> str:
    parts = [str(p) for p in path]
    return ".".join(parts) if parts else "(event)"


def _messages(error: ValidationError, instance: dict[str, Any]) -> list[str]:
    """One readable sentence per problem; the exact wording is part of the contract's tests."""
    where = _where(error.absolute_path)
    if error.validator == "required" and not error.absolute_path:
        missing = [f for f in error.validator_value if f not in instance]
        return [f"missing contract field: {name}" for name in missing]
    if error.validator == "not" and where == "event_type":
        return ["event_type: 'unknown' is not an event type"]
    if where == "timestamp" and error.validator in ("pattern", "format"):
        return [f"timestamp: must be an ISO-8601 date-time with an offset (Z or +hh:mm), got {error.instance!r}"]
    if "then" in error.absolute_schema_path and where in instance and instance[where] is None:
        return [f"{where}: a finance event ({instance.get('event_type')}) must carry {where}, got null"]
    if error.validator == "oneOf" and error.context:
        branch = [e for e in error.context if e.relative_schema_path and e.relative_schema_path[0] != 0]
        return [m for sub in branch or error.context[:1] for m in _messages(sub, instance)]
    return [f"{where}: {error.message}"]


class ContractValidator:
    """Validates events against :func:`contract_schema`; ``errors(event)`` lists every problem."""

    def __init__(self, required_fields: Sequence[str] = TELEMETRY_CONTRACT_FIELDS,
                 finance_events: Sequence[str] = ("checkout_completed", "revenue_settled")) -> None:
        schema = contract_schema(required_fields, finance_events)
        Draft202012Validator.check_schema(schema)
        self._validator = Draft202012Validator(schema, format_checker=_FORMATS)

    def errors(self, event: Any) -> list[str]:
        if not isinstance(event, dict):
            return ["(event): event must be a JSON object"]
        found = sorted(self._validator.iter_errors(event), key=lambda e: (list(e.absolute_path), e.message))
        out: list[str] = []
        for error in found:
            for message in _messages(error, event):
                if message not in out:
                    out.append(message)
        return out


def validator_for(phase: Phase) -> ContractValidator:
    """The validator for this run's params: its required fields and finance event types."""
    c = phase.params.telemetry_contract
    return ContractValidator(c.contract_fields, c.finance_events)

"""Types for API input that reaches the database, so what it cannot store is a 422, not a 500.

PostgreSQL refuses some values pydantic's plain `int`, `str` and `Any` accept: integers beyond a
column's range (asyncpg raises before the query runs), the NUL character in `text`/`varchar`
and anywhere in `jsonb` (keys included), strings that are not valid UTF-8 (lone surrogates,
which JSON's `\\ud800` escapes can produce), and NaN or infinite numbers in `jsonb`. Each of these
was a 500 with a plain-text body. Declaring them once here, and using these types for every
path, query, header and body field that reaches a query, makes the refusal a validation error
that names the field, raised before any row is written.

    periodic_task_id: DatabaseId                    # BIGINT ids (path, header, body)
    interval_id: SmallDatabaseId | None = None      # INTEGER ids (the schedule tables)
    offset: Annotated[Offset, Query()] = 0
    name: Annotated[StoredText, Field(max_length=200)]
    kwargs: StoredJsonObject | None = None
    start_time: StoredDateTime | None = None

Datetimes are held to a range a person can check (1970 to 2999, UTC): asyncpg cannot pass one
whose UTC value leaves Python's years 1-9999 (`0001-01-01T00:00+14:00`), and schedule
arithmetic overflows close to year 9999.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import annotated_types
from pydantic import AfterValidator, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

# The primary keys: BIGINT (accounts, periodic tasks) and INTEGER (the four schedule tables).
# Ids come from sequences starting at 1, so 0 and negatives name nothing. BIGINT's bound is
# written `lt=2**63`: the OpenAPI document holds numbers as floats, where 2**63 - 1 would become
# 2**63 (a maximum one too high) but 2**63 itself is exact.
DatabaseId = Annotated[int, annotated_types.Interval(ge=1, lt=2**63)]
SmallDatabaseId = Annotated[int, annotated_types.Interval(ge=1, le=INT32_MAX)]
# OFFSET takes a BIGINT.
Offset = Annotated[int, annotated_types.Interval(ge=0, lt=2**63)]
# A value stored in an INTEGER column.
Int32 = Annotated[int, annotated_types.Le(INT32_MAX)]

NUL = "\x00"
# For the OpenAPI document: clients (and generated tests) learn the rule from the schema.
NO_NUL_PATTERN = "^[^\\u0000]*$"


def unstorable_text_reason(value: str) -> str | None:
    """Why PostgreSQL cannot store `value` as text, or None when it can."""
    if NUL in value:
        return "must not contain the NUL character (\\u0000), which PostgreSQL cannot store"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text (it contains an unpaired surrogate such as \\ud800)"
    return None


def _check_text(value: str) -> str:
    reason = unstorable_text_reason(value)
    if reason is not None:
        raise ValueError(reason)
    return value


@dataclass(frozen=True)
class _StorableText:
    """Marker: a string PostgreSQL can store; documented as a pattern without NUL."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(_check_text, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema.setdefault("pattern", NO_NUL_PATTERN)
        return json_schema


StoredText = Annotated[str, _StorableText()]


def _json_problem(value: Any, path: str) -> str | None:
    """Where and why `value` cannot be stored as jsonb, or None when it can."""
    if isinstance(value, str):
        reason = unstorable_text_reason(value)
        return None if reason is None else f"{path}: {reason}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{path}: {value} is not a JSON number PostgreSQL can store"
    if isinstance(value, dict):
        for key, item in value.items():
            reason = unstorable_text_reason(str(key))
            if reason is not None:
                return f"{path}: key {key!r} {reason}"
            problem = _json_problem(item, f"{path}.{key}")
            if problem is not None:
                return problem
    if isinstance(value, list):
        for index, item in enumerate(value):
            problem = _json_problem(item, f"{path}[{index}]")
            if problem is not None:
                return problem
    return None


def _check_json(value: Any) -> Any:
    problem = _json_problem(value, "value")
    if problem is not None:
        raise ValueError(problem)
    return value


# JSON stored in jsonb columns: checked all the way down, keys included.
StoredJsonArray = Annotated[list[Any], AfterValidator(_check_json)]
StoredJsonObject = Annotated[dict[str, Any], AfterValidator(_check_json)]


EARLIEST_DATETIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_DATETIME = datetime(3000, 1, 1, tzinfo=UTC)


def _check_datetime(value: datetime) -> datetime:
    # A naive datetime is left to the model's own rule, which asks for an offset.
    if value.tzinfo is not None and value.utcoffset() is not None:
        try:
            in_range = EARLIEST_DATETIME <= value < LATEST_DATETIME
        except OverflowError:  # its UTC value is outside years 1-9999
            in_range = False
        if not in_range:
            raise ValueError(f"must be between {EARLIEST_DATETIME.isoformat()} and {LATEST_DATETIME.isoformat()} (UTC)")
    return value


StoredDateTime = Annotated[datetime, AfterValidator(_check_datetime)]

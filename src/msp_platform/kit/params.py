"""Checks on query parameters that Litestar's parsing cannot express (it accepts naive datetimes)."""

from __future__ import annotations

from datetime import UTC, datetime

from msp_platform.kit.errors import FieldError, ValidationFailed

# Far enough for any schedule, SLA or report window; near enough that date arithmetic never overflows.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def require_aware(**values: datetime | None) -> None:
    """Refuse (422) any of the named instants that has no UTC offset or lies outside 1900..9000."""
    errors: list[FieldError] = []
    for name, value in values.items():
        if value is None:
            continue
        if value.tzinfo is None or value.utcoffset() is None:
            errors.append(FieldError(name, "must carry a UTC offset, e.g. 2026-03-01T08:00:00Z"))
        elif not EARLIEST <= value <= LATEST:
            errors.append(FieldError(name, "must lie between the years 1900 and 9000"))
    if errors:
        raise ValidationFailed("A timestamp parameter is invalid.", errors=errors)

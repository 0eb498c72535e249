"""Small validators shared by domains; each returns a FieldError list (empty when valid)."""

from __future__ import annotations

import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from msp_platform.kit.errors import FieldError, ValidationFailed

_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


def timezone_errors(field: str, value: str | None) -> list[FieldError]:
    if value is None:
        return []
    if value in {"", "localtime"} or value.startswith("/"):
        return [FieldError(field, f"{value!r} is not an IANA time zone")]
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return [FieldError(field, f"{value!r} is not an IANA time zone (e.g. America/New_York)")]
    return []


def code_errors(field: str, value: str) -> list[FieldError]:
    if not _CODE.match(value):
        return [FieldError(field, "1-40 letters, digits, '.', '_' or '-', starting with a letter or digit")]
    return []


def text_errors(
    field: str, value: str | None, *, max_length: int, required: bool = False
) -> list[FieldError]:
    if value is None:
        return [FieldError(field, "is required")] if required else []
    if required and not value.strip():
        return [FieldError(field, "must not be empty")]
    if len(value) > max_length:
        return [FieldError(field, f"must be at most {max_length} characters")]
    return []


def email_errors(field: str, value: str) -> list[FieldError]:
    if len(value) > 320 or not _EMAIL.match(value.strip()):
        return [FieldError(field, "not a valid email address")]
    return []


def raise_if(errors: list[FieldError], detail: str = "The request is invalid.") -> None:
    if errors:
        raise ValidationFailed(detail, errors=errors)

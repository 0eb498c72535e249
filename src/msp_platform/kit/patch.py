"""PATCH semantics: only the fields the caller sent are applied (msgspec ``UNSET`` marks the others)."""

from __future__ import annotations

from typing import Any

import msgspec


def sent_fields(data: msgspec.Struct) -> dict[str, Any]:
    return {
        name: getattr(data, name)
        for name in data.__struct_fields__
        if getattr(data, name) is not msgspec.UNSET
    }


def assign(obj: Any, values: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Set attributes; returns {field: (before, after)} of the ones that actually changed."""
    changed: dict[str, tuple[Any, Any]] = {}
    for name, value in values.items():
        before = getattr(obj, name)
        if before != value:
            setattr(obj, name, value)
            changed[name] = (before, value)
    return changed

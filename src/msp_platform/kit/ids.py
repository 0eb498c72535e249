from __future__ import annotations

import secrets
import uuid

from uuid_utils.compat import uuid7 as _uuid7


def new_id() -> uuid.UUID:
    """UUIDv7: time-ordered, so keys index well and sort by creation."""
    return _uuid7()


def new_token(prefix: str, nbytes: int = 32) -> str:
    """Random opaque token with a type prefix (like ``msp_rt_...``) so leaked secrets are recognisable."""
    return f"{prefix}_{secrets.token_urlsafe(nbytes)}"

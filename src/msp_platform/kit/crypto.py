from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.fernet import Fernet, InvalidToken


def fernet_for(secret: bytes) -> Fernet:
    """A Fernet key derived from any secret string (MSP_SECRET_KEY need not be Fernet-formatted)."""
    try:
        return Fernet(secret)
    except ValueError:
        return Fernet(base64.urlsafe_b64encode(hashlib.sha256(secret).digest()))


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def constant_time_equals(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


__all__ = ["InvalidToken", "constant_time_equals", "fernet_for", "sha256_hex"]

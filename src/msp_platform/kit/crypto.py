from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


def fernet_for(secret: bytes) -> Fernet:
    """A Fernet key derived from any secret string (MSP_SECRET_KEY need not be Fernet-formatted)."""
    try:
        return Fernet(secret)
    except ValueError:
        return Fernet(base64.urlsafe_b64encode(hashlib.sha256(secret).digest()))


def fernet_ring(secrets: Sequence[bytes]) -> MultiFernet:
    """Encrypts with the first secret (MSP_SECRET_KEY), decrypts with any (MSP_SECRET_KEY_PREVIOUS too)."""
    return MultiFernet([fernet_for(s) for s in secrets])


def derive_key(secret: bytes, purpose: str, *, length: int = 32) -> bytes:
    """A key for one purpose derived from MSP_SECRET_KEY (HKDF-SHA256): keys of different purposes are
    independent, and none reveals the secret."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=purpose.encode()).derive(secret)


def purpose_fernet(secret: bytes, purpose: str) -> Fernet:
    """A Fernet cipher whose key serves one purpose only (derived from MSP_SECRET_KEY with HKDF)."""
    return Fernet(base64.urlsafe_b64encode(derive_key(secret, purpose)))


def purpose_fernet_ring(secrets: Sequence[bytes], purpose: str) -> MultiFernet:
    """``purpose_fernet`` of each secret: encrypts with the first, decrypts with any."""
    return MultiFernet([purpose_fernet(s, purpose) for s in secrets])


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def constant_time_equals(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


__all__ = [
    "Fernet",
    "InvalidToken",
    "MultiFernet",
    "constant_time_equals",
    "derive_key",
    "fernet_for",
    "fernet_ring",
    "purpose_fernet",
    "purpose_fernet_ring",
    "sha256_hex",
]

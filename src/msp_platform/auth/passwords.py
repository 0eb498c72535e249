"""Argon2id password hashing (argon2-cffi defaults: RFC 9106 low-memory profile)."""

from __future__ import annotations

import os

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


def _make_hasher() -> PasswordHasher:
    # The test suite signs in hundreds of people; it opts into a cheap profile. Never in production.
    if os.environ.get("MSP_ARGON2_PROFILE") == "test":
        if os.environ.get("MSP_ENV") == "production":
            raise RuntimeError("MSP_ARGON2_PROFILE=test is refused in production")
        return PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    return PasswordHasher()


_hasher = _make_hasher()
# Verified against when the account does not exist, so a wrong email costs the same time as a wrong password.
_DUMMY_HASH = _hasher.hash("msp-platform-timing-equaliser")

MIN_PASSWORD_LENGTH = 12


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def password_problems(password: str) -> list[str]:
    problems = []
    if len(password) < MIN_PASSWORD_LENGTH:
        problems.append(f"must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > 1024:
        problems.append("must be at most 1024 characters")
    if password.strip() != password:
        problems.append("must not start or end with whitespace")
    return problems

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

from msp_platform.auth.scopes import STAFF_ROLES, Role


class PrincipalKind(StrEnum):
    staff = "staff"
    user = "user"
    client = "client"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as proven by a verified access token (and re-checked against the database)."""

    kind: PrincipalKind
    # A user or staff UUID (as text), or the client_id for integration clients.
    subject_id: str
    role: Role
    scopes: frozenset[str]
    client_id: str
    jti: str
    expires_at: int
    tenant_id: uuid.UUID | None = None
    tier: int | None = None

    @property
    def is_staff(self) -> bool:
        return self.role in STAFF_ROLES

    @property
    def key(self) -> str:
        """Stable per-caller key, used for rate limits and idempotency scoping."""
        return f"{self.kind.value}:{self.subject_id}"

    def has(self, *scopes: str) -> bool:
        return all(s in self.scopes for s in scopes)

    @property
    def user_id(self) -> uuid.UUID | None:
        return uuid.UUID(self.subject_id) if self.kind is PrincipalKind.user else None

    @property
    def staff_id(self) -> uuid.UUID | None:
        return uuid.UUID(self.subject_id) if self.kind is PrincipalKind.staff else None

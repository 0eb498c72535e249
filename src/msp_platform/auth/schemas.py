from __future__ import annotations

import msgspec


class TokenResponse(msgspec.Struct, kw_only=True):
    access_token: str
    token_type: str
    expires_in: int
    scope: str
    refresh_token: str | None = None


class SignInRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    email: str
    password: str
    tenant: str | None = None
    scope: str | None = None


class MeResponse(msgspec.Struct, kw_only=True):
    kind: str
    subject: str
    role: str
    tier: int | None
    scopes: list[str]
    client_id: str
    tenant_id: str | None
    acting_tenant_id: str | None
    readable_tenant_ids: list[str]
    token_expires_at: int

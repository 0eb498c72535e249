"""Verification of RFC 9068 JWT access tokens (the resource-server side)."""

from __future__ import annotations

import time
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwt import JWTClaimsRegistry
from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.auth.keys import KeyStore
from msp_platform.config import Settings
from msp_platform.kit.errors import Unauthorized

LEEWAY_SECONDS = 5
REQUIRED_CLAIMS = ("iss", "aud", "exp", "iat", "sub", "client_id", "jti")


class AccessTokenVerifier:
    def __init__(self, settings: Settings, keys: KeyStore) -> None:
        self.settings = settings
        self.keys = keys
        self._claims = JWTClaimsRegistry(
            leeway=LEEWAY_SECONDS,
            iss={"essential": True, "value": settings.issuer},
            aud={"essential": True, "value": settings.api_audience},
            exp={"essential": True},
            iat={"essential": True},
            sub={"essential": True},
            jti={"essential": True},
            client_id={"essential": True},
        )

    async def verify(self, token: str, session: AsyncSession, *, check_expiry: bool = True) -> dict[str, Any]:
        """Signature, type, issuer, audience and lifetime. Revocation and the subject's status are the
        caller's (they need the database rows anyway)."""
        alg, kid = self._check_header(token)
        ring = await self.keys.ring(session, unknown_kid=kid)
        if kid not in {k.kid for k in ring.published.keys}:
            raise Unauthorized("The access token was signed by an unknown key.")
        try:
            decoded = jwt.decode(token, ring.published, algorithms=[alg])
        except (JoseError, ValueError, TypeError, KeyError, AttributeError) as exc:
            # Anything the caller can put in a token is its fault, never a 500 (the header members
            # joserfc reads, such as ``crit`` or ``b64``, come from the caller).
            raise Unauthorized("The access token signature is invalid.") from exc
        claims: dict[str, Any] = dict(decoded.claims)
        try:
            if check_expiry:
                self._claims.validate(claims)
            else:
                JWTClaimsRegistry(
                    iss={"essential": True, "value": self.settings.issuer},
                    aud={"essential": True, "value": self.settings.api_audience},
                ).validate(claims)
        except JoseError as exc:
            raise Unauthorized(_describe_claim_error(exc, claims)) from exc
        if claims["iat"] > time.time() + LEEWAY_SECONDS:
            raise Unauthorized("The access token is issued in the future.")
        return claims

    def _check_header(self, token: str) -> tuple[str, str]:
        """The protected header, checked member by member: it is the caller's JSON, so any member may be of
        any type (a list ``kid``, a number ``typ``). Returns (alg, kid)."""
        try:
            header = jws.extract_compact(token.encode()).protected
        except (JoseError, ValueError, TypeError, UnicodeError) as exc:
            raise Unauthorized("The access token is malformed.") from exc
        if not isinstance(header, dict):
            raise Unauthorized("The access token is malformed.")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in {"at+jwt", "application/at+jwt"}:
            raise Unauthorized("The token is not an RFC 9068 access token (typ must be at+jwt).")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg != self.settings.signing_alg:
            raise Unauthorized("The access token is signed with an unsupported algorithm.")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > 256:
            raise Unauthorized("The access token was signed by an unknown key.")
        return alg, kid


def _describe_claim_error(exc: JoseError, claims: dict[str, Any]) -> str:
    name = getattr(exc, "claim", None) or ""
    if exc.error == "expired_token" or name == "exp":
        return "The access token has expired."
    if name == "aud":
        return "The access token is meant for another audience."
    if name == "iss":
        return "The access token was issued by another issuer."
    if exc.error == "missing_claim":
        return f"The access token lacks a required claim ({exc.description})."
    return f"The access token is invalid ({exc.description or exc.error})."

"""Signing keys for access tokens: generated, encrypted at rest, rotated by ``kid``, published as a JWKS."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey, import_key
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.config import Settings
from msp_platform.kit.crypto import InvalidToken, fernet_ring
from msp_platform.kit.logging import get_logger
from msp_platform.kit.time import utcnow
from msp_platform.models.oauth import SigningKey

Key = ECKey | RSAKey | OKPKey
log = get_logger(__name__)


def _generate(alg: str) -> Key:
    if alg == "ES256":
        return ECKey.generate_key("P-256", private=True)
    if alg == "RS256":
        return RSAKey.generate_key(2048, private=True)
    return OKPKey.generate_key("Ed25519", private=True)


@dataclass(frozen=True)
class KeyRing:
    active_kid: str
    alg: str
    signing: KeySet  # the one private key, so joserfc stamps its kid into every header
    published: KeySet  # public keys of the active and still-valid retired keys

    def jwks(self) -> dict[str, Any]:
        return dict(self.published.as_dict(private=False))


class KeyStore:
    """Loads the key ring from the database and caches it; reloads when a token names an unknown ``kid``
    (another process rotated) at most once per ``refresh_floor`` seconds."""

    refresh_floor = 5.0
    max_age = 60.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._fernet = fernet_ring(settings.secret_keys())
        self._ring: KeyRing | None = None
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()

    @property
    def retention(self) -> timedelta:
        # A retired key must verify every token it signed, until the last one has expired.
        return timedelta(seconds=self.settings.access_token_ttl_seconds + 300)

    def _encrypt(self, key: Key) -> str:
        return self._fernet.encrypt(json.dumps(key.as_dict(private=True)).encode()).decode()

    def _decrypt(self, blob: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self._fernet.decrypt(blob.encode()))
        return data

    async def create_key(self, session: AsyncSession, *, activate: bool = True) -> str:
        key = _generate(self.settings.signing_alg)
        kid = key.thumbprint()
        now = utcnow()
        if activate:
            for row in (
                await session.scalars(select(SigningKey).where(SigningKey.retired_at.is_(None)))
            ).all():
                row.retired_at = now
        session.add(
            SigningKey(
                kid=kid,
                alg=self.settings.signing_alg,
                private_jwk_encrypted=self._encrypt(key),
                public_jwk={
                    **key.as_dict(private=False),
                    "kid": kid,
                    "alg": self.settings.signing_alg,
                    "use": "sig",
                },
                created_at=now,
                activated_at=now if activate else None,
            )
        )
        await session.flush()
        self._ring = None
        return kid

    async def rotate(self, session: AsyncSession) -> str:
        kid = await self.create_key(session, activate=True)
        await session.execute(delete(SigningKey).where(SigningKey.retired_at < utcnow() - self.retention))
        return kid

    async def _load(self, session: AsyncSession) -> KeyRing | None:
        rows = (await session.scalars(select(SigningKey).order_by(SigningKey.created_at))).all()
        cutoff = utcnow() - self.retention
        active = [r for r in rows if r.retired_at is None and r.activated_at is not None]
        if not active:
            return None
        current = active[-1]
        private = self._decrypt(current.private_jwk_encrypted)
        signing = KeySet([import_key({**private, "kid": current.kid, "alg": current.alg, "use": "sig"})])
        published = KeySet(
            [
                import_key(dict(r.public_jwk))  # type: ignore[arg-type]
                for r in rows
                if r.retired_at is None or r.retired_at > cutoff
            ]
        )
        return KeyRing(active_kid=current.kid, alg=current.alg, signing=signing, published=published)

    async def ring(self, session: AsyncSession, *, unknown_kid: str | None = None) -> KeyRing:
        now = time.monotonic()
        ring = self._ring
        stale = ring is None or now - self._loaded_at > self.max_age
        wants_kid = (
            isinstance(unknown_kid, str)
            and ring is not None
            and unknown_kid not in {k.kid for k in ring.published.keys}
            and now - self._loaded_at > self.refresh_floor
        )
        if not (stale or wants_kid):
            assert ring is not None
            return ring
        async with self._lock:
            loaded = await self._load(session)
            if loaded is None:
                raise RuntimeError("no active signing key: run `msp keys rotate` or start the API once")
            self._ring = loaded
            self._loaded_at = time.monotonic()
            return loaded

    async def ensure(self, session: AsyncSession) -> None:
        """Create the first key if there is none (first start), or a new one if the active key cannot be
        read with MSP_SECRET_KEY (or MSP_SECRET_KEY_PREVIOUS): the secret was changed without keeping the old
        one. Tokens signed before still verify, their public keys stay published. The caller commits."""
        active = await session.scalar(
            select(SigningKey)
            .where(SigningKey.retired_at.is_(None), SigningKey.activated_at.is_not(None))
            .order_by(SigningKey.activated_at.desc())
            .limit(1)
        )
        if active is None:
            await self.create_key(session)
            return
        try:
            self._decrypt(active.private_jwk_encrypted)
        except InvalidToken:
            log.warning(
                "the active signing key cannot be decrypted with MSP_SECRET_KEY or MSP_SECRET_KEY_PREVIOUS; "
                "a new signing key replaces it (tokens it signed still verify until they expire)",
                kid=active.kid,
            )
            await self.create_key(session)

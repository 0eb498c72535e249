"""What the API process holds for its lifetime, reachable from requests as ``app.state.services``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dramatiq
from litestar import Litestar

from msp_platform.auth.keys import KeyStore
from msp_platform.auth.server import MSPAuthorizationServer
from msp_platform.auth.tokens import AccessTokenVerifier
from msp_platform.config import Settings
from msp_platform.db.engine import Database
from msp_platform.kit.ratelimit import RateLimiter


@dataclass
class AppServices:
    settings: Settings
    db: Database
    keys: KeyStore
    verifier: AccessTokenVerifier
    oauth: MSPAuthorizationServer
    limiter: RateLimiter
    broker: dramatiq.Broker | None = None
    extras: dict[str, Any] | None = None


def services_of(app: Litestar) -> AppServices:
    services: AppServices = app.state.services
    return services

"""Settings: one object, read from ``MSP_*`` environment variables, with safe embedded defaults."""

from __future__ import annotations

from enum import StrEnum
from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class Environment(StrEnum):
    development = "development"
    testing = "testing"
    production = "production"


class BrokerKind(StrEnum):
    in_process = "in-process"
    redis = "redis"
    rabbitmq = "rabbitmq"


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
AMQP_SCHEMES = ("amqp://", "amqps://")
BROKER_SCHEMES = REDIS_SCHEMES + AMQP_SCHEMES


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MSP_", env_file=".env", extra="ignore")

    env: Environment = Environment.development
    # Where the embedded mode keeps its SQLite file, generated secret and demo credentials.
    var_dir: Path = PROJECT_ROOT / "var"

    # The application connects with this URL. On PostgreSQL it must be a non-owner NOBYPASSRLS role.
    database_url: str = ""
    # Migrations and the few explicitly unscoped system jobs use the owner. Defaults to database_url.
    database_owner_url: str = ""
    database_pool_size: int = 10
    database_max_overflow: int = 20
    database_echo: bool = False

    # Unset: in-process broker (StubBroker + worker threads inside the API process).
    broker_url: str = ""
    broker_namespace: str = "msp"
    worker_threads: int = 4
    # Embedded mode only: run Dramatiq worker threads and the scheduler inside the API process.
    embedded_worker: bool = True
    # Rate-limit counters: Redis when set, otherwise process memory.
    redis_url: str = ""

    host: str = "127.0.0.1"
    port: int = 8000
    api_workers: int = 1

    # Used to encrypt signing keys at rest. Generated into var_dir in development if unset.
    secret_key: SecretStr | None = None
    # Earlier values of MSP_SECRET_KEY (comma-separated, newest first) after a rotation: still accepted to read
    # what they protected (signing keys, webhook secrets, stored idempotent responses, calendar feed URLs,
    # audit chains); everything new is protected with MSP_SECRET_KEY.
    secret_key_previous: SecretStr | None = None
    issuer: str = "http://127.0.0.1:8000"
    api_audience: str = "msp-platform-api"
    access_token_ttl_seconds: int = Field(default=900, ge=60, le=86_400)
    refresh_token_ttl_seconds: int = Field(default=30 * 86_400, ge=3600)
    signing_alg: str = "ES256"

    request_max_body_bytes: int = 1_048_576
    import_max_body_bytes: int = 25 * 1_048_576
    rate_limit_per_minute: int = 600
    sign_in_attempts_per_15_minutes: int = 10

    log_level: str = "INFO"
    log_json: bool = True

    # Outgoing email (the ``email`` notification channel). No host: the channel is off.
    smtp_host: str = ""
    smtp_port: int = Field(default=587, ge=1, le=65_535)  # 465 = implicit TLS
    smtp_from: str = "msp-platform@localhost"
    smtp_username: str = ""
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = True
    # The MSP's own webhook for pages of MSP staff (chat, SMS or voice gateway): a Standard Webhooks signed
    # ``page.triggered`` per staff page. No URL (or no ``whsec_`` secret): staff pages go by email only.
    staff_page_webhook_url: str = ""
    staff_page_webhook_secret: SecretStr | None = None
    # Where an invitation email's link points: a page of your console that reads ``token`` from the query
    # string and POSTs it with the chosen password to /api/v1/auth/accept-invitation. Empty:
    # ``{MSP_ISSUER}/accept-invitation``. The token is appended as ``?token=`` (``&token=`` after a query).
    invitation_accept_url: str = ""

    # Browser consoles on other origins: comma-separated origins (https://portal.example.org) or * for any.
    # Empty: no cross-origin access (same-origin consoles and server-side clients need none).
    cors_origins: str = ""

    tenants_dir: Path = PROJECT_ROOT / "tenants"
    billing_dir: Path = PROJECT_ROOT / "billing"
    integrations_dir: Path = PROJECT_ROOT / "integrations"

    @field_validator("broker_url")
    @classmethod
    def _known_broker(cls, value: str) -> str:
        value = value.strip()
        if value and not value.startswith(BROKER_SCHEMES):
            scheme = value.split("://", 1)[0] if "://" in value else value[:20]
            raise ValueError(
                f"must start with redis://, rediss://, unix://, amqp:// or amqps:// "
                f"(got {scheme!r}); leave it unset for the in-process broker"
            )
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        from msp_platform.kit.cors import parse_origins

        return ",".join(parse_origins(value))

    @property
    def cors_origin_list(self) -> list[str]:
        from msp_platform.kit.cors import parse_origins

        return parse_origins(self.cors_origins)

    @field_validator("signing_alg")
    @classmethod
    def _known_alg(cls, value: str) -> str:
        if value not in {"ES256", "RS256", "EdDSA"}:
            raise ValueError("signing_alg must be ES256, RS256 or EdDSA")
        return value

    @model_validator(mode="after")
    def _production_rules(self) -> Settings:
        if self.env is Environment.production:
            if not self.issuer.startswith("https://"):
                raise ValueError("MSP_ISSUER must be an https:// URL in production")
            if self.secret_key is None:
                raise ValueError("MSP_SECRET_KEY must be set in production")
        return self

    @cached_property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.var_dir / 'msp.db'}"

    @cached_property
    def effective_owner_url(self) -> str:
        return self.database_owner_url or self.effective_database_url

    @property
    def is_sqlite(self) -> bool:
        return make_url(self.effective_database_url).get_backend_name() == "sqlite"

    @property
    def is_postgres(self) -> bool:
        return make_url(self.effective_database_url).get_backend_name() == "postgresql"

    @property
    def broker_kind(self) -> BrokerKind:
        if not self.broker_url:
            return BrokerKind.in_process
        if self.broker_url.startswith(REDIS_SCHEMES):
            return BrokerKind.redis
        if self.broker_url.startswith(AMQP_SCHEMES):
            return BrokerKind.rabbitmq
        raise ValueError(f"MSP_BROKER_URL must start with redis:// or amqp://, got {self.broker_url!r}")

    def previous_secret_keys(self) -> tuple[bytes, ...]:
        if self.secret_key_previous is None:
            return ()
        values = self.secret_key_previous.get_secret_value().split(",")
        return tuple(v.strip().encode() for v in values if v.strip())

    def secret_keys(self) -> tuple[bytes, ...]:
        """MSP_SECRET_KEY first, then the previous ones: protect with the first, accept any."""
        return (self.resolved_secret_key(), *self.previous_secret_keys())

    def resolved_secret_key(self) -> bytes:
        """The key that encrypts private signing keys; generated once per embedded installation."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value().encode()
        if self.env is Environment.production:
            raise RuntimeError("MSP_SECRET_KEY must be set in production")
        path = self.var_dir / "secret.key"
        if not path.exists():
            from cryptography.fernet import Fernet

            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(Fernet.generate_key())
            path.chmod(0o600)
        return path.read_bytes().strip()


class SettingsError(ValueError):
    """The MSP_* environment is invalid; the message names each variable and what is wrong with it."""


def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            ("MSP_" + "_".join(str(p) for p in error["loc"]).upper() + ": " if error["loc"] else "")
            + str(error["msg"]).removeprefix("Value error, ")
            for error in exc.errors()
        )
        raise SettingsError(f"invalid configuration: {problems}") from None

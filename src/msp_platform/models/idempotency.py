from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from msp_platform.db.base import Base
from msp_platform.db.types import JSONType
from msp_platform.kit.ids import new_id


class IdempotencyRecord(Base):
    """The stored outcome of a POST sent with ``Idempotency-Key``, scoped to (tenant, caller, key).

    It is written in the request's own transaction, so it exists exactly when the request's effects do.
    """

    __tablename__ = "idempotency_records"
    __table_args__ = (UniqueConstraint("tenant_scope", "principal", "key"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    tenant_scope: Mapped[str] = mapped_column(String(40))
    principal: Mapped[str] = mapped_column(String(120))
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column(Integer)
    response_headers: Mapped[dict[str, str] | None] = mapped_column(JSONType)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(index=True)

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from msp_platform.db.base import Base, Timestamped
from msp_platform.db.types import JSONType
from msp_platform.kit.ids import new_id


class AssignmentGroup(Timestamped, Base):
    """An MSP team that works incidents ("Service Desk L1", "Network L3"). Not owned by a tenant: one group
    serves every tenant, or only those in ``tenant_ids`` when that is set."""

    __tablename__ = "assignment_groups"
    # Platform rows are audited only when named (the platform chain, read by MSP staff).
    __audit_type__: ClassVar[str] = "assignment_group"
    __table_args__ = (CheckConstraint("tier BETWEEN 1 AND 3", name="tier_range"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(80))
    tier: Mapped[int] = mapped_column(SmallInteger)
    description: Mapped[str] = mapped_column(Text, default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # None: every tenant; otherwise the tenant ids (as text) the group works for.
    tenant_ids: Mapped[list[Any] | None] = mapped_column(JSONType)

    def serves(self, tenant_id: uuid.UUID) -> bool:
        return self.tenant_ids is None or str(tenant_id) in self.tenant_ids


# Names are unique whatever their case ("Network L3" and "network l3" are one group).
Index("uq_assignment_groups_name_lower", func.lower(AssignmentGroup.name), unique=True)


class AssignmentGroupMember(Timestamped, Base):
    """A staff member of an assignment group."""

    __tablename__ = "assignment_group_members"
    __audit_type__: ClassVar[str] = "assignment_group_member"
    __table_args__ = (
        UniqueConstraint("group_id", "staff_id"),
        Index("ix_assignment_group_members_staff", "staff_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    group_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("assignment_groups.id", ondelete="CASCADE"))
    staff_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_members.id", ondelete="CASCADE"))

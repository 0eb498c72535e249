"""All SQL of integrations. Queries are tenant-filtered by the session; inserts that must be idempotent
name their row's tenant explicitly (taken from a row the scoped session returned)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.kit.ids import new_id
from msp_platform.kit.pagination import Ordering, SortKey, paginate
from msp_platform.models.incident import Incident
from msp_platform.models.oncall import Notification, Page, WebhookDelivery, WebhookEndpoint
from msp_platform.models.staff import StaffMember
from msp_platform.models.user import User

ENDPOINT_ORDER = Ordering(
    "created",
    (SortKey(WebhookEndpoint.created_at), SortKey(WebhookEndpoint.tenant_id), SortKey(WebhookEndpoint.id)),
)
DELIVERY_ORDER = Ordering(
    "-created",
    (SortKey(WebhookDelivery.created_at, descending=True), SortKey(WebhookDelivery.id, descending=True)),
)


async def insert_ignoring_conflict(session: AsyncSession, model: type[Any], values: dict[str, Any]) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING; True when the row was inserted (a unique key makes it idempotent)."""
    dialect = session.bind.dialect.name if session.bind is not None else ""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt: Any = pg_insert(model).values(values).on_conflict_do_nothing()
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(model).values(values).on_conflict_do_nothing()
    result = await session.execute(stmt.returning(model.id))
    return result.scalar() is not None


class WebhookRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def endpoint(self, endpoint_id: uuid.UUID) -> WebhookEndpoint | None:
        found: WebhookEndpoint | None = await self.session.scalar(
            select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
        )
        return found

    async def active_endpoints(self) -> list[WebhookEndpoint]:
        rows = await self.session.scalars(
            select(WebhookEndpoint).where(WebhookEndpoint.active.is_(True)).order_by(WebhookEndpoint.id)
        )
        return list(rows.all())

    async def page_endpoints(
        self, *, limit: int | None, cursor: str | None, active: bool | None
    ) -> tuple[list[WebhookEndpoint], str | None]:
        stmt: Select[Any] = select(WebhookEndpoint)
        if active is not None:
            stmt = stmt.where(WebhookEndpoint.active.is_(active))
        return await paginate(
            self.session, stmt, ordering=ENDPOINT_ORDER, limit=limit, cursor=cursor, scope="webhook-endpoints"
        )

    async def delete_endpoint(self, endpoint: WebhookEndpoint) -> None:
        # Deliveries reference their endpoint (RESTRICT): they go first, with it.
        await self.session.execute(
            delete(WebhookDelivery)
            .where(WebhookDelivery.endpoint_id == endpoint.id)
            .execution_options(synchronize_session=False)
        )
        await self.session.delete(endpoint)
        await self.session.flush()

    async def delivery(
        self, delivery_id: uuid.UUID, endpoint_id: uuid.UUID | None = None
    ) -> WebhookDelivery | None:
        stmt = select(WebhookDelivery).where(WebhookDelivery.id == delivery_id)
        if endpoint_id is not None:
            stmt = stmt.where(WebhookDelivery.endpoint_id == endpoint_id)
        found: WebhookDelivery | None = await self.session.scalar(stmt)
        return found

    async def page_deliveries(
        self,
        endpoint_id: uuid.UUID,
        *,
        limit: int | None,
        cursor: str | None,
        status: str | None,
        event_type: str | None,
    ) -> tuple[list[WebhookDelivery], str | None]:
        stmt: Select[Any] = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
        if status is not None:
            stmt = stmt.where(WebhookDelivery.status == status)
        if event_type is not None:
            stmt = stmt.where(WebhookDelivery.event_type == event_type)
        return await paginate(
            self.session,
            stmt,
            ordering=DELIVERY_ORDER,
            limit=limit,
            cursor=cursor,
            scope=f"webhook-deliveries:{endpoint_id}",
        )

    async def add_delivery(
        self,
        *,
        tenant_id: uuid.UUID,
        endpoint_id: uuid.UUID,
        message_id: str,
        event_type: str,
        payload: dict[str, Any],
        now: datetime,
    ) -> uuid.UUID | None:
        """A pending delivery, unless this endpoint already has this message (then None)."""
        delivery_id = new_id()
        inserted = await insert_ignoring_conflict(
            self.session,
            WebhookDelivery,
            {
                "tenant_id": tenant_id,
                "id": delivery_id,
                "endpoint_id": endpoint_id,
                "message_id": message_id,
                "event_type": event_type,
                "payload": payload,
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
                "updated_at": now,
            },
        )
        return delivery_id if inserted else None

    async def claim_attempt(
        self, delivery_id: uuid.UUID, attempt: int, *, lease_until: datetime, now: datetime
    ) -> bool:
        """Compare-and-set: attempt number ``attempt`` is this job's (no other job made it)."""
        result = await self.session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.attempts == attempt - 1,
                WebhookDelivery.status.in_(("pending", "failed")),
            )
            .values(attempts=attempt, next_attempt_at=lease_until, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0))

    async def record_attempt(self, delivery_id: uuid.UUID, attempt: int, **values: Any) -> bool:
        result = await self.session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, WebhookDelivery.attempts == attempt)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0))


class NotificationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def page(self, page_id: uuid.UUID) -> Page | None:
        found: Page | None = await self.session.scalar(select(Page).where(Page.id == page_id))
        return found

    async def incident(self, incident_id: uuid.UUID) -> Incident | None:
        found: Incident | None = await self.session.scalar(select(Incident).where(Incident.id == incident_id))
        return found

    async def staff(self, staff_id: uuid.UUID) -> StaffMember | None:
        found: StaffMember | None = await self.session.scalar(
            select(StaffMember).where(StaffMember.id == staff_id)
        )
        return found

    async def user(self, user_id: uuid.UUID) -> User | None:
        found: User | None = await self.session.scalar(select(User).where(User.id == user_id))
        return found

    async def for_page(self, page_id: uuid.UUID) -> list[Notification]:
        rows = await self.session.scalars(
            select(Notification).where(Notification.page_id == page_id).order_by(Notification.channel)
        )
        return list(rows.all())

    async def get(self, notification_id: uuid.UUID) -> Notification | None:
        found: Notification | None = await self.session.scalar(
            select(Notification).where(Notification.id == notification_id)
        )
        return found

    async def add(
        self, *, tenant_id: uuid.UUID, page_id: uuid.UUID, channel: str, recipient: str, now: datetime
    ) -> uuid.UUID | None:
        """A pending notification, unless the page already has one on this channel (then None)."""
        notification_id = new_id()
        inserted = await insert_ignoring_conflict(
            self.session,
            Notification,
            {
                "tenant_id": tenant_id,
                "id": notification_id,
                "page_id": page_id,
                "channel": channel,
                "recipient": recipient[:320],
                "status": "pending",
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
            },
        )
        return notification_id if inserted else None

    async def claim_attempt(self, notification_id: uuid.UUID, attempt: int, *, now: datetime) -> bool:
        result = await self.session.execute(
            update(Notification)
            .where(
                Notification.id == notification_id,
                Notification.attempts == attempt - 1,
                Notification.status == "pending",
            )
            .values(attempts=attempt, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0))

    async def record_attempt(self, notification_id: uuid.UUID, attempt: int, **values: Any) -> bool:
        result = await self.session.execute(
            update(Notification)
            .where(
                Notification.id == notification_id,
                Notification.attempts == attempt,
                Notification.status == "pending",
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0))


class SweepRepository:
    """Cross-tenant reads for the safety sweep, on an owner session: ids only, handed to tenant-scoped jobs."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def overdue_deliveries(self, before: datetime, limit: int) -> Sequence[Any]:
        return (
            await self.session.execute(
                select(WebhookDelivery.tenant_id, WebhookDelivery.id, WebhookDelivery.attempts)
                .where(
                    WebhookDelivery.status.in_(("pending", "failed")),
                    WebhookDelivery.next_attempt_at <= before,
                )
                .order_by(WebhookDelivery.next_attempt_at)
                .limit(limit)
            )
        ).all()

    async def stalled_notifications(self, before: datetime, limit: int) -> Sequence[Any]:
        return (
            await self.session.execute(
                select(Notification.tenant_id, Notification.id, Notification.attempts)
                .where(Notification.status == "pending", Notification.updated_at <= before)
                .order_by(Notification.updated_at)
                .limit(limit)
            )
        ).all()

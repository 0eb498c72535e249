"""/api/v1/webhooks: a tenant's outbound webhook endpoints (Standard Webhooks) and their deliveries.

Who: the tenant's integration administrators, i.e. the ``clients:write`` / ``clients:read`` scopes (tenant
admins; MSP admins with ``MSP-Tenant``; integration clients may read). Webhooks are integrations like API
clients, and a webhook secret is a credential of the same weight as a client secret.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from litestar import Controller, Request, delete, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, JSONBody

from msp_platform.auth.guards import protected
from msp_platform.auth.scopes import Scope
from msp_platform.config import Settings
from msp_platform.integrations import service
from msp_platform.integrations.repository import WebhookRepository
from msp_platform.integrations.schemas import (
    DeliveryOut,
    DeliveryStatus,
    EndpointCreate,
    EndpointCreated,
    EndpointOut,
    EndpointUpdate,
    SecretRotated,
)
from msp_platform.kit.deps import DEPENDENCIES, Session, TenantId
from msp_platform.kit.pagination import Cursor, Limit, Page
from msp_platform.kit.patch import sent_fields
from msp_platform.models.oncall import WebhookDelivery, WebhookEndpoint
from msp_platform.state import services_of

AppSettings = NamedDependency[Settings]
READ = protected(Scope.clients_read)
WRITE = protected(Scope.clients_write)


def provide_settings(request: Request[Any, Any, Any]) -> Settings:
    return services_of(request.app).settings


def endpoint_out(endpoint: WebhookEndpoint) -> EndpointOut:
    return EndpointOut(
        id=endpoint.id,
        tenant_id=endpoint.tenant_id,
        url=endpoint.url,
        description=endpoint.description,
        event_types=list(endpoint.event_types),
        active=endpoint.active,
        created_at=endpoint.created_at,
        updated_at=endpoint.updated_at,
    )


def delivery_out(delivery: WebhookDelivery) -> DeliveryOut:
    return DeliveryOut(
        id=delivery.id,
        endpoint_id=delivery.endpoint_id,
        message_id=delivery.message_id,
        event_type=delivery.event_type,
        payload=dict(delivery.payload),
        status=DeliveryStatus(delivery.status),
        attempts=delivery.attempts,
        next_attempt_at=delivery.next_attempt_at,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        delivered_at=delivery.delivered_at,
        created_at=delivery.created_at,
        updated_at=delivery.updated_at,
    )


class WebhookController(Controller):
    path = "/api/v1/webhooks"
    tags = ["Webhooks"]
    dependencies = {**DEPENDENCIES, "settings": Provide(provide_settings, sync_to_thread=False)}

    @post("/", summary="Register a webhook endpoint; its signing secret is shown once", **WRITE)
    async def create(
        self, session: Session, tenant_id: TenantId, settings: AppSettings, data: JSONBody[EndpointCreate]
    ) -> EndpointCreated:
        endpoint, secret = await service.create_endpoint(session, settings, data)
        return EndpointCreated(**msgspec.structs.asdict(endpoint_out(endpoint)), secret=secret)

    @get("/", summary="List webhook endpoints (oldest first)", **READ)
    async def list_endpoints(
        self,
        session: Session,
        tenant_id: TenantId,
        limit: Limit = None,
        cursor: Cursor = None,
        active: FromQuery[bool | None] = None,
    ) -> Page[EndpointOut]:
        rows, next_cursor = await WebhookRepository(session).page_endpoints(
            limit=limit, cursor=cursor, active=active
        )
        return Page(items=[endpoint_out(e) for e in rows], next_cursor=next_cursor)

    @get("/{endpoint_id:uuid}", summary="Get a webhook endpoint (never its secret)", **READ)
    async def get_endpoint(
        self, session: Session, tenant_id: TenantId, endpoint_id: FromPath[uuid.UUID]
    ) -> EndpointOut:
        return endpoint_out(await service.get_endpoint(session, endpoint_id))

    @patch("/{endpoint_id:uuid}", summary="Update a webhook endpoint (only the fields sent)", **WRITE)
    async def update(
        self,
        session: Session,
        tenant_id: TenantId,
        settings: AppSettings,
        endpoint_id: FromPath[uuid.UUID],
        data: JSONBody[EndpointUpdate],
    ) -> EndpointOut:
        endpoint = await service.get_endpoint(session, endpoint_id)
        await service.update_endpoint(session, settings, endpoint, sent_fields(data))
        return endpoint_out(endpoint)

    @delete("/{endpoint_id:uuid}", summary="Delete a webhook endpoint and its delivery history", **WRITE)
    async def remove(self, session: Session, tenant_id: TenantId, endpoint_id: FromPath[uuid.UUID]) -> None:
        await service.delete_endpoint(session, await service.get_endpoint(session, endpoint_id))

    @post(
        "/{endpoint_id:uuid}/rotate-secret",
        summary="Replace the signing secret (shown once); the old one still signs for 24 hours",
        status_code=200,
        **WRITE,
    )
    async def rotate_secret(
        self, session: Session, tenant_id: TenantId, settings: AppSettings, endpoint_id: FromPath[uuid.UUID]
    ) -> SecretRotated:
        endpoint = await service.get_endpoint(session, endpoint_id)
        secret, previous_expires_at = await service.rotate_secret(session, settings, endpoint)
        return SecretRotated(id=endpoint.id, secret=secret, previous_secret_expires_at=previous_expires_at)

    @post(
        "/{endpoint_id:uuid}/test",
        summary="Send a webhook.test event to this endpoint (a delivery like any other)",
        status_code=202,
        **WRITE,
    )
    async def send_test(
        self, session: Session, tenant_id: TenantId, endpoint_id: FromPath[uuid.UUID]
    ) -> DeliveryOut:
        endpoint = await service.get_endpoint(session, endpoint_id)
        return delivery_out(await service.send_test(session, endpoint))

    @get("/{endpoint_id:uuid}/deliveries", summary="An endpoint's deliveries, newest first", **READ)
    async def list_deliveries(
        self,
        session: Session,
        tenant_id: TenantId,
        endpoint_id: FromPath[uuid.UUID],
        limit: Limit = None,
        cursor: Cursor = None,
        status: FromQuery[DeliveryStatus | None] = None,
        event_type: FromQuery[str | None] = None,
    ) -> Page[DeliveryOut]:
        await service.get_endpoint(session, endpoint_id)
        rows, next_cursor = await WebhookRepository(session).page_deliveries(
            endpoint_id, limit=limit, cursor=cursor, status=status, event_type=event_type
        )
        return Page(items=[delivery_out(d) for d in rows], next_cursor=next_cursor)

    @get("/{endpoint_id:uuid}/deliveries/{delivery_id:uuid}", summary="Get a delivery", **READ)
    async def get_delivery(
        self,
        session: Session,
        tenant_id: TenantId,
        endpoint_id: FromPath[uuid.UUID],
        delivery_id: FromPath[uuid.UUID],
    ) -> DeliveryOut:
        return delivery_out(await service.get_delivery(session, endpoint_id, delivery_id))

    @post(
        "/{endpoint_id:uuid}/deliveries/{delivery_id:uuid}/replay",
        summary="Send a delivery again now (same webhook-id and body, fresh signature)",
        status_code=202,
        **WRITE,
    )
    async def replay(
        self,
        session: Session,
        tenant_id: TenantId,
        endpoint_id: FromPath[uuid.UUID],
        delivery_id: FromPath[uuid.UUID],
    ) -> DeliveryOut:
        endpoint = await service.get_endpoint(session, endpoint_id)
        delivery = await service.get_delivery(session, endpoint_id, delivery_id)
        return delivery_out(await service.replay(session, endpoint, delivery))

"""Tenant scoping of every ORM statement, stamping of inserts, and the PostgreSQL tenant GUCs.

Rules enforced here (the application wall; row-level security is the database wall):
- a SELECT/UPDATE/DELETE touching a tenant-owned model gets ``tenant_id IN (readable tenants)``;
- a new tenant-owned row gets the context's write tenant, and a row naming another tenant is refused;
- without a tenant context, touching a tenant-owned model raises ``TenantScopeError``: nothing is
  silently unfiltered. Only sessions marked ``unscoped`` (the owner's, for system sweeps) skip this.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction, with_loader_criteria
from sqlalchemy.orm import SessionTransaction as _SessionTransaction

from msp_platform.authz.types import TenantContext, TenantScopeError
from msp_platform.db.base import TenantOwned, is_tenant_owned

CTX_KEY = "tenant_ctx"


class TenantSession(Session):
    """The sync session class behind every AsyncSession of the platform."""


def get_tenant_context(session: Session | AsyncSession) -> TenantContext | None:
    ctx: TenantContext | None = session.info.get(CTX_KEY)
    return ctx


async def set_tenant_context(session: AsyncSession, ctx: TenantContext | None) -> None:
    """Bind the session to a tenant context; applies at once to an open PostgreSQL transaction too."""
    session.info[CTX_KEY] = ctx
    if session.in_transaction() and session.bind is not None and session.bind.dialect.name == "postgresql":
        conn = await session.connection()
        await conn.execute(_GUC_SQL, _guc_params(ctx))


_GUC_SQL = text(
    "SELECT set_config('app.tenant_id', :tenant_id, true), set_config('app.tenant_ids', :tenant_ids, true)"
)


def _guc_params(ctx: TenantContext | None) -> dict[str, str]:
    if ctx is None:
        return {"tenant_id": "", "tenant_ids": ""}
    return {
        "tenant_id": str(ctx.tenant_id) if ctx.tenant_id is not None else "",
        "tenant_ids": ",".join(sorted(str(t) for t in ctx.readable)),
    }


@event.listens_for(TenantSession, "after_begin")
def _set_guc(session: Session, _: _SessionTransaction, connection: Any) -> None:
    # Transaction-local (is_local=true): a pooled connection never carries one request's tenant into the next.
    if connection.dialect.name == "postgresql":
        connection.execute(_GUC_SQL, _guc_params(session.info.get(CTX_KEY)))


@event.listens_for(TenantSession, "do_orm_execute")
def _scope_statement(state: ORMExecuteState) -> None:
    if state.is_column_load or state.is_relationship_load:
        # The parent query was already scoped; its lazy/column loads inherit the criteria.
        return
    if not (state.is_select or state.is_update or state.is_delete):
        return
    if state.session.info.get("unscoped"):
        return
    if not any(is_tenant_owned(m.class_) for m in state.all_mappers):
        return
    ctx: TenantContext | None = state.session.info.get(CTX_KEY)
    if ctx is None:
        raise TenantScopeError("tenant-owned rows queried without a tenant context")
    readable = tuple(ctx.readable)
    state.statement = state.statement.options(
        with_loader_criteria(
            TenantOwned,
            lambda cls: cls.tenant_id.in_(readable),
            include_aliases=True,
            track_closure_variables=False,
        )
    )
    if state.is_update or state.is_delete:
        # Bulk writes go to the write tenant only, like row-level security's WITH CHECK.
        write = ctx.tenant_id
        if write is None:
            raise TenantScopeError("bulk write without a write tenant")
        state.statement = state.statement.options(
            with_loader_criteria(
                TenantOwned,
                lambda cls: cls.tenant_id == write,
                include_aliases=True,
                track_closure_variables=False,
            )
        )


@event.listens_for(TenantSession, "before_flush")
def _stamp_tenant(session: Session, _: UOWTransaction, __: Any) -> None:
    if session.info.get("unscoped"):
        return
    ctx: TenantContext | None = session.info.get(CTX_KEY)
    for obj in session.new:
        if not is_tenant_owned(type(obj)):
            continue
        if ctx is None or ctx.tenant_id is None:
            raise TenantScopeError(f"cannot insert {type(obj).__name__} without a write tenant")
        if obj.tenant_id is None:
            obj.tenant_id = ctx.tenant_id
        elif obj.tenant_id != ctx.tenant_id:
            raise TenantScopeError(f"{type(obj).__name__} stamped for another tenant")
    for obj in session.dirty:
        if not is_tenant_owned(type(obj)):
            continue
        if _history(obj, "tenant_id"):
            raise TenantScopeError("tenant_id of a stored row cannot change")
        if ctx is None or obj.tenant_id != ctx.tenant_id:
            raise TenantScopeError("cannot change rows of a tenant other than the write tenant")
    for obj in session.deleted:
        if is_tenant_owned(type(obj)) and (ctx is None or obj.tenant_id != ctx.tenant_id):
            raise TenantScopeError("cannot delete rows of a tenant other than the write tenant")


def _history(obj: Any, attr: str) -> bool:
    from sqlalchemy import inspect

    state = inspect(obj)
    hist = state.attrs[attr].history
    return bool(hist.deleted)

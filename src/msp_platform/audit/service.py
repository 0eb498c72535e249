"""The audit log: every change to an audited row becomes an append-only, hash-chained event.

Capture is automatic, so no service can forget it: after each flush the session records, for every audited
object it inserted, updated or deleted, the fields that changed (before/after). Just before the commit the
recorded events are appended to their chain (one per tenant, plus ``platform``) under a row lock on the
chain head, each event's hash covering its content and the previous hash. Editing or deleting a stored
event breaks the chain, which ``verify_chain`` (``msp audit verify``) detects.

Services may name the action (``label(session, obj, "suspended")`` gives ``tenant.suspended`` instead of
``tenant.updated``), and may record an event that no column change captures (``record(session, obj,
"invited", {...})``).

Staff-only events: ``internal=True`` (on ``record`` or ``label``), or any audited row whose ``visibility`` is
``internal`` (an internal work note), gives an event that MSP staff read and tenant-level readers never see.
The chain covers internal events like any other.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Table, event, func, insert, inspect, select
from sqlalchemy.orm import Session, UOWTransaction

from msp_platform.config import Settings
from msp_platform.db.session import CTX_KEY, TenantSession
from msp_platform.kit.crypto import derive_key
from msp_platform.kit.errors import PlatformError, problem_type
from msp_platform.kit.ids import new_id
from msp_platform.kit.logging import request_id_var
from msp_platform.kit.time import utcnow
from msp_platform.models.audit import AuditChain, AuditEvent, PlatformAuditEvent
from msp_platform.models.oauth import OAuthClient
from msp_platform.models.staff import StaffGrant, StaffMember
from msp_platform.models.tenant import Tenant

PENDING = "audit_pending"
LABELS = "audit_labels"
INTERNAL = "audit_internal"
ACTOR = "actor"
PLATFORM_CHAIN = "platform"
GENESIS = "0" * 64
KEY_INFO = "audit_key"
PREVIOUS_KEYS_INFO = "audit_previous_keys"
KEY_PURPOSE = "msp-platform audit chain v1"

# Audited platform tables; every tenant-owned table is audited unless it opts out.
_PLATFORM_AUDITED: dict[type[Any], str] = {
    Tenant: "tenant",
    StaffMember: "staff",
    StaffGrant: "staff_grant",
    OAuthClient: "client",
}
_NOT_AUDITED = (AuditEvent, PlatformAuditEvent, AuditChain)
_ALWAYS_EXCLUDED = frozenset({"created_at", "updated_at", "secret_hash", "password_hash"})


@dataclass
class PendingEvent:
    chain: str
    tenant_id: uuid.UUID | None
    occurred_at: datetime
    actor: str
    action: str
    object_type: str
    object_id: str
    changes: dict[str, Any]
    request_id: str | None = None
    internal: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def object_type_of(cls: type[Any]) -> str | None:
    if issubclass(cls, _NOT_AUDITED) or getattr(cls, "__audited__", True) is False:
        return None
    explicit = getattr(cls, "__audit_type__", None)
    if explicit:
        return str(explicit)
    if cls in _PLATFORM_AUDITED:
        return _PLATFORM_AUDITED[cls]
    if getattr(cls, "__tenant_owned__", False):
        table = str(cls.__tablename__)
        return table[:-1] if table.endswith("s") else table
    return None


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal | float):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return str(value)


def _chain_of(obj: Any) -> tuple[str, uuid.UUID | None]:
    if isinstance(obj, Tenant):
        return str(obj.id), obj.id
    tenant_id = getattr(obj, "tenant_id", None)
    if isinstance(obj, StaffGrant) or tenant_id is None:
        return PLATFORM_CHAIN, None
    return str(tenant_id), tenant_id


def _sync(session: Session | Any) -> Session:
    return cast(Session, session.sync_session if hasattr(session, "sync_session") else session)


def label(session: Session | Any, obj: Any, verb: str, *, internal: bool = False) -> None:
    """Name the action of the next recorded change of ``obj`` (e.g. ``suspended``); ``internal=True`` also
    makes that event staff-only."""
    target = _sync(session)
    target.info.setdefault(LABELS, {})[id(obj)] = verb
    if internal:
        target.info.setdefault(INTERNAL, set()).add(id(obj))


def set_actor(session: Session | Any, actor: str) -> None:
    _sync(session).info[ACTOR] = actor


def _is_internal_row(obj: Any) -> bool:
    visibility = getattr(obj, "visibility", None)
    return str(getattr(visibility, "value", visibility)) == "internal"


def record(
    session: Session | Any,
    obj: Any,
    verb: str,
    changes: dict[str, Any] | None = None,
    *,
    internal: bool = False,
) -> None:
    """Append an audit event about ``obj`` (action ``<type>.<verb>``) to its chain at the commit.

    For actions that change no audited column (the automatic capture records those that do). ``changes``
    is ``{field: [before, after]}``. ``internal=True``: MSP staff see the event, tenant-level readers never.
    """
    cls = type(obj)
    table = str(getattr(cls, "__tablename__", cls.__name__.lower()))
    # Explicit records work for any row, also one whose changes are not captured (``__audited__ = False``).
    object_type = object_type_of(cls) or (table[:-1] if table.endswith("s") else table)
    _record(
        _sync(session),
        obj,
        verb,
        {k: _jsonable(v) for k, v in (changes or {}).items()},
        internal=internal,
        object_type=object_type,
    )


def _record(
    session: Session,
    obj: Any,
    verb: str,
    changes: dict[str, Any],
    *,
    internal: bool = False,
    object_type: str | None = None,
) -> None:
    object_type = object_type or object_type_of(type(obj))
    if object_type is None:
        return
    chain, tenant_id = _chain_of(obj)
    ident = getattr(obj, "id", None) or getattr(obj, "client_id", None)
    session.info.setdefault(PENDING, []).append(
        PendingEvent(
            chain=chain,
            tenant_id=tenant_id,
            occurred_at=utcnow(),
            actor=str(session.info.get(ACTOR) or "system"),
            action=f"{object_type}.{verb}",
            object_type=object_type,
            object_id=str(ident),
            changes=changes,
            request_id=request_id_var.get(),
            internal=internal or _is_internal_row(obj),
        )
    )


def _captured(
    session: Session, obj: Any, verb: str, changes: dict[str, Any], *, internal: bool = False
) -> None:
    """A change found by the flush capture: applies (and consumes) the service's label and internal mark."""
    labels: dict[int, str] = session.info.get(LABELS, {})
    marked: set[int] = session.info.get(INTERNAL, set())
    key = id(obj)
    verb = labels.pop(key, verb)
    if key in marked:
        marked.discard(key)
        internal = True
    _record(session, obj, verb, changes, internal=internal)


_KEYS: dict[type[Any], tuple[str, ...]] = {}


def _audited_keys(cls: type[Any]) -> tuple[str, ...]:
    """The column attributes recorded for a class (cached: capture runs for every row of a 10,000-row import)."""
    keys = _KEYS.get(cls)
    if keys is None:
        skip = (
            _ALWAYS_EXCLUDED | frozenset(getattr(cls, "__audit_exclude__", frozenset())) | {"tenant_id", "id"}
        )
        keys = tuple(attr.key for attr in inspect(cls).column_attrs if attr.key not in skip)
        _KEYS[cls] = keys
    return keys


@event.listens_for(TenantSession, "after_flush")
def _capture(session: Session, _: UOWTransaction) -> None:
    for obj in session.new:
        if object_type_of(type(obj)) is None:
            continue
        values = inspect(obj).dict
        changes = {
            key: [None, _jsonable(values[key])]
            for key in _audited_keys(type(obj))
            if values.get(key) is not None
        }
        _captured(session, obj, "created", changes)
    for obj in session.dirty:
        if object_type_of(type(obj)) is None:
            continue
        state = inspect(obj)
        # Only attributes with a committed (previous) value can have changed.
        touched = [key for key in _audited_keys(type(obj)) if key in state.committed_state]
        changes = {}
        for key in touched:
            history = state.attrs[key].history
            if history.has_changes():
                before = history.deleted[0] if history.deleted else None
                after = history.added[0] if history.added else None
                if _jsonable(before) != _jsonable(after):
                    changes[key] = [_jsonable(before), _jsonable(after)]
        if changes:
            # A row that was internal before this change stays staff-only in the log.
            was_internal = changes.get("visibility", [None])[0] == "internal"
            _captured(session, obj, "updated", changes, internal=was_internal)
    for obj in session.deleted:
        if object_type_of(type(obj)) is None:
            continue
        state = inspect(obj)
        changes = {key: [_jsonable(state.attrs[key].loaded_value), None] for key in _audited_keys(type(obj))}
        _captured(session, obj, "deleted", changes)


def session_info(settings: Settings) -> dict[str, Any]:
    """What every session of the platform carries for the audit log: the chain's HMAC key."""
    return {
        KEY_INFO: chain_key(settings.resolved_secret_key()),
        # Events appended before MSP_SECRET_KEY was rotated verify with the key of their time.
        PREVIOUS_KEYS_INFO: tuple(chain_key(s) for s in settings.previous_secret_keys()),
    }


def chain_key(secret: bytes) -> bytes:
    """The audit chain's HMAC key, derived from MSP_SECRET_KEY: without it nobody can forge a chain, not even
    someone with write access to the database."""
    return derive_key(secret, KEY_PURPOSE)


def _key(session: Session) -> bytes:
    key = session.info.get(KEY_INFO)
    if not isinstance(key, bytes):
        raise RuntimeError("this session has no audit key: create sessions through db.engine.Database")
    return key


def _verify_keys(session: Session) -> tuple[bytes, ...]:
    """The current key first, then those of earlier MSP_SECRET_KEYs (MSP_SECRET_KEY_PREVIOUS)."""
    previous = session.info.get(PREVIOUS_KEYS_INFO) or ()
    return (_key(session), *previous)


def _canonical(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def event_hash(
    key: bytes, chain: str, seq: int, prev_hash: str, e: PendingEvent | AuditEvent | PlatformAuditEvent
) -> str:
    """HMAC-SHA256 over an event's content, its place in the chain and the previous event's hash."""
    payload = {
        "chain": chain,
        "seq": seq,
        "prev_hash": prev_hash,
        "occurred_at": e.occurred_at.isoformat(),
        "actor": e.actor,
        "action": e.action,
        "object_type": e.object_type,
        "object_id": e.object_id,
        "changes": e.changes,
        "request_id": e.request_id,
        "internal": bool(e.internal),
    }
    return hmac.new(key, _canonical(payload), hashlib.sha256).hexdigest()


def head_mac(key: bytes, chain: str, seq: int, head_hash: str) -> str:
    """The head's own MAC: cutting events off the end and moving the head back needs the key too."""
    return hmac.new(
        key, _canonical({"chain": chain, "seq": seq, "head": head_hash}), hashlib.sha256
    ).hexdigest()


class AuditChainBroken(PlatformError):
    """A chain's head row is gone while its events exist: someone tampered with the log. Appending would
    start the chain over (or hide the damage), so writes to that chain are refused until an operator looks."""

    problem = problem_type(
        "audit-log-broken",
        503,
        "Audit log integrity failure",
        "The tenant's audit log failed its integrity check, so no change can be recorded; changes are "
        "refused until an operator has examined it (`msp audit verify`) and restored it (`msp audit restore`). "
        "Reads still work.",
    )


def _lock_head(session: Session, chain: str, pending: list[PendingEvent]) -> AuditChain:
    """Lock the chain's head, creating it for a new chain. A head that must be created although the chain
    is not new (it has events, or it is the chain of a tenant not created in this transaction: deleting a
    whole log with its head must not let the next change start a fresh, consistent chain) means the log
    was tampered with: nothing is appended until an operator restores it (``msp audit restore``)."""
    dialect = session.get_bind().dialect.name
    values = {"chain": chain, "seq": 0, "head_hash": GENESIS, "events": 0}
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        created = session.execute(pg_insert(AuditChain).values(values).on_conflict_do_nothing())
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        created = session.execute(sqlite_insert(AuditChain).values(values).on_conflict_do_nothing())
    if getattr(created, "rowcount", 0) == 1 and (
        _has_events(session, chain) or _tenant_existed(chain, pending)
    ):
        raise AuditChainBroken(
            f"the head of audit chain {chain} is missing although the chain is not new: the audit log was "
            "tampered with (see `msp audit verify`, then `msp audit restore`); nothing is appended to it"
        )
    head = session.execute(
        select(AuditChain)
        .where(AuditChain.chain == chain)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()
    return head


def _tenant_existed(chain: str, pending: list[PendingEvent]) -> bool:
    """A tenant's log starts with its creation, in the transaction that creates it (every tenant from before
    the audit log was adopted with a sealed head by a migration)."""
    if chain == PLATFORM_CHAIN:
        return False
    return not any(item.action == "tenant.created" and item.object_id == chain for item in pending)


def _events_of(chain: str) -> tuple[Any, tuple[Any, ...]]:
    """The table holding ``chain``'s events and the criteria selecting them: the platform's own table, or the
    chain's tenant's rows of the tenants' table (sessions may be the owner's, unscoped)."""
    if chain == PLATFORM_CHAIN:
        return PlatformAuditEvent, ()
    return AuditEvent, (AuditEvent.tenant_id == uuid.UUID(chain),)


def _has_events(session: Session, chain: str) -> bool:
    model, mine = _events_of(chain)
    return session.execute(select(model.seq).where(*mine).limit(1)).first() is not None


@event.listens_for(TenantSession, "before_commit")
def _append(session: Session) -> None:
    session.flush()  # capture what is still unflushed
    pending: list[PendingEvent] = session.info.pop(PENDING, [])
    session.info.pop(LABELS, None)
    session.info.pop(INTERNAL, None)
    if not pending:
        return
    by_chain: dict[str, list[PendingEvent]] = defaultdict(list)
    for item in pending:
        by_chain[item.chain].append(item)
    key = _key(session)
    # A fixed lock order: two transactions touching the same chains cannot deadlock.
    for chain in sorted(by_chain):
        head = _lock_head(session, chain, by_chain[chain])
        seq, prev = head.seq, head.head_hash
        rows: list[dict[str, Any]] = []
        for item in by_chain[chain]:
            seq += 1
            digest = event_hash(key, chain, seq, prev, item)
            common = {
                "id": new_id(),
                "seq": seq,
                "occurred_at": item.occurred_at,
                "actor": item.actor,
                "action": item.action,
                "object_type": item.object_type,
                "object_id": item.object_id,
                "changes": item.changes,
                "request_id": item.request_id,
                "internal": item.internal,
                "prev_hash": prev,
                "hash": digest,
            }
            if chain != PLATFORM_CHAIN:
                now = utcnow()
                common.update(tenant_id=item.tenant_id, created_at=now, updated_at=now)
            rows.append(common)
            prev = digest
        # Core bulk insert: an import of 10,000 rows appends 10,000 events without building ORM objects.
        model = PlatformAuditEvent if chain == PLATFORM_CHAIN else AuditEvent
        session.execute(insert(cast(Table, model.__table__)), rows)
        head.seq, head.head_hash, head.events = seq, prev, head.events + len(by_chain[chain])
        head.mac = head_mac(key, chain, seq, prev)
    session.flush()


@event.listens_for(TenantSession, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(PENDING, None)
    session.info.pop(LABELS, None)
    session.info.pop(INTERNAL, None)


@dataclass(frozen=True)
class ChainReport:
    chain: str
    events: int
    valid: bool
    first_bad_seq: int | None = None
    problem: str | None = None


def _tenant_of(chain: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(chain)
    except ValueError:
        return None


def verify_chain(session: Session, chain: str) -> ChainReport:
    """Recompute every HMAC of one chain and check its head (needs a session that can read the chain: the
    owner, or the tenant). A chain with events but no head, or a head that its events or its MAC do not
    match, is tampered with. Each HMAC may be of the current key or of a previous MSP_SECRET_KEY: a rotation
    does not break the chain, and forging still needs one of the keys."""
    keys = _verify_keys(session)
    if chain != PLATFORM_CHAIN and _tenant_of(chain) is None:
        return ChainReport(chain, 0, False, None, "a chain head names no tenant")
    model, mine = _events_of(chain)
    stmt = select(model).where(*mine).order_by(model.seq)
    prev, expected_seq, count = GENESIS, 1, 0
    for row in session.execute(stmt.execution_options(yield_per=1000)).scalars():
        count += 1
        if row.seq != expected_seq:
            return ChainReport(chain, count, False, expected_seq, f"event {expected_seq} is missing")
        if row.prev_hash != prev:
            return ChainReport(
                chain, count, False, row.seq, f"event {row.seq} does not follow event {row.seq - 1}"
            )
        if not any(hmac.compare_digest(event_hash(k, chain, row.seq, prev, row), row.hash) for k in keys):
            return ChainReport(chain, count, False, row.seq, f"event {row.seq} was altered")
        prev, expected_seq = row.hash, expected_seq + 1
    last = expected_seq - 1
    head = session.execute(
        select(AuditChain).where(AuditChain.chain == chain).execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if head is None:
        if count:
            return ChainReport(chain, count, False, None, "the chain's head record is missing")
        if chain != PLATFORM_CHAIN and session.get(Tenant, uuid.UUID(chain)) is not None:
            # A tenant's creation is always its first event: a tenant without a log lost it.
            return ChainReport(chain, 0, False, 1, "the tenant's audit log and chain head are missing")
        return ChainReport(chain, 0, True)
    if head.seq > last:
        return ChainReport(chain, count, False, last + 1, "events after the last stored one were removed")
    if head.seq != last or head.head_hash != prev:
        return ChainReport(chain, count, False, head.seq, "the chain's head does not match its last event")
    if not any(
        hmac.compare_digest(head.mac or "", head_mac(k, chain, head.seq, head.head_hash)) for k in keys
    ):
        return ChainReport(chain, count, False, head.seq, "the chain's head record was altered")
    return ChainReport(chain, count, True)


def chains(session: Session) -> list[str]:
    """Every chain to verify: each tenant's (whether or not its head row is still there), every chain that
    has a head, and the platform chain. Needs the owner's (unscoped) session."""
    found = {str(t) for t in session.execute(select(Tenant.id)).scalars()}
    found.update(session.execute(select(AuditChain.chain)).scalars())
    found.add(PLATFORM_CHAIN)
    return sorted(found, key=lambda c: (c == PLATFORM_CHAIN, c))


@dataclass(frozen=True)
class Restoration:
    restored: bool
    message: str
    report: ChainReport


def restore_head(session: Session, chain: str, *, reason: str) -> Restoration:
    """After an operator has examined a chain whose head row is gone (changes to that tenant are refused,
    ``AuditChainBroken``): put a head back at the last stored event and append an ``audit_chain.restored``
    event saying what was found, by whom and why. The damage stays on record: the restoration is itself a
    chained event, and any altered or missing event still fails ``verify_chain``. A chain whose head is
    present is left alone (its changes are not refused; there is nothing to restore)."""
    report = verify_chain(session, chain)
    head = session.get(AuditChain, chain, populate_existing=True)
    if head is not None:
        message = "the chain's head is present; nothing to restore"
        if not report.valid:
            message += f" (the chain still fails verification: {report.problem}; that stays on record)"
        return Restoration(False, message, report)
    model, mine = _events_of(chain)
    last = session.execute(
        select(model.seq, model.hash).where(*mine).order_by(model.seq.desc()).limit(1)
    ).first()
    seq, head_hash = (int(last[0]), str(last[1])) if last is not None else (0, GENESIS)
    events = int(session.execute(select(func.count()).select_from(model).where(*mine)).scalar_one())
    session.add(
        AuditChain(
            chain=chain,
            seq=seq,
            head_hash=head_hash,
            events=events,
            mac=head_mac(_key(session), chain, seq, head_hash),
        )
    )
    session.flush()
    session.info.setdefault(PENDING, []).append(
        PendingEvent(
            chain=chain,
            tenant_id=_tenant_of(chain),
            occurred_at=utcnow(),
            actor=str(session.info.get(ACTOR) or "system"),
            action="audit_chain.restored",
            object_type="audit_chain",
            object_id=chain,
            changes={
                "head": [None, {"seq": seq, "hash": head_hash}],
                "found": [None, report.problem],
                "reason": [None, reason],
            },
            # The tenant's admins read their own log: they see that it was restored, when and why.
            internal=False,
        )
    )
    return Restoration(True, f"head restored at event {seq}; the restoration is event {seq + 1}", report)


__all__ = ["CTX_KEY", "ChainReport", "chains", "label", "record", "restore_head", "set_actor", "verify_chain"]

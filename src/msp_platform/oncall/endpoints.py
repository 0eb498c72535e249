"""/api/v1/oncall: on-call schedules (layers, overrides), the computed schedule, who is on call, gaps,
publishing, and iCalendar feeds (authenticated, and public by feed token for calendar subscriptions).
/api/v1/me/oncall: the caller's own shifts across every schedule and tenant (calendar, list, feed tokens)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, MediaType, Request, Response, delete, get, patch, post, put
from litestar.di import Provide
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody, QueryParameter

from msp_platform.auth.guards import protected
from msp_platform.auth.scopes import Scope
from msp_platform.kit.deps import DEPENDENCIES, Caller, Ctx, Session, TenantId
from msp_platform.kit.errors import FieldError, ValidationFailed
from msp_platform.kit.pagination import Cursor, Limit, Page
from msp_platform.kit.params import require_aware
from msp_platform.kit.patch import sent_fields
from msp_platform.kit.time import utcnow
from msp_platform.kit.uow import provide_db_session
from msp_platform.models.oncall import OncallOverride, OncallSchedule
from msp_platform.oncall import service
from msp_platform.oncall.repository import OncallRepository
from msp_platform.oncall.schemas import (
    FeedTokenCreate,
    FeedTokenOut,
    FeedTokenRevoke,
    FinalScheduleOut,
    GapOut,
    GapsOut,
    LayerOut,
    LayersIn,
    MyShiftOut,
    MyShiftsOut,
    OnCallOut,
    OverrideCreate,
    OverrideOut,
    PersonalFeedTokenCreate,
    PersonalFeedTokenOut,
    PersonOut,
    RestrictionOut,
    ScheduleCreate,
    ScheduleOut,
    ScheduleUpdate,
    ShiftOut,
    TurnLengthOut,
)
from msp_platform.state import services_of

IfMatch = Annotated[
    str | None,
    HeaderParameter(
        name="If-Match", description="The schedule's version (ETag) to guard against lost updates."
    ),
]
From = Annotated[datetime | None, QueryParameter(name="from", description="Window start (default: now).")]
To = Annotated[datetime | None, QueryParameter(name="to", description="Window end (default: from + 7 days).")]
Weeks = Annotated[int, QueryParameter(ge=1, le=service.MAX_WEEKS, description="Weeks ahead to check.")]
CALENDAR = "text/calendar; charset=utf-8"
FEED_PATH = "/api/v1/oncall/feeds"
ME_PATH = "/api/v1/me/oncall"


def person_out(p: service.OnCallPerson, names: dict[str, str]) -> PersonOut:
    return PersonOut(staff_id=p.staff_id, user_id=p.user_id, name=names.get(p.key))


def schedule_out(view: service.ScheduleView) -> ScheduleOut:
    s = view.schedule
    return ScheduleOut(
        id=s.id,
        tenant_id=s.tenant_id,
        name=s.name,
        description=s.description,
        timezone=s.timezone,
        version=s.version,
        published_at=s.published_at,
        published_version=s.published_version,
        layers=[
            LayerOut(
                id=layer.id,
                position=layer.position,
                name=layer.name,
                start_at=layer.start_at,
                end_at=layer.end_at,
                turn_length=TurnLengthOut(count=layer.turn_count, unit=layer.turn_unit),
                timezone=layer.timezone,
                restrictions=[RestrictionOut(**r) for r in layer.restrictions or []],
                participants=[
                    person_out(service.OnCallPerson.of(m), view.names) for m in view.members.get(layer.id, [])
                ],
            )
            for layer in view.layers
        ],
        created_at=s.created_at,
        updated_at=s.updated_at,
    )


def override_out(o: OncallOverride, names: dict[str, str]) -> OverrideOut:
    return OverrideOut(
        id=o.id,
        schedule_id=o.schedule_id,
        person=person_out(service.OnCallPerson.of(o), names),
        start_at=o.start_at,
        end_at=o.end_at,
        reason=o.reason,
        created_by=o.created_by,
        created_at=o.created_at,
    )


def shift_out(s: service.ResolvedShift, names: dict[str, str]) -> ShiftOut:
    return ShiftOut(
        start_at=s.start,
        end_at=s.end,
        person=person_out(s.person, names),
        source=s.source,
        layer_id=s.layer_id,
        layer_name=s.layer_name,
        override_id=s.override_id,
    )


async def _schedule_response(
    session: Session, schedule: OncallSchedule, status_code: int = 200
) -> Response[ScheduleOut]:
    (view,) = await service.views(session, [schedule])
    # media_type must be explicit: the Idempotency-Key capture renders the response before Litestar fills it.
    return Response(
        schedule_out(view),
        status_code=status_code,
        media_type=MediaType.JSON,
        headers={"ETag": f'"{schedule.version}"'},
    )


async def _names(session: Session, shifts: list[service.ResolvedShift]) -> dict[str, str]:
    return await service.person_names(session, [s.person for s in shifts])


def _one_person(staff_id: uuid.UUID | None, user_id: uuid.UUID | None) -> service.OnCallPerson | None:
    if staff_id is not None and user_id is not None:
        raise ValidationFailed(
            "Name one person.", errors=[FieldError("user_id", "set at most one of staff_id or user_id")]
        )
    if staff_id is None and user_id is None:
        return None
    return service.OnCallPerson(staff_id, user_id)


def _secret(request: Request[Any, Any, Any]) -> tuple[bytes, ...]:
    return services_of(request.app).settings.secret_keys()


def _feed_urls(request: Request[Any, Any, Any], token: str) -> tuple[str, str]:
    base = services_of(request.app).settings.issuer.rstrip("/")
    url = f"{base}{FEED_PATH}/{token}/calendar.ics"
    return url, "webcal://" + url.split("://", 1)[1]


def _calendar(request: Request[Any, Any, Any], body: bytes, filename: str) -> Response[bytes]:
    import hashlib

    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    headers = {
        "ETag": etag,
        "Cache-Control": "private, max-age=300",
        "Content-Disposition": f'inline; filename="{filename}"',
    }
    if etag in {t.strip() for t in (request.headers.get("if-none-match") or "").split(",")}:
        return Response(b"", status_code=304, headers=headers, media_type=CALENDAR)
    return Response(body, media_type=CALENDAR, headers=headers)


READ = protected(Scope.oncall_read)
WRITE = protected(Scope.oncall_write)
# The caller's own shifts: any signed-in person, whatever their role's scopes (integrations are refused in
# service.person_of). A plain tenant user in a rotation needs their calendar without reading every schedule.
MINE = protected()


class OncallScheduleController(Controller):
    path = "/api/v1/oncall/schedules"
    tags = ["On-call"]
    dependencies = DEPENDENCIES

    # --- schedules -----------------------------------------------------------------------------------------

    @post(
        "/",
        summary="Create an on-call schedule with its layers",
        description="Layers are listed bottom to top: where layers overlap, the later one wins. Each layer "
        "rotates its participants in order, one turn each; day and week turns hand off at the wall-clock time "
        "of `start_at` in the layer's time zone (DST-safe). Restrictions limit a layer to windows such as "
        "nights or weekends. A new schedule is unpublished: check it with `.../gaps` and publish it.",
        **WRITE,
    )
    async def create(
        self, session: Session, tenant_id: TenantId, data: JSONBody[ScheduleCreate]
    ) -> Response[ScheduleOut]:
        schedule = await service.create_schedule(session, tenant_id, data)
        return await _schedule_response(session, schedule, status_code=201)

    @get("/", summary="List on-call schedules (ordered by name)", **READ)
    async def list_schedules(
        self,
        session: Session,
        ctx: Ctx,
        limit: Limit = None,
        cursor: Cursor = None,
        published: FromQuery[bool | None] = None,
    ) -> Page[ScheduleOut]:
        rows, next_cursor = await OncallRepository(session).page(
            limit=limit, cursor=cursor, published=published
        )
        return Page(
            items=[schedule_out(v) for v in await service.views(session, rows)], next_cursor=next_cursor
        )

    @get("/{schedule_id:uuid}", summary="Get an on-call schedule with its layers", **READ)
    async def get_schedule(
        self, session: Session, ctx: Ctx, schedule_id: FromPath[uuid.UUID]
    ) -> Response[ScheduleOut]:
        return await _schedule_response(session, await service.get_schedule(session, schedule_id))

    @patch(
        "/{schedule_id:uuid}",
        summary="Update a schedule's name, description or time zone (only the fields sent)",
        description="Any change bumps `version` and unpublishes the schedule.",
        **WRITE,
    )
    async def update(
        self,
        session: Session,
        tenant_id: TenantId,
        schedule_id: FromPath[uuid.UUID],
        data: JSONBody[ScheduleUpdate],
        if_match: IfMatch = None,
    ) -> Response[ScheduleOut]:
        schedule = await service.get_schedule(session, schedule_id, for_update=True)
        service.check_version(schedule, if_match)
        await service.update_schedule(session, schedule, sent_fields(data))
        return await _schedule_response(session, schedule)

    @delete(
        "/{schedule_id:uuid}",
        summary="Delete a schedule, its layers and overrides (not while an escalation policy targets it)",
        **WRITE,
    )
    async def remove(
        self,
        session: Session,
        tenant_id: TenantId,
        schedule_id: FromPath[uuid.UUID],
        if_match: IfMatch = None,
    ) -> None:
        schedule = await service.get_schedule(session, schedule_id, for_update=True)
        service.check_version(schedule, if_match)
        await service.delete_schedule(session, schedule)

    @put(
        "/{schedule_id:uuid}/layers",
        summary="Replace the schedule's layer set",
        description="The layers sent become the whole set, bottom to top. Bumps `version` and unpublishes.",
        **WRITE,
    )
    async def replace_layers(
        self,
        session: Session,
        tenant_id: TenantId,
        schedule_id: FromPath[uuid.UUID],
        data: JSONBody[LayersIn],
        if_match: IfMatch = None,
    ) -> Response[ScheduleOut]:
        schedule = await service.get_schedule(session, schedule_id, for_update=True)
        service.check_version(schedule, if_match)
        await service.replace_layers(session, schedule, data.layers)
        return await _schedule_response(session, schedule)

    # --- computed views ------------------------------------------------------------------------------------

    @get(
        "/{schedule_id:uuid}/final",
        summary="The computed schedule: who is on call when, from which layer or override",
        description=f"`from` defaults to now, `to` to `from` + 7 days; at most {service.MAX_WINDOW.days} days.",
        **READ,
    )
    async def final(
        self,
        session: Session,
        ctx: Ctx,
        schedule_id: FromPath[uuid.UUID],
        from_: From = None,
        to: To = None,
    ) -> FinalScheduleOut:
        require_aware(**{"from": from_, "to": to})
        schedule = await service.get_schedule(session, schedule_id)
        start = from_ or utcnow()
        end = to or start + service.DEFAULT_WINDOW
        shifts = await service.final_schedule(session, schedule, start, end)
        names = await _names(session, shifts)
        return FinalScheduleOut(
            schedule_id=schedule.id,
            version=schedule.version,
            published_at=schedule.published_at,
            window_start=start,
            window_end=end,
            shifts=[shift_out(s, names) for s in shifts],
        )

    @get("/{schedule_id:uuid}/on-call", summary="Who is on call at a time (default: now)", **READ)
    async def on_call(
        self,
        session: Session,
        ctx: Ctx,
        schedule_id: FromPath[uuid.UUID],
        at: FromQuery[datetime | None] = None,
    ) -> OnCallOut:
        require_aware(at=at)
        schedule = await service.get_schedule(session, schedule_id)
        when = at or utcnow()
        shifts = await service.on_call(session, schedule, when)
        names = await _names(session, shifts)
        return OnCallOut(
            schedule_id=schedule.id,
            version=schedule.version,
            published_at=schedule.published_at,
            at=when,
            on_call=[shift_out(s, names) for s in shifts],
        )

    @get(
        "/{schedule_id:uuid}/gaps",
        summary="Periods with nobody on call over the next N weeks",
        **READ,
    )
    async def gaps(
        self,
        session: Session,
        ctx: Ctx,
        schedule_id: FromPath[uuid.UUID],
        weeks: Weeks = service.DEFAULT_PUBLISH_WEEKS,
        from_: From = None,
    ) -> GapsOut:
        require_aware(**{"from": from_})
        schedule = await service.get_schedule(session, schedule_id)
        report = await service.coverage_gaps(session, schedule, weeks=weeks, start=from_)
        names = await service.person_names(session, list(report.unreachable))
        return GapsOut(
            schedule_id=schedule.id,
            version=schedule.version,
            window_start=report.start,
            window_end=report.end,
            weeks=report.weeks,
            covered=not report.gaps,
            total_gap_hours=round(sum(service.gap_hours(g) for g in report.gaps), 2),
            gaps=[GapOut(start_at=g.start, end_at=g.end, hours=service.gap_hours(g)) for g in report.gaps],
            unreachable=[person_out(p, names) for p in report.unreachable],
        )

    @post(
        "/{schedule_id:uuid}/publish",
        status_code=200,
        summary="Publish the schedule once the gap check passes",
        description="Checks the next `weeks` weeks (default 4) from now; any period with nobody on call is a "
        "409 `oncall-coverage-gaps` problem listing the gaps, and the schedule stays unpublished.",
        **WRITE,
    )
    async def publish(
        self,
        session: Session,
        tenant_id: TenantId,
        schedule_id: FromPath[uuid.UUID],
        weeks: Weeks = service.DEFAULT_PUBLISH_WEEKS,
        if_match: IfMatch = None,
    ) -> Response[ScheduleOut]:
        schedule = await service.get_schedule(session, schedule_id, for_update=True)
        service.check_version(schedule, if_match)
        await service.publish(session, schedule, weeks=weeks)
        return await _schedule_response(session, schedule)

    # --- overrides -----------------------------------------------------------------------------------------

    @post(
        "/{schedule_id:uuid}/overrides",
        summary="Add an override (a vacation, a swap): this person is on call in the period",
        description="Overrides win over every layer; where overrides of different people overlap the one "
        "created last wins. One person's overrides may not overlap. Bumps `version` and unpublishes.",
        **WRITE,
    )
    async def add_override(
        self,
        session: Session,
        tenant_id: TenantId,
        principal: Caller,
        schedule_id: FromPath[uuid.UUID],
        data: JSONBody[OverrideCreate],
    ) -> OverrideOut:
        schedule = await service.get_schedule(session, schedule_id, for_update=True)
        override = await service.add_override(session, schedule, data, created_by=principal.key)
        names = await service.person_names(session, [service.OnCallPerson.of(override)])
        return override_out(override, names)

    @get("/{schedule_id:uuid}/overrides", summary="List a schedule's overrides (by start)", **READ)
    async def list_overrides(
        self,
        session: Session,
        ctx: Ctx,
        schedule_id: FromPath[uuid.UUID],
        limit: Limit = None,
        cursor: Cursor = None,
        from_: Annotated[
            datetime | None, QueryParameter(name="from", description="Only overrides ending after this.")
        ] = None,
        to: Annotated[
            datetime | None, QueryParameter(name="to", description="Only overrides starting before this.")
        ] = None,
        staff_id: FromQuery[uuid.UUID | None] = None,
        user_id: FromQuery[uuid.UUID | None] = None,
    ) -> Page[OverrideOut]:
        require_aware(**{"from": from_, "to": to})
        schedule = await service.get_schedule(session, schedule_id)
        rows, next_cursor = await OncallRepository(session).page_overrides(
            schedule.id,
            limit=limit,
            cursor=cursor,
            start=from_,
            end=to,
            staff_id=staff_id,
            user_id=user_id,
        )
        names = await service.person_names(session, [service.OnCallPerson.of(o) for o in rows])
        return Page(items=[override_out(o, names) for o in rows], next_cursor=next_cursor)

    @get("/{schedule_id:uuid}/overrides/{override_id:uuid}", summary="Get an override", **READ)
    async def get_override(
        self, session: Session, ctx: Ctx, schedule_id: FromPath[uuid.UUID], override_id: FromPath[uuid.UUID]
    ) -> OverrideOut:
        schedule = await service.get_schedule(session, schedule_id)
        override = await service.get_override(session, schedule, override_id)
        return override_out(
            override, await service.person_names(session, [service.OnCallPerson.of(override)])
        )

    @delete(
        "/{schedule_id:uuid}/overrides/{override_id:uuid}",
        summary="Remove an override (bumps `version` and unpublishes)",
        **WRITE,
    )
    async def remove_override(
        self,
        session: Session,
        tenant_id: TenantId,
        schedule_id: FromPath[uuid.UUID],
        override_id: FromPath[uuid.UUID],
    ) -> None:
        schedule = await service.get_schedule(session, schedule_id, for_update=True)
        await service.delete_override(
            session, schedule, await service.get_override(session, schedule, override_id)
        )

    # --- calendars -----------------------------------------------------------------------------------------

    @get(
        "/{schedule_id:uuid}/calendar.ics",
        summary="iCalendar of the schedule, or of one person's shifts (staff_id or user_id)",
        description=f"From {service.FEED_DAYS_BEHIND} days ago to {service.FEED_WEEKS_AHEAD} weeks ahead. "
        "Calendar apps cannot send an access token: subscribe them to a feed-token URL instead.",
        media_type=CALENDAR,
        **READ,
    )
    async def calendar(
        self,
        request: Request[Any, Any, Any],
        session: Session,
        ctx: Ctx,
        schedule_id: FromPath[uuid.UUID],
        staff_id: FromQuery[uuid.UUID | None] = None,
        user_id: FromQuery[uuid.UUID | None] = None,
    ) -> Response[bytes]:
        schedule = await service.get_schedule(session, schedule_id)
        body = await service.render_feed(session, schedule, _one_person(staff_id, user_id))
        return _calendar(request, body, "oncall.ics")

    @post(
        "/{schedule_id:uuid}/feed-tokens",
        summary="Issue a calendar subscription URL for the schedule or one person (shown once)",
        description="The URL's token is the credential (calendar apps cannot do OAuth): treat it like a "
        "password. It stops working when it expires, is revoked, the schedule is deleted, or the issuer loses "
        "access to the tenant.",
        **READ,
    )
    async def issue_feed_token(
        self,
        request: Request[Any, Any, Any],
        session: Session,
        tenant_id: TenantId,
        principal: Caller,
        schedule_id: FromPath[uuid.UUID],
        data: JSONBody[FeedTokenCreate],
    ) -> FeedTokenOut:
        schedule = await service.get_schedule(session, schedule_id)
        issued = await service.issue_feed_token(
            session,
            _secret(request),
            schedule,
            principal,
            person=data.person,
            expires_in_days=data.expires_in_days,
        )
        url, webcal_url = _feed_urls(request, issued.token)
        names = await service.person_names(session, [issued.person] if issued.person else [])
        return FeedTokenOut(
            token=issued.token,
            url=url,
            webcal_url=webcal_url,
            schedule_id=schedule.id,
            person=person_out(issued.person, names) if issued.person else None,
            issued_at=issued.issued_at,
            expires_at=issued.expires_at,
        )

    @post(
        "/{schedule_id:uuid}/feed-tokens/revoke",
        status_code=204,
        summary="Revoke one feed token of the schedule (present the token)",
        **READ,
    )
    async def revoke_feed_token(
        self,
        request: Request[Any, Any, Any],
        session: Session,
        tenant_id: TenantId,
        schedule_id: FromPath[uuid.UUID],
        data: JSONBody[FeedTokenRevoke],
    ) -> None:
        schedule = await service.get_schedule(session, schedule_id)
        await service.revoke_feed_token(session, _secret(request), schedule, data.token)

    @delete(
        "/{schedule_id:uuid}/feed-tokens",
        summary="Revoke every feed token issued so far for the schedule",
        **WRITE,
    )
    async def revoke_all_feed_tokens(
        self, session: Session, tenant_id: TenantId, schedule_id: FromPath[uuid.UUID]
    ) -> None:
        await service.revoke_all_feed_tokens(session, await service.get_schedule(session, schedule_id))


class OncallFeedController(Controller):
    """The public end of feed tokens: calendar apps fetch these URLs without any other credential."""

    path = FEED_PATH
    tags = ["On-call"]
    dependencies = {"session": Provide(provide_db_session)}

    @get(
        "/{token:str}/calendar.ics",
        opt={"public": True, "idempotent": False},
        summary="Subscribed calendar feed (public: the token is the credential)",
        description="A schedule's feed, one person's shifts in a schedule, or a person's own shifts across "
        f"every schedule (issued at `{ME_PATH}/feed-tokens`). An unknown, expired or revoked token is a 404.",
        media_type=CALENDAR,
    )
    async def feed(
        self, request: Request[Any, Any, Any], session: Session, token: FromPath[str]
    ) -> Response[bytes]:
        opened = await service.open_feed(session, _secret(request), token)
        return _calendar(request, opened.body, "oncall.ics")


class MyOncallController(Controller):
    """The caller's own on-call shifts, across every schedule and every tenant they can see: MSP staff
    over all the tenants their role and grants reach (the MSP-Tenant header is not needed and does not
    narrow it), tenant users over their own tenant. Only schedules in force count (those with a published
    version; see ``service.personal_shifts``)."""

    path = ME_PATH
    tags = ["On-call"]
    dependencies = DEPENDENCIES

    @get(
        "/calendar.ics",
        summary="iCalendar of my on-call shifts across every schedule and tenant",
        description=f"From {service.FEED_DAYS_BEHIND} days ago to {service.FEED_WEEKS_AHEAD} weeks ahead, over "
        "every published schedule (a schedule edited since it was published counts with its published "
        "version; never-published drafts are left out). Each event names the schedule and the tenant. "
        f"Calendar apps cannot send an access token: subscribe them to a `{ME_PATH}/feed-tokens` URL.",
        media_type=CALENDAR,
        **MINE,
    )
    async def calendar(
        self, request: Request[Any, Any, Any], session: Session, principal: Caller
    ) -> Response[bytes]:
        person = service.person_of(principal)
        tenants = await service.bind_personal_scope(session, person, principal.tenant_id)
        return _calendar(
            request, await service.render_personal_feed(session, person, tenants), "my-oncall.ics"
        )

    @get(
        "/shifts",
        summary="My on-call shifts in a window, across every schedule and tenant",
        description="`from` defaults to now, `to` to `from` + 7 days; at most "
        f"{service.MAX_PERSONAL_WINDOW.days} days. The same schedules as `calendar.ics`, in time order.",
        **MINE,
    )
    async def shifts(
        self, session: Session, principal: Caller, from_: From = None, to: To = None
    ) -> MyShiftsOut:
        require_aware(**{"from": from_, "to": to})
        person = service.person_of(principal)
        start = from_ or utcnow()
        end = to or start + service.DEFAULT_WINDOW
        service.check_personal_window(start, end)
        tenants = await service.bind_personal_scope(session, person, principal.tenant_id)
        found = await service.personal_shifts(session, person, tenants, start, end)
        names = await service.person_names(session, [person])
        return MyShiftsOut(
            person=person_out(person, names),
            window_start=start,
            window_end=end,
            shifts=[
                MyShiftOut(
                    start_at=p.start,
                    end_at=p.end,
                    tenant_id=p.tenant.id,
                    tenant_name=p.tenant.name,
                    schedule_id=p.schedule.id,
                    schedule_name=p.schedule.name,
                    schedule_version=p.version,
                    source=p.source,
                    layer_name=p.layer_name,
                )
                for p in found.shifts
            ],
        )

    @post(
        "/feed-tokens",
        summary="Issue a subscription URL for my on-call calendar (shown once)",
        description="The URL's token is the credential (calendar apps cannot do OAuth): treat it like a "
        "password. It stops working when it expires, is revoked, or you are deactivated or lose access to "
        "every tenant; losing access to one tenant drops that tenant's shifts from it.",
        **MINE,
    )
    async def issue_feed_token(
        self,
        request: Request[Any, Any, Any],
        session: Session,
        principal: Caller,
        data: JSONBody[PersonalFeedTokenCreate],
    ) -> PersonalFeedTokenOut:
        issued = await service.issue_personal_feed_token(
            _secret(request), principal, expires_in_days=data.expires_in_days
        )
        assert issued.person is not None
        url, webcal_url = _feed_urls(request, issued.token)
        names = await service.person_names(session, [issued.person])
        return PersonalFeedTokenOut(
            token=issued.token,
            url=url,
            webcal_url=webcal_url,
            person=person_out(issued.person, names),
            issued_at=issued.issued_at,
            expires_at=issued.expires_at,
        )

    @post(
        "/feed-tokens/revoke",
        status_code=204,
        summary="Revoke one of my calendar subscription URLs (present its token)",
        **MINE,
    )
    async def revoke_feed_token(
        self,
        request: Request[Any, Any, Any],
        session: Session,
        principal: Caller,
        data: JSONBody[FeedTokenRevoke],
    ) -> None:
        await service.revoke_personal_feed_token(session, _secret(request), principal, data.token)

    @delete("/feed-tokens", summary="Revoke every calendar subscription URL I was issued so far", **MINE)
    async def revoke_all_feed_tokens(self, session: Session, principal: Caller) -> None:
        await service.revoke_all_personal_feed_tokens(session, principal)

"""Optimistic concurrency for rows without a version column: an ETag derived from the row's id and
``updated_at``, and ``If-Match`` on PATCH answering 412 when the row changed since the caller read it.

The row is locked (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite writers are serialised already) before the
comparison, so two PATCHes sent with the same ETag cannot both pass: the second sees the first's change.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Protocol

from litestar.params import HeaderParameter
from sqlalchemy.ext.asyncio import AsyncSession

from msp_platform.kit.errors import PlatformError, problem_type

PRECONDITION_FAILED = problem_type(
    "precondition-failed",
    412,
    "The resource changed",
    "If-Match named a version that is no longer current; reload the resource and retry.",
)


class PreconditionFailed(PlatformError):
    problem = PRECONDITION_FAILED


IfMatch = Annotated[
    str | None,
    HeaderParameter(
        name="If-Match",
        description="The ETag of a previous GET: the change is refused with 412 if the resource changed since "
        "(no lost updates). Without it the change applies to whatever is stored.",
    ),
]


class Versioned(Protocol):
    id: Any
    updated_at: Any


def etag_of(row: Versioned) -> str:
    digest = hashlib.sha256(f"{row.id}|{row.updated_at.isoformat()}".encode()).hexdigest()[:24]
    return f'"{digest}"'


def headers_of(row: Versioned) -> dict[str, str]:
    return {"ETag": etag_of(row)}


async def check_if_match(session: AsyncSession, row: Versioned, if_match: str | None, what: str) -> None:
    """Refuse (412) a change to ``row`` when ``If-Match`` names another version; ``*`` matches any."""
    if if_match is None:
        return
    await session.refresh(row, with_for_update=True)
    wanted = {tag.strip().removeprefix("W/") for tag in if_match.split(",")}
    if "*" in wanted or etag_of(row) in wanted:
        return
    raise PreconditionFailed(
        f"{what} changed since you read it (its ETag is now {etag_of(row)}); reload it and retry.",
        headers=headers_of(row),
    )

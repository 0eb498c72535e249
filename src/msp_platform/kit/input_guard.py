"""Refuse NUL characters in paths, query strings and JSON bodies before any handler sees them.

PostgreSQL cannot store U+0000 in text (the statement fails deep inside a service) and SQLite stores it
silently; neither is what a caller meant. One check at the edge gives every endpoint the same 400."""

from __future__ import annotations

import re
from typing import Any

from litestar import Request

from msp_platform.kit.errors import BadRequest

# A JSON string escape of U+0000 that is not itself an escaped backslash followed by "u0000".
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000", re.IGNORECASE)
_QUERY_NUL = re.compile(rb"%00|\x00")


async def refuse_nul_characters(request: Request[Any, Any, Any]) -> None:
    """before_request hook."""
    if "\x00" in request.scope.get("path", ""):
        raise BadRequest("The path contains a NUL character.")
    if _QUERY_NUL.search(request.scope.get("query_string", b"")):
        raise BadRequest("A query parameter contains a NUL character (%00).")
    if request.method in {"POST", "PUT", "PATCH"} and "json" in request.headers.get("content-type", ""):
        body = await request.body()
        if b"\x00" in body or _JSON_NUL.search(body):
            raise BadRequest("The request body contains a NUL character (\\u0000) in a string.")

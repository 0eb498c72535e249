"""Human-readable documentation of every problem ``type`` URI the API answers with."""

from __future__ import annotations

from typing import Any

from litestar import Controller, get
from litestar.params import FromPath

from msp_platform.kit.errors import NotFound
from msp_platform.kit.problems import problem_catalog


class ProblemDocsController(Controller):
    path = "/problems"
    tags = ["Errors"]
    opt = {"public": True, "idempotent": False}

    @get("/", summary="Every problem type the API can answer with")
    async def catalog(self) -> list[dict[str, Any]]:
        return problem_catalog()

    @get("/{slug:str}", summary="One problem type")
    async def one(self, slug: FromPath[str]) -> dict[str, Any]:
        for entry in problem_catalog():
            if entry["type"].rsplit("/", 1)[-1] == slug:
                return entry
        raise NotFound(f"No problem type {slug!r}.")

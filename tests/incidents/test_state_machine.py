"""The transition table, tested exhaustively: every (from, to) pair through the API."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from tests.support.desk import Desk

from msp_platform.incidents.state import TRANSITIONS
from msp_platform.models.incident import IncidentState

STATES = [s.value for s in IncidentState]

EXPECTED = {
    "new": {"assigned", "in_progress", "on_hold", "resolved", "cancelled"},
    "assigned": {"new", "in_progress", "on_hold", "resolved", "cancelled"},
    "in_progress": {"assigned", "on_hold", "resolved", "cancelled"},
    "on_hold": {"assigned", "in_progress", "resolved", "cancelled"},
    "resolved": {"in_progress", "closed"},
    "closed": set(),
    "cancelled": set(),
}

# How to bring a fresh incident into each state.
PATHS = {
    "new": [],
    "assigned": [],  # assigning a group already moved it there
    "in_progress": ["in_progress"],
    "on_hold": ["on_hold"],
    "resolved": ["resolved"],
    "closed": ["resolved", "closed"],
    "cancelled": ["cancelled"],
}


def test_the_table_is_the_documented_one() -> None:
    assert {k.value: {s.value for s in v} for k, v in TRANSITIONS.items()} == EXPECTED


async def _incident_in(desk: Desk, state: str) -> dict[str, Any]:
    # Assigned to a group so "assigned" is reachable from every state.
    incident = await desk.raise_incident(headers=await desk.as_agent())
    await desk.client.patch(
        f"/api/v1/incidents/{incident['id']}",
        json={"assignment_group": "L1 Service Desk"},
        headers=await desk.as_agent(),
    )
    if state != "assigned":
        # The PATCH above moved it to assigned; step back to new for paths that start there.
        back = await desk.move(incident, "new")
        assert back.status_code == 200, back.text
    for step in PATHS[state]:
        moved = await desk.move(incident, step)
        assert moved.status_code == 200, (step, moved.text)
    return incident


@pytest.mark.parametrize(("source", "target"), list(itertools.product(STATES, STATES)))
async def test_transition(desk: Desk, source: str, target: str) -> None:
    incident = await _incident_in(desk, source)
    current = (
        await desk.client.get(f"/api/v1/incidents/{incident['id']}", headers=await desk.as_agent())
    ).json()
    assert current["state"] == source
    response = await desk.move(incident, target)
    if target in EXPECTED[source]:
        assert response.status_code == 200, response.text
        assert response.json()["state"] == target
        history = (
            await desk.client.get(f"/api/v1/incidents/{incident['id']}/events", headers=await desk.as_agent())
        ).json()
        last_change = [e for e in history if e["type"] == "state_changed"][-1]
        assert (last_change["data"]["from"], last_change["data"]["to"]) == (source, target)
    else:
        assert response.status_code == 409, response.text
        body = response.json()
        assert body["type"] == "/problems/invalid-transition"
        assert set(body["allowed"]) == EXPECTED[source]
        after = (
            await desk.client.get(f"/api/v1/incidents/{incident['id']}", headers=await desk.as_agent())
        ).json()
        assert after["state"] == source
        assert after["version"] == current["version"], "a refused transition changed the incident"

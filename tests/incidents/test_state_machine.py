"""The transition table, tested exhaustively: every (from, to) pair through the API, as staff; and what
tenant principals may do with their incidents."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from tests.support.desk import Desk

from msp_platform.incidents.service import TENANT_TRANSITIONS
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


async def _incident_in(desk: Desk, state: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    # Assigned to a group so "assigned" is reachable from every state.
    incident = await desk.raise_incident(headers=headers or await desk.as_agent())
    group = await desk.group()
    assigned = await desk.client.patch(
        f"/api/v1/incidents/{incident['id']}",
        json={"assignment_group_id": group["id"]},
        headers=await desk.as_agent(),
    )
    assert assigned.status_code == 200, assigned.text
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
        history = await desk.history(incident)
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


# What tenant principals may do: withdraw an incident nobody works on yet, confirm or reject a resolution.
TENANT_ALLOWED = {
    ("new", "cancelled"),
    ("assigned", "cancelled"),
    ("resolved", "closed"),
    ("resolved", "in_progress"),
}
LEGAL = [(source, target) for source, targets in EXPECTED.items() for target in sorted(targets)]


def test_the_tenant_rules_are_the_documented_ones() -> None:
    assert {(a.value, b.value) for a, b in TENANT_TRANSITIONS} == TENANT_ALLOWED
    assert set(LEGAL) >= TENANT_ALLOWED


@pytest.mark.parametrize("role", ["tenant_user", "tenant_admin"])
@pytest.mark.parametrize(("source", "target"), LEGAL)
async def test_tenant_transition(desk: Desk, role: str, source: str, target: str) -> None:
    """Every legal move, by the incident's own caller (a tenant user) and by a tenant admin: the tenant's
    moves succeed, every other one is a 403 that changes nothing."""
    incident = await _incident_in(desk, source, headers=await desk.as_user())
    headers = await desk.as_user() if role == "tenant_user" else await desk.as_admin()
    before = (await desk.client.get(f"/api/v1/incidents/{incident['id']}", headers=headers)).json()
    assert before["state"] == source
    response = await desk.move(incident, target, headers=headers)
    if (source, target) in TENANT_ALLOWED:
        assert response.status_code == 200, response.text
        assert response.json()["state"] == target
    else:
        assert response.status_code == 403, response.text
        after = (await desk.client.get(f"/api/v1/incidents/{incident['id']}", headers=headers)).json()
        assert (after["state"], after["version"]) == (source, before["version"])


async def test_tenant_users_move_only_their_own_incidents(desk: Desk) -> None:
    theirs = await desk.raise_incident(await desk.as_admin())
    response = await desk.move(theirs, "cancelled", headers=await desk.as_user())
    assert response.status_code == 404
    illegal = await desk.move(
        await desk.raise_incident(await desk.as_user()), "closed", headers=await desk.as_user()
    )
    assert illegal.status_code == 409, "an illegal move is a 409 whoever asks"

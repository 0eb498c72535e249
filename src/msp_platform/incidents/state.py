"""The incident state machine: the only transitions allowed, and what each one requires."""

from __future__ import annotations

from msp_platform.models.incident import IncidentState as S

TRANSITIONS: dict[S, frozenset[S]] = {
    S.new: frozenset({S.assigned, S.in_progress, S.on_hold, S.resolved, S.cancelled}),
    S.assigned: frozenset({S.new, S.in_progress, S.on_hold, S.resolved, S.cancelled}),
    S.in_progress: frozenset({S.assigned, S.on_hold, S.resolved, S.cancelled}),
    S.on_hold: frozenset({S.assigned, S.in_progress, S.resolved, S.cancelled}),
    # Reopening goes back to work; closing confirms the resolution.
    S.resolved: frozenset({S.in_progress, S.closed}),
    S.closed: frozenset(),
    S.cancelled: frozenset(),
}

OPEN_STATES = frozenset({S.new, S.assigned, S.in_progress, S.on_hold})
FINAL_STATES = frozenset({S.closed, S.cancelled})


def allowed(current: S) -> frozenset[S]:
    return TRANSITIONS[current]


def can(current: S, target: S) -> bool:
    return target in TRANSITIONS[current]


def is_reopen(current: S, target: S) -> bool:
    return current is S.resolved and target is S.in_progress

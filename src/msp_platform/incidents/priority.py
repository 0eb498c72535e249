"""Impact x urgency -> priority through a tenant's versioned matrix (P1 highest .. P5 lowest)."""

from __future__ import annotations

from dataclasses import dataclass

from msp_platform.kit.errors import FieldError

# ITIL's usual 3x3: impact (1 = organisation-wide .. 3 = one person) by urgency (1 = now .. 3 = can wait).
DEFAULT_CELLS: dict[str, dict[str, int]] = {
    "1": {"1": 1, "2": 2, "3": 3},
    "2": {"1": 2, "2": 3, "3": 4},
    "3": {"1": 3, "2": 4, "3": 5},
}
DEFAULT_PATIENT_CARE_RAISE = 1
DEFAULT_PATIENT_CARE_FLOOR = 2


@dataclass(frozen=True)
class Matrix:
    version: int
    cells: dict[str, dict[str, int]]
    patient_care_raise: int = DEFAULT_PATIENT_CARE_RAISE
    patient_care_floor: int = DEFAULT_PATIENT_CARE_FLOOR
    vip_raise: int = 0

    def priority(self, impact: int, urgency: int, *, patient_care: bool = False, vip: bool = False) -> int:
        value = self.cells[str(impact)][str(urgency)]
        if patient_care:
            # Patient care moves the incident up, and never leaves it below the floor (e.g. at least P2).
            value = min(value - self.patient_care_raise, self.patient_care_floor)
        if vip:
            value -= self.vip_raise
        return max(1, min(5, value))


DEFAULT_MATRIX = Matrix(version=0, cells=DEFAULT_CELLS)


def matrix_errors(
    cells: object, patient_care_raise: int, patient_care_floor: int, vip_raise: int
) -> list[FieldError]:
    errors: list[FieldError] = []
    if not isinstance(cells, dict) or set(cells) != {"1", "2", "3"}:
        errors.append(FieldError("cells", 'must map impacts "1", "2", "3" to rows'))
    else:
        for impact, row in cells.items():
            if not isinstance(row, dict) or set(row) != {"1", "2", "3"}:
                errors.append(FieldError(f"cells.{impact}", 'must map urgencies "1", "2", "3" to priorities'))
                continue
            for urgency, value in row.items():
                if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 5:
                    errors.append(FieldError(f"cells.{impact}.{urgency}", "priority must be 1..5"))
    if not 0 <= patient_care_raise <= 4:
        errors.append(FieldError("patient_care_raise", "must be 0..4 levels"))
    if not 1 <= patient_care_floor <= 5:
        errors.append(FieldError("patient_care_floor", "must be a priority 1..5"))
    if not 0 <= vip_raise <= 4:
        errors.append(FieldError("vip_raise", "must be 0..4 levels"))
    return errors


def label(priority: int) -> str:
    return f"P{priority}"

"""Capturing what a command prints through its ``echo`` callback."""

from __future__ import annotations


class Captured:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

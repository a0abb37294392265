"""A catalog figure: a value together with where it came from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Figure:
    """One number from a catalog, with its source.

    `verified` is False for figures the catalog marks as unverified, derived or estimated;
    `note` says how (e.g. "sparse peak halved").
    """

    value: float
    source: str
    verified: bool = True
    note: str = ""

    def cite(self) -> str:
        flag = "" if self.verified else " [unverified]"
        note = f"; {self.note}" if self.note else ""
        return f"{self.source}{note}{flag}"

"""Domain vocabulary shared by every package (DESIGN.md §4.3)."""

from __future__ import annotations

#: Alert severity levels, most severe first.
SEVERITIES: tuple[str, ...] = ("critical", "high", "medium", "low", "info")

#: 1 = most severe; matches the database's ``noc_severity_rank``.
SEVERITY_RANK: dict[str, int] = {s: i + 1 for i, s in enumerate(SEVERITIES)}

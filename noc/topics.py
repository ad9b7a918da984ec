"""MQTT topic filters (``+`` one level, a trailing ``#`` that level and everything below)."""

from __future__ import annotations

import re


def filter_matcher(filters: tuple[str, ...]) -> re.Pattern[str] | None:
    """One regex matching every topic that any of the MQTT topic ``filters`` matches (None for
    no filters). ``+`` is one level, a trailing ``#`` is that level and everything below."""
    if not filters:
        return None
    patterns = []
    for f in filters:
        levels = f.split("/")
        tail = ""
        if levels[-1] == "#":
            levels.pop()
            tail = "(?:/.*)?" if levels else ".*"
        body = "/".join("[^/]*" if level == "+" else re.escape(level) for level in levels)
        patterns.append(body + tail)
    return re.compile("^(?:" + "|".join(patterns) + ")$")

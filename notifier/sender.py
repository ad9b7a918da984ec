"""Delivery through Apprise: one URL per recipient (``json://``, ``mailto://``, SMS gateways...)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import apprise


@dataclass(frozen=True)
class SendResult:
    """The outcome of one attempt. ``permanent``: retrying cannot help (e.g. a bad URL)."""

    ok: bool
    error: str | None = None
    permanent: bool = False


class Sender(Protocol):
    """Delivers one notification. Must not raise: failures are results."""

    def send(self, url: str, title: str, body: str) -> SendResult: ...


class AppriseSender:
    """Sends with a fresh :class:`apprise.Apprise` per notification (no shared state)."""

    def send(self, url: str, title: str, body: str) -> SendResult:
        notifier = apprise.Apprise()
        try:
            if not notifier.add(url):
                return SendResult(False, "invalid Apprise URL for this recipient", permanent=True)
            result = notifier.notify(body=body, title=title)
        except Exception as exc:  # a plugin bug must not kill the dispatcher
            return SendResult(False, f"{type(exc).__name__}: {exc}")
        if result:
            return SendResult(True)
        return SendResult(False, _error_text(result))


def _error_text(result: object) -> str:
    """The last warning or error Apprise logged for the call (Apprise >= 2 keeps them)."""
    logs = getattr(result, "logs", None)
    if callable(logs):
        messages = [str(entry.message) for entry in logs() if _is_warning(entry)]
        if messages:
            return messages[-1]
    return "delivery failed (no detail from Apprise)"


def _is_warning(entry: object) -> bool:
    level = getattr(entry, "level", None)
    if isinstance(level, int):
        return level >= logging.WARNING
    return isinstance(level, str) and level.upper() in {"WARNING", "ERROR", "CRITICAL"}

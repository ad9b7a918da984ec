"""Errors of the notifier and the device-command publisher."""

from __future__ import annotations

from noc.errors import NocError


class NotifierError(NocError):
    """Root of notifier errors."""


class CommandPublishError(NotifierError):
    """A device command could not be published (broker unreachable or no PUBACK in time)."""

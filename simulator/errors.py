"""Errors raised by the device simulator; each is one line the user can act on."""

from __future__ import annotations

from noc.errors import NocError


class SimulatorError(NocError):
    """Root of simulator errors."""


class ScenarioError(SimulatorError, ValueError):
    """A scenario or publisher parameter is out of range; the message names it."""


class PublishError(SimulatorError):
    """The broker cannot be reached, refused the connection, or stayed away too long."""

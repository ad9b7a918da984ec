"""Errors of the pure stream logic."""

from __future__ import annotations

from noc.errors import NocError


class OperatorError(NocError):
    """Root of errors raised by operators."""


class ConfigError(OperatorError, ValueError):
    """An operator's configuration is invalid; the message says what to fix."""

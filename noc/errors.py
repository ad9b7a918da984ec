"""Errors shared by every NOC Stream package.

Each package has its own ``errors.py`` whose root derives from :class:`NocError`, so the CLI can
turn any user-fixable failure into one line without a traceback.
"""

from __future__ import annotations


class NocError(Exception):
    """Root of every error NOC Stream raises on purpose."""


class SettingsError(NocError, ValueError):
    """A ``NOC_*`` setting is missing or invalid; the message names the variable."""

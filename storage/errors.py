"""Errors raised by the storage layer; driver errors are wrapped with ``raise ... from``."""

from __future__ import annotations

from noc.errors import NocError


class StorageError(NocError):
    """Root of storage errors."""


class DatabaseUnavailable(StorageError):
    """The database cannot be reached (down, restarting, wrong URL). Retrying may succeed."""


class MigrationError(StorageError):
    """A schema migration failed or the schema is in an unexpected state."""


class AlertTransitionError(StorageError):
    """An alert lifecycle transition is not allowed from the alert's current status."""


class NotFound(StorageError):
    """The requested row does not exist (or belongs to another tenant)."""

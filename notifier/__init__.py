"""Notifications: the outbox dispatcher (Apprise, rate limits, escalation) and device commands.

Run it with ``noc notify``. Storage owns the SQL (``storage.outbox``, ``storage.alerts``);
this package owns the process, the delivery and its metrics.
"""

from __future__ import annotations

from notifier.dispatcher import (
    Dispatcher,
    DispatcherConfig,
    TickReport,
    backoff,
    config_from_settings,
)
from notifier.errors import CommandPublishError, NotifierError
from notifier.mqtt_commands import command_topic, publish_command
from notifier.sender import AppriseSender, Sender, SendResult

__all__ = [
    "AppriseSender",
    "CommandPublishError",
    "Dispatcher",
    "DispatcherConfig",
    "NotifierError",
    "SendResult",
    "Sender",
    "TickReport",
    "backoff",
    "command_topic",
    "config_from_settings",
    "publish_command",
]

"""Prometheus metrics of the notifier (registered once per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SENT = Counter(
    "noc_notifications_sent", "Notifications delivered, by channel and kind", ["channel", "kind"]
)
FAILED = Counter(
    "noc_notifications_failed",
    "Failed delivery attempts, by channel and outcome (retry or given up)",
    ["channel", "outcome"],
)
SUPPRESSED = Counter(
    "noc_notifications_suppressed",
    "Notifications held back by a recipient's rate limit (reported later in a summary)",
    ["channel"],
)
ESCALATIONS = Counter(
    "noc_alert_escalations", "Unacknowledged alerts escalated to the next recipient tier"
)
PENDING = Gauge(
    "noc_notification_outbox_pending", "Outbox rows not yet delivered (pending or sending)"
)
SEND_SECONDS = Histogram(
    "noc_notification_send_duration_seconds",
    "Time one delivery attempt took, by channel",
    ["channel"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)

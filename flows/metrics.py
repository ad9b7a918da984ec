"""Prometheus metrics of the ingest flow (what it does and what it rejects)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MQTT_RECEIVED = Counter("noc_mqtt_messages_received_total", "MQTT messages received", ["partition"])
MQTT_ACKED = Counter("noc_mqtt_messages_acked_total", "PUBACKs sent after commit", ["partition"])
MQTT_OUTBOUND_SKIPPED = Counter(
    "noc_mqtt_outbound_skipped_total",
    "Own outbound command messages seen and skipped",
    ["partition"],
)
MQTT_HANDED_OFF = Counter(
    "noc_mqtt_priority_copies_paired_total",
    "Bulk copies of priority-topic messages left to the priority partition",
)
MQTT_CONNECTED = Gauge("noc_mqtt_connected", "1 while connected to the broker", ["partition"])
MQTT_CONNECTS = Counter(
    "noc_mqtt_connects_total", "Successful (re)connections to the broker", ["partition"]
)
MQTT_IN_FLIGHT = Gauge(
    "noc_mqtt_in_flight_messages", "Received, not yet acknowledged messages", ["partition"]
)
RECORDS = Counter("noc_ingest_records_total", "Decoded valid records", ["kind"])
DEAD_LETTERS = Counter(
    "noc_ingest_dead_letters_total", "Messages rejected to the dead letters", ["reason"]
)
BATCH_SECONDS = Histogram(
    "noc_storage_batch_seconds",
    "Time to store one batch (one transaction), per storage lane",
    ["lane"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
BATCH_SIZE = Histogram(
    "noc_storage_batch_items",
    "Items per stored batch, per storage lane",
    ["lane"],
    buckets=(1, 10, 50, 100, 500, 1000, 5000),
)
STORE_QUEUED = Gauge(
    "noc_storage_queued_items",
    "Items handed to a background storage lane, not yet committed",
    ["lane"],
)
ROWS_INSERTED = Counter("noc_storage_rows_inserted_total", "Rows inserted", ["table"])
DUPLICATES = Counter(
    "noc_storage_duplicates_total", "Redelivered messages skipped as already stored"
)
WRITE_RETRIES = Counter(
    "noc_storage_write_retries_total", "Batch writes retried (database unavailable)", ["reason"]
)
ALERTS = Counter(
    "noc_alerts_total", "Alert occurrences folded into alerts", ["alert_type", "severity", "opened"]
)
COMMANDS = Counter("noc_device_commands_total", "Commands published to devices", ["result"])

"""The item that travels through the ingest flow: one per MQTT message, from source to sink."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flows.acks import AckToken
from operators.geofence import FixResult
from operators.records import DeadLetter, DerivedAlerts, Enriched, Record, Stored


@dataclass(slots=True)
class Inbound:
    """A message as the broker delivered it. ``elsewhere``: the priority lane stores this
    message (:mod:`flows.handoff`); here it only updates what the flow keeps in memory."""

    topic: str
    payload: bytes
    received_at: datetime
    token: AckToken | None
    elsewhere: bool = False

    def stored_elsewhere(self) -> Inbound:
        """This message as the bulk flow passes it on once the priority lane has it:
        acknowledged already (no token), not to be stored here."""
        return Inbound(self.topic, self.payload, self.received_at, None, elsewhere=True)


def derived(alerts: DerivedAlerts) -> Envelope:
    """An envelope for alert changes that no inbound message carries (nothing to acknowledge)."""
    return Envelope("", b"", None, alerts)


@dataclass(slots=True)
class Envelope:
    """A message on its way to storage. ``item`` starts as the decoded record and becomes the
    enriched record (or a dead letter); the token is committed after the batch is stored.
    ``elsewhere``: stored by the priority lane, so the sink skips it (it has no token)."""

    topic: str
    payload: bytes
    token: AckToken | None
    item: Record | Enriched | DerivedAlerts
    fence: FixResult | None = None  # the geofence answer for a position with approved zones
    elsewhere: bool = False

    @property
    def stored_item(self) -> Stored:
        """What the sink writes (enrichment has run: data records are Enriched)."""
        if isinstance(self.item, Enriched | DeadLetter | DerivedAlerts):
            return self.item
        raise TypeError(f"not enriched: {type(self.item).__name__}")

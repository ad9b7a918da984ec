"""The ingest flow's step functions: thin adapters from envelopes to the pure operators."""

from __future__ import annotations

import logging
from typing import Any

from flows import metrics
from flows.envelope import Envelope, Inbound
from operators.decode import decode
from operators.enrich import enrich
from operators.records import DeadLetter, DerivedAlerts, Enriched
from operators.registry import RegistrySource
from operators.severity import SeverityRules

log = logging.getLogger(__name__)

_RECORDS_BY_KIND: dict[type, Any] = {}
"""Bound ``noc_ingest_records_total`` children: ``labels()`` per message is measurable."""


def decode_batch(msgs: list[Inbound]) -> list[Envelope]:
    """Inbound -> Envelope holding a typed record or a dead letter, for a batch, in order.
    Counts records once per kind and batch (a counter per message is measurable)."""
    out: list[Envelope] = []
    kinds: dict[type, int] = {}
    for msg in msgs:
        record = decode(msg.topic, msg.payload, msg.received_at)
        if isinstance(record, DeadLetter):
            metrics.DEAD_LETTERS.labels(record.reason).inc()
        else:
            kind = type(record)
            kinds[kind] = kinds.get(kind, 0) + 1
        out.append(Envelope(msg.topic, msg.payload, msg.token, record, elsewhere=msg.elsewhere))
    for kind, n in kinds.items():
        counter = _RECORDS_BY_KIND.get(kind)
        if counter is None:
            counter = _RECORDS_BY_KIND[kind] = metrics.RECORDS.labels(kind.__name__)
        counter.inc(n)
    return out


class EnrichStep:
    """Envelope(record) -> Envelope(Enriched | DeadLetter), with the severity rules applied.

    A miss (unknown device or guard) triggers an early registry refresh once, so a device
    registered a moment ago is not quarantined.
    """

    def __init__(self, registry: RegistrySource, rules: SeverityRules) -> None:
        self._registry = registry
        self._rules = rules

    def __call__(self, env: Envelope) -> Envelope:
        record = env.item
        if isinstance(record, DeadLetter | Enriched | DerivedAlerts):
            return env
        snapshot = self._registry.get()
        result = enrich(record, env.topic, env.payload, snapshot)
        if (
            isinstance(result, DeadLetter)
            and result.reason == "unknown_device"
            and self._registry.refresh_soon()
        ):
            snapshot = self._registry.get()
            result = enrich(record, env.topic, env.payload, snapshot)
        if isinstance(result, DeadLetter):
            metrics.DEAD_LETTERS.labels(result.reason).inc()
        else:
            site = snapshot.sites.get(result.site_id) if result.site_id is not None else None
            result.alerts.extend(self._rules.evaluate(result, site))
        env.item = result
        return env


def source_of(env: Envelope) -> str:
    """Key for per-source state: the guard for positions, else the device / component."""
    item = env.item
    if isinstance(item, Enriched):
        if item.guard_id is not None and type(item.record).__name__ == "Position":
            return f"guard:{item.guard_id}"
        return f"{item.tenant_id}:{item.device_id or type(item.record).__name__}"
    return "dead_letters"

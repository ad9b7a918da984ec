-- WebSocket events: what the API fans out to NOC dashboards, with the ids clients resume from.
--
-- Appended by storage/events.py at the end of the transaction that caused them (the ingest
-- batch, an operator's acknowledgement, a zone change), under a transaction-scoped advisory
-- lock held until commit, so ids become visible in id order; NOTIFY noc_ws_events in the same
-- transaction wakes the API's single listener. A plain table (the key is the event id, not a
-- time); retention is app-driven: the API deletes events older than NOC_WS_RETENTION_HOURS and
-- records the highest id it deleted, so a client resuming from before it is told to reload.

CREATE TABLE ws_events (
    event_id   bigserial PRIMARY KEY,
    tenant_id  integer NOT NULL,
    ts         timestamptz NOT NULL DEFAULT now(),
    -- alert | alert_update | position | device_status | zone
    type       text NOT NULL,
    payload    jsonb NOT NULL
);
-- Catch-up of one tenant: event_id > N ORDER BY event_id.
CREATE INDEX ws_events_tenant ON ws_events (tenant_id, event_id);
-- Retention.
CREATE INDEX ws_events_ts ON ws_events (ts);

CREATE TABLE ws_events_retention (
    singleton        boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    -- Every event with an id <= this may have been deleted.
    deleted_through  bigint NOT NULL DEFAULT 0,
    ran_at           timestamptz
);
INSERT INTO ws_events_retention (singleton) VALUES (true);

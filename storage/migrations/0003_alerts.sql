-- Alert state (mutable, one open alert per tenant/source/type) and its append-only history.

CREATE TABLE alerts (
    alert_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id       integer NOT NULL REFERENCES tenants,
    source_id       text NOT NULL,
    alert_type      text NOT NULL,
    severity        text NOT NULL CHECK (severity IN ('critical', 'high', 'medium', 'low', 'info')),
    status          text NOT NULL DEFAULT 'new'
                    CHECK (status IN ('new', 'acknowledged', 'resolved', 'false_alarm')),
    message         text NOT NULL DEFAULT '',
    site_id         integer,
    guard_id        integer,
    device_id       text,
    lat             double precision,
    lon             double precision,
    count           bigint NOT NULL DEFAULT 1,
    first_seen      timestamptz NOT NULL,
    last_seen       timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    acknowledged_by text,
    acknowledged_at timestamptz,
    closed_by       text,
    closed_at       timestamptz,
    details         jsonb NOT NULL DEFAULT '{}'
);
-- At most one open alert per (tenant, source, type), enforced by the database.
CREATE UNIQUE INDEX alerts_one_open ON alerts (tenant_id, source_id, alert_type)
    WHERE status IN ('new', 'acknowledged');
CREATE INDEX alerts_tenant_recent ON alerts (tenant_id, last_seen DESC);

CREATE TABLE alert_history (
    ts           timestamptz NOT NULL,
    tenant_id    integer NOT NULL,
    alert_id     bigint NOT NULL,
    action       text NOT NULL,
    actor        text NOT NULL,
    from_status  text,
    to_status    text,
    note         text NOT NULL DEFAULT '',
    details      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX alert_history_alert ON alert_history (alert_id, ts);
SELECT noc_make_hypertable('alert_history', 'ts', '30 days');

CREATE OR REPLACE FUNCTION noc_reject_history_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'alert_history is append-only';
END $$;
CREATE TRIGGER alert_history_append_only BEFORE UPDATE OR DELETE ON alert_history
    FOR EACH ROW EXECUTE FUNCTION noc_reject_history_change();

-- 1 = most severe. Used to keep the highest severity when repeats are folded into an alert.
CREATE OR REPLACE FUNCTION noc_severity_rank(severity text) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE severity WHEN 'critical' THEN 1 WHEN 'high' THEN 2 WHEN 'medium' THEN 3
                         WHEN 'low' THEN 4 ELSE 5 END
$$;

-- Time-stamped data: hypertables (or plain tables without TimescaleDB).
-- Idempotency: each table has a unique key that includes its time column and the message's
-- identity (msg_id: the device's message id, else a hash of topic + payload), so a redelivered
-- message is stored once with INSERT ... ON CONFLICT DO NOTHING.

CREATE TABLE telemetry (
    ts           timestamptz NOT NULL,
    tenant_id    integer NOT NULL,
    device_id    text NOT NULL,
    battery      real,
    signal       real,
    temperature  real,
    extra        jsonb,
    msg_id       text NOT NULL,
    received_at  timestamptz NOT NULL
);
CREATE UNIQUE INDEX telemetry_idem ON telemetry (device_id, ts, msg_id);
CREATE INDEX telemetry_tenant_ts ON telemetry (tenant_id, ts DESC);
SELECT noc_make_hypertable('telemetry', 'ts', '1 day');

CREATE TABLE positions (
    ts              timestamptz NOT NULL,
    tenant_id       integer NOT NULL,
    guard_id        integer NOT NULL,
    device_id       text,
    site_id         integer,
    lat             double precision NOT NULL,
    lon             double precision NOT NULL,
    accuracy        real,
    -- Geofence classification of this fix: inside | outside | uncertain | unzoned.
    zone_status     text NOT NULL DEFAULT 'unzoned',
    zone_id         integer,
    zone_distance_m real,
    msg_id          text NOT NULL,
    received_at     timestamptz NOT NULL
);
CREATE UNIQUE INDEX positions_idem ON positions (guard_id, ts, msg_id);
CREATE INDEX positions_tenant_ts ON positions (tenant_id, ts DESC);
SELECT noc_make_hypertable('positions', 'ts', '1 day');

CREATE TABLE sensor_readings (
    ts           timestamptz NOT NULL,
    tenant_id    integer NOT NULL,
    sensor_id    text NOT NULL,
    site_id      integer,
    kind         text NOT NULL,
    value        double precision,
    state        text,
    extra        jsonb,
    msg_id       text NOT NULL,
    received_at  timestamptz NOT NULL
);
CREATE UNIQUE INDEX sensor_readings_idem ON sensor_readings (sensor_id, ts, msg_id);
CREATE INDEX sensor_readings_tenant_ts ON sensor_readings (tenant_id, ts DESC);
SELECT noc_make_hypertable('sensor_readings', 'ts', '1 day');

-- Alert messages as devices sent them (the alert state machine lives in `alerts`).
CREATE TABLE device_alerts (
    ts           timestamptz NOT NULL,
    tenant_id    integer NOT NULL,
    source_id    text NOT NULL,
    alert_type   text NOT NULL,
    severity     text,
    message      text,
    lat          double precision,
    lon          double precision,
    extra        jsonb,
    msg_id       text NOT NULL,
    received_at  timestamptz NOT NULL
);
CREATE UNIQUE INDEX device_alerts_idem ON device_alerts (source_id, ts, msg_id);
CREATE INDEX device_alerts_tenant_ts ON device_alerts (tenant_id, ts DESC);
SELECT noc_make_hypertable('device_alerts', 'ts', '7 days');

CREATE TABLE system_health (
    ts           timestamptz NOT NULL,
    tenant_id    integer NOT NULL DEFAULT 0,
    component    text NOT NULL,
    payload      jsonb NOT NULL,
    msg_id       text NOT NULL,
    received_at  timestamptz NOT NULL
);
CREATE UNIQUE INDEX system_health_idem ON system_health (component, ts, msg_id);
SELECT noc_make_hypertable('system_health', 'ts', '7 days');

-- Everything that could not be stored as data, with the reason. Never silently dropped.
CREATE TABLE dead_letters (
    received_at   timestamptz NOT NULL,
    tenant_id     integer NOT NULL DEFAULT 0,
    topic         text NOT NULL,
    reason        text NOT NULL,
    detail        text NOT NULL DEFAULT '',
    payload_head  bytea NOT NULL,
    payload_size  integer NOT NULL,
    msg_id        text NOT NULL
);
CREATE UNIQUE INDEX dead_letters_idem ON dead_letters (msg_id, received_at);
CREATE INDEX dead_letters_reason ON dead_letters (reason, received_at DESC);
SELECT noc_make_hypertable('dead_letters', 'received_at', '7 days');

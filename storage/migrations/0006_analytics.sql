-- Analyst rollups: the same names and columns on every edition (docs/analytics.md).
--
--   device_health_hourly   per device and hour: messages, min/avg/max battery, signal, temperature
--   guard_activity_hourly  per guard and hour: fixes, share inside approved zones, metres walked,
--                          seconds outside
--   alerts_daily           per tenant, day, site, type and severity: counts, mean and p90 seconds
--                          to acknowledge and to close (a plain view over `alerts`, every edition)
--
-- Community edition: the hourly rollups are continuous aggregates (real-time, refresh policy);
-- the raw hypertables get compression and retention policies.
-- Apache edition and bare PostgreSQL: the hourly rollups are plain tables with the same columns,
-- upserted for a recent window by noc_refresh_rollups() (`noc db refresh`); retention is
-- app-driven (`noc db refresh --retention`: drop_chunks on Apache, DELETE on bare PostgreSQL).
-- Both are built from the one query text in noc_rollup_query(), so they give the same numbers.

CREATE OR REPLACE FUNCTION noc_edition() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN NOT noc_timescaledb_installed() THEN 'none'
                WHEN current_setting('timescaledb.license', true) = 'apache' THEN 'apache'
                ELSE 'community' END
$$;

-- Great-circle distance in metres (haversine, mean Earth radius).
CREATE OR REPLACE FUNCTION noc_distance_m(lat1 float8, lon1 float8, lat2 float8, lon2 float8)
RETURNS float8 LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT 2 * 6371008.8 * asin(least(1.0, sqrt(
        sin(radians(lat2 - lat1) / 2) ^ 2
        + cos(radians(lat1)) * cos(radians(lat2)) * sin(radians(lon2 - lon1) / 2) ^ 2)))
$$;

-- A guard's track within one bucket, fed in time order (aggregate with ORDER BY ts, msg_id):
-- the steps between consecutive fixes at most 300 s apart are summed (a longer gap is not
-- evidence of walking). State: {prev epoch, prev lat, prev lon, prev outside 0/1, metres,
-- seconds outside}; the time from a fix to the next one counts as outside when the earlier fix
-- was outside. Window functions (lag) are not allowed in continuous aggregates; an ordered
-- aggregate is, and the same aggregate serves the rollup tables of the other editions.
CREATE OR REPLACE FUNCTION noc_track_step(
    state float8[], ts timestamptz, lat float8, lon float8, outside boolean
) RETURNS float8[] LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    t  float8;
    dt float8;
BEGIN
    IF ts IS NULL OR lat IS NULL OR lon IS NULL THEN
        RETURN state;
    END IF;
    t := extract(epoch FROM ts)::float8;
    IF cardinality(state) = 0 THEN
        RETURN ARRAY[t, lat, lon, coalesce(outside, false)::int, 0, 0];
    END IF;
    dt := t - state[1];
    IF dt > 0 AND dt <= 300 THEN
        -- noc_distance_m inlined: continuous aggregates refresh with a search_path that does
        -- not include this schema.
        state[5] := state[5] + 2 * 6371008.8 * asin(least(1.0, sqrt(
            sin(radians(lat - state[2]) / 2) ^ 2
            + cos(radians(state[2])) * cos(radians(lat)) * sin(radians(lon - state[3]) / 2) ^ 2)));
        IF state[4] = 1 THEN
            state[6] := state[6] + dt;
        END IF;
    END IF;
    RETURN ARRAY[t, lat, lon, coalesce(outside, false)::int, state[5], state[6]];
END $$;

CREATE OR REPLACE FUNCTION noc_track_walked_m(state float8[]) RETURNS float8
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$ SELECT state[5] $$;

CREATE OR REPLACE FUNCTION noc_track_outside_s(state float8[]) RETURNS float8
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$ SELECT state[6] $$;

-- Same transition function and arguments: PostgreSQL runs it once per row for both.
CREATE AGGREGATE noc_walked_m(timestamptz, float8, float8, boolean) (
    SFUNC = noc_track_step, STYPE = float8[], INITCOND = '{}', FINALFUNC = noc_track_walked_m
);
CREATE AGGREGATE noc_outside_s(timestamptz, float8, float8, boolean) (
    SFUNC = noc_track_step, STYPE = float8[], INITCOND = '{}', FINALFUNC = noc_track_outside_s
);

-- The rollup queries, written once. Continuous aggregates need time_bucket; bare PostgreSQL
-- has date_bin, which gives the same hour buckets. time_filter is '' for a continuous
-- aggregate and a WHERE clause on ts ($1, $2) for the refresh of the rollup tables.
CREATE OR REPLACE FUNCTION noc_rollup_query(rollup text, time_filter text DEFAULT '')
RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE
    hour text := CASE WHEN noc_timescaledb_installed()
                      THEN 'time_bucket(INTERVAL ''1 hour'', ts)'
                      ELSE 'date_bin(INTERVAL ''1 hour'', ts, TIMESTAMPTZ ''2000-01-03 00:00+00'')'
                 END;
BEGIN
    CASE rollup
    WHEN 'device_health_hourly' THEN
        RETURN format($q$
            SELECT tenant_id, device_id, %1$s AS bucket,
                   count(*) AS messages,
                   min(battery) AS battery_min, avg(battery) AS battery_avg,
                   max(battery) AS battery_max,
                   min(signal) AS signal_min, avg(signal) AS signal_avg, max(signal) AS signal_max,
                   min(temperature) AS temperature_min, avg(temperature) AS temperature_avg,
                   max(temperature) AS temperature_max
            FROM telemetry %2$s
            GROUP BY tenant_id, device_id, %1$s $q$, hour, time_filter);
    WHEN 'guard_activity_hourly' THEN
        RETURN format($q$
            SELECT tenant_id, guard_id, %1$s AS bucket,
                   count(*) AS fixes,
                   count(*) FILTER (WHERE zone_status <> 'unzoned') AS zoned_fixes,
                   count(*) FILTER (WHERE zone_status = 'inside') AS inside_fixes,
                   count(*) FILTER (WHERE zone_status = 'outside') AS outside_fixes,
                   count(*) FILTER (WHERE zone_status = 'inside')::float8
                       / nullif(count(*) FILTER (WHERE zone_status <> 'unzoned'), 0)
                       AS inside_share,
                   noc_walked_m(ts, lat, lon, zone_status = 'outside' ORDER BY ts, msg_id)
                       AS distance_m,
                   noc_outside_s(ts, lat, lon, zone_status = 'outside' ORDER BY ts, msg_id)
                       AS outside_s
            FROM positions %2$s
            GROUP BY tenant_id, guard_id, %1$s $q$, hour, time_filter);
    END CASE;
END $$;

-- Rollup name -> the column that, with tenant_id and bucket, is its key.
CREATE TABLE analytics_rollups (
    name      text PRIMARY KEY,
    key_column text NOT NULL
);
INSERT INTO analytics_rollups VALUES
    ('device_health_hourly', 'device_id'),
    ('guard_activity_hourly', 'guard_id');

-- How long raw rows are kept (the rollups keep their aggregates). A retention policy per row on
-- the community edition; `noc db refresh --retention` reads it on the others.
CREATE TABLE analytics_retention (
    hypertable  text PRIMARY KEY,
    time_column text NOT NULL,
    drop_after  interval NOT NULL
);
INSERT INTO analytics_retention VALUES
    ('telemetry', 'ts', '90 days'),
    ('positions', 'ts', '90 days'),
    ('sensor_readings', 'ts', '90 days');

DO $$
DECLARE
    r    record;
    t    text;
    seg  text;
    keep interval;
BEGIN
    FOR r IN SELECT name, key_column FROM analytics_rollups ORDER BY name LOOP
        IF noc_edition() = 'community' THEN
            -- WITH NO DATA: allowed inside the migration's transaction; the policy (or
            -- `noc db refresh`) materializes. Real-time: the not yet materialized tail is
            -- aggregated from the raw rows at query time.
            EXECUTE format('CREATE MATERIALIZED VIEW %I WITH (timescaledb.continuous,'
                           ' timescaledb.materialized_only = false) AS %s WITH NO DATA',
                           r.name, noc_rollup_query(r.name));
            PERFORM add_continuous_aggregate_policy(r.name::regclass,
                start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 hour',
                schedule_interval => INTERVAL '15 minutes');
        ELSE
            EXECUTE format('CREATE TABLE %I AS %s WITH NO DATA', r.name, noc_rollup_query(r.name));
            EXECUTE format('ALTER TABLE %I ADD PRIMARY KEY (tenant_id, %I, bucket)',
                           r.name, r.key_column);
            EXECUTE format('CREATE INDEX %I ON %I (tenant_id, bucket DESC)',
                           r.name || '_tenant_bucket', r.name);
        END IF;
    END LOOP;

    IF noc_edition() = 'community' THEN
        -- Compress well after the longest redelivery delay, so late rows still land in
        -- uncompressed chunks (inserts into compressed chunks work, but slowly).
        FOR t, seg IN SELECT * FROM (VALUES ('telemetry', 'device_id'), ('positions', 'guard_id'),
                                            ('sensor_readings', 'sensor_id'),
                                            ('device_alerts', 'source_id')) v
        LOOP
            EXECUTE format('ALTER TABLE %I SET (timescaledb.compress,'
                           ' timescaledb.compress_segmentby = %L,'
                           ' timescaledb.compress_orderby = ''ts DESC'')', t, seg);
            PERFORM add_compression_policy(t::regclass, INTERVAL '7 days');
        END LOOP;
        FOR t, keep IN SELECT hypertable, drop_after FROM analytics_retention LOOP
            PERFORM add_retention_policy(t::regclass, keep);
        END LOOP;
    END IF;
END $$;

-- Upsert the rollup tables (Apache edition, bare PostgreSQL) for the buckets that overlap
-- [window_start, window_end) (NULL end: open). Raw rows are only ever added (idempotent inserts)
-- or dropped by retention, so an upsert without delete keeps the rollups of dropped raw data,
-- as continuous aggregates do. Returns the number of rollup rows written.
CREATE OR REPLACE FUNCTION noc_refresh_rollups(window_start timestamptz, window_end timestamptz)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    origin  CONSTANT timestamptz := '2000-01-03 00:00+00';
    r       record;
    updates text;
    n       bigint;
    total   bigint := 0;
BEGIN
    IF noc_edition() = 'community' THEN
        RAISE EXCEPTION 'the community edition refreshes its continuous aggregates with'
                        ' refresh_continuous_aggregate()';
    END IF;
    window_start := date_bin(INTERVAL '1 hour', window_start, origin);
    window_end := coalesce(window_end, 'infinity');
    FOR r IN SELECT name, key_column FROM analytics_rollups ORDER BY name LOOP
        SELECT string_agg(format('%I = EXCLUDED.%I', a.attname, a.attname), ', ' ORDER BY a.attnum)
          INTO updates
          FROM pg_attribute a
         WHERE a.attrelid = r.name::regclass AND a.attnum > 0 AND NOT a.attisdropped
           AND a.attname NOT IN ('tenant_id', 'bucket', r.key_column);
        EXECUTE format('INSERT INTO %I %s ON CONFLICT (tenant_id, %I, bucket) DO UPDATE SET %s',
                       r.name, noc_rollup_query(r.name, 'WHERE ts >= $1 AND ts < $2'),
                       r.key_column, updates)
          USING window_start, window_end;
        GET DIAGNOSTICS n = ROW_COUNT;
        total := total + n;
    END LOOP;
    RETURN total;
END $$;

-- Alerts are a plain, mutable table (acknowledged and closed long after first_seen), which a
-- continuous aggregate cannot follow: a plain view on every edition, always current.
CREATE VIEW alerts_daily AS
SELECT tenant_id,
       (first_seen AT TIME ZONE 'UTC')::date AS day,
       site_id,
       alert_type,
       severity,
       count(*) AS alerts,
       count(acknowledged_at) AS acknowledged,
       count(closed_at) AS closed,
       count(*) FILTER (WHERE status = 'false_alarm') AS false_alarms,
       avg(ack_s) AS ack_mean_s,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY ack_s) AS ack_p90_s,
       avg(close_s) AS close_mean_s,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY close_s) AS close_p90_s
FROM (
    SELECT tenant_id, first_seen, site_id, alert_type, severity, status,
           acknowledged_at, closed_at,
           extract(epoch FROM acknowledged_at - first_seen)::float8 AS ack_s,
           extract(epoch FROM closed_at - first_seen)::float8 AS close_s
    FROM alerts
) a
GROUP BY tenant_id, day, site_id, alert_type, severity;

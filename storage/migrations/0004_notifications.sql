-- Notifications: a transactional outbox filled in the same transaction that opens an alert,
-- drained by the notifier (several may run: rows are claimed with FOR UPDATE SKIP LOCKED and
-- a lease), and an append-only delivery log. Routing overrides live in tenant_settings under
-- the key 'routing': {"critical": ["sms", "email", "push"], "high": ["email"], ...}.

ALTER TABLE alerts
    ADD COLUMN sms_sent         integer NOT NULL DEFAULT 0,
    ADD COLUMN email_sent       integer NOT NULL DEFAULT 0,
    ADD COLUMN push_sent        integer NOT NULL DEFAULT 0,
    -- Highest recipient tier notified so far; escalation moves it up one configured tier.
    ADD COLUMN escalation_tier  integer NOT NULL DEFAULT 1,
    -- When the alert was last escalated (NULL: never; the delay then runs from created_at).
    ADD COLUMN escalated_at     timestamptz,
    -- When a notification about this alert was last delivered.
    ADD COLUMN last_notified_at timestamptz;

-- The escalation scan: unacknowledged critical alerts.
CREATE INDEX alerts_unacknowledged_critical ON alerts (created_at)
    WHERE status = 'new' AND severity = 'critical';

CREATE TABLE notification_outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id       integer NOT NULL REFERENCES tenants,
    -- NULL for a summary of suppressed notifications.
    alert_id        bigint REFERENCES alerts ON DELETE CASCADE,
    recipient_id    integer NOT NULL REFERENCES recipients ON DELETE CASCADE,
    channel         text NOT NULL CHECK (channel IN ('sms', 'email', 'push')),
    kind            text NOT NULL CHECK (kind IN ('alert', 'escalation', 'summary')),
    tier            integer NOT NULL DEFAULT 1 CHECK (tier >= 1),
    title           text NOT NULL,
    body            text NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'suppressed')),
    attempts        integer NOT NULL DEFAULT 0,
    -- Due time of a pending row; for a 'sending' row, the end of its lease (= claimed_until),
    -- after which another dispatcher may take it over.
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    claimed_by      text,
    claimed_at      timestamptz,
    claimed_until   timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    last_error      text,
    -- For a suppressed row: the summary notification that reported it.
    summary_id      bigint REFERENCES notification_outbox,
    CHECK ((kind = 'summary') = (alert_id IS NULL)),
    -- Enqueueing is idempotent: one row per alert, recipient, kind and tier.
    CONSTRAINT notification_outbox_once UNIQUE (alert_id, recipient_id, kind, tier)
);
-- Claims: due pending rows and 'sending' rows whose lease ran out.
CREATE INDEX notification_outbox_due ON notification_outbox (next_attempt_at)
    WHERE status IN ('pending', 'sending');
-- The rate limiter's look-back: recent sends per recipient.
CREATE INDEX notification_outbox_recent ON notification_outbox (recipient_id, sent_at)
    WHERE status = 'sent';
CREATE INDEX notification_outbox_in_flight ON notification_outbox (recipient_id, claimed_at)
    WHERE status = 'sending';
-- Suppressed rows waiting for their summary.
CREATE INDEX notification_outbox_unsummarized ON notification_outbox (recipient_id, id)
    WHERE status = 'suppressed' AND summary_id IS NULL;
CREATE INDEX notification_outbox_alert ON notification_outbox (alert_id);

CREATE TABLE notification_deliveries (
    ts          timestamptz NOT NULL,
    tenant_id   integer NOT NULL,
    outbox_id   bigint NOT NULL,
    attempt     integer NOT NULL,
    channel     text NOT NULL,
    recipient_id integer NOT NULL,
    ok          boolean NOT NULL,
    error       text,
    duration_ms double precision,
    dispatcher  text NOT NULL DEFAULT ''
);
CREATE INDEX notification_deliveries_outbox ON notification_deliveries (outbox_id, ts);
SELECT noc_make_hypertable('notification_deliveries', 'ts', '7 days');

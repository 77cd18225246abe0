-- NOTIFY only where someone listens. With the Service Bus transport nobody LISTENs on `coremachine_queue`, yet
-- every outbox insert notified, and a transaction that notifies takes a database-wide lock while it commits.
-- One row says whether queue inserts notify; the composition root sets it from the transport in use (on for
-- the PostgreSQL queue, whose idle workers wait on the notifications; off for Service Bus). It defaults to on,
-- so a PostgreSQL queue used without the composition root still wakes its workers.
CREATE TABLE queue_notify (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    enabled   boolean NOT NULL DEFAULT true
);
INSERT INTO queue_notify DEFAULT VALUES;

CREATE OR REPLACE FUNCTION coremachine_notify_queue() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    q text;
BEGIN
    IF NOT coalesce((SELECT enabled FROM queue_notify), true) THEN
        RETURN NULL;
    END IF;
    FOR q IN SELECT DISTINCT queue FROM new_rows LOOP
        PERFORM pg_notify('coremachine_queue', q);
    END LOOP;
    RETURN NULL;
END;
$$;

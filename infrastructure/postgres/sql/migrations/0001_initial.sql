-- Jobs, stages (with the O(1) fan-in counter), tasks, the event timeline, the message queue (which is
-- also the transactional outbox) and its dead letters.

CREATE TYPE job_status AS ENUM (
    'queued', 'processing', 'finalizing', 'completed', 'completed_with_errors', 'failed', 'cancelled'
);
CREATE TYPE task_status AS ENUM ('queued', 'running', 'retry_scheduled', 'completed', 'failed', 'cancelled');
CREATE TYPE stage_status AS ENUM ('processing', 'completed', 'failed', 'cancelled');

CREATE TABLE jobs (
    job_id         text PRIMARY KEY CHECK (job_id ~ '^[0-9a-f]{64}$'),
    job_type       text NOT NULL,
    status         job_status NOT NULL DEFAULT 'queued',
    outcome        job_status,
    parameters     jsonb NOT NULL,
    current_stage  int NOT NULL DEFAULT 1,
    total_stages   int NOT NULL CHECK (total_stages >= 1),
    failure_policy text NOT NULL CHECK (failure_policy IN ('fail_fast', 'continue')),
    result         jsonb,
    error          jsonb,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz
);
CREATE INDEX jobs_status_updated_idx ON jobs (status, updated_at);
CREATE INDEX jobs_created_idx ON jobs (created_at DESC, job_id DESC);

CREATE TABLE stages (
    job_id       text NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    stage        int NOT NULL CHECK (stage >= 1),
    name         text NOT NULL,
    status       stage_status NOT NULL DEFAULT 'processing',
    task_count   int NOT NULL CHECK (task_count >= 0),
    remaining    int NOT NULL CHECK (remaining >= 0),
    failed       int NOT NULL DEFAULT 0 CHECK (failed >= 0),
    started_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    PRIMARY KEY (job_id, stage)
);

CREATE TABLE tasks (
    task_id         text PRIMARY KEY,
    job_id          text NOT NULL,
    stage           int NOT NULL,
    idx             int NOT NULL CHECK (idx >= 0),
    task_type       text NOT NULL,
    status          task_status NOT NULL DEFAULT 'queued',
    parameters      jsonb NOT NULL,
    result          jsonb,
    errors          jsonb NOT NULL DEFAULT '[]'::jsonb,
    attempt         int NOT NULL DEFAULT 0,
    max_attempts    int NOT NULL CHECK (max_attempts >= 1),
    timeout_seconds double precision NOT NULL CHECK (timeout_seconds > 0),
    lease_until     timestamptz,
    not_before      timestamptz,
    claimed_by      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    FOREIGN KEY (job_id, stage) REFERENCES stages (job_id, stage) ON DELETE CASCADE
);
CREATE INDEX tasks_job_stage_idx ON tasks (job_id, stage, idx);
CREATE INDEX tasks_lease_idx ON tasks (lease_until) WHERE status = 'running';

CREATE TABLE job_events (
    id      bigserial PRIMARY KEY,
    job_id  text NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind    text NOT NULL,
    stage   int,
    task_id text,
    detail  jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX job_events_job_idx ON job_events (job_id, id);

-- One table is both the queue (PostgreSQL transport) and the outbox (other transports): a state change
-- and the messages it causes commit together. A locked message has available_at = its lock expiry, so
-- "due" and "not locked" are one condition. Settled rows stay as 'done' for the duplicate-detection
-- window, so a message id sent twice within it is dropped, as on Service Bus.
CREATE TABLE queue_messages (
    id             bigserial PRIMARY KEY,
    queue          text NOT NULL,
    message_id     text NOT NULL CHECK (length(message_id) <= 128),
    body           jsonb NOT NULL,
    properties     jsonb NOT NULL DEFAULT '{}'::jsonb,
    state          text NOT NULL DEFAULT 'ready' CHECK (state IN ('ready', 'done')),
    enqueued_at    timestamptz NOT NULL DEFAULT now(),
    available_at   timestamptz NOT NULL DEFAULT now(),
    delivery_count int NOT NULL DEFAULT 0,
    lock_token     uuid,
    done_at        timestamptz,
    UNIQUE (queue, message_id)
);
CREATE INDEX queue_messages_ready_idx ON queue_messages (queue, available_at, id) WHERE state = 'ready';
CREATE INDEX queue_messages_done_idx ON queue_messages (done_at) WHERE state = 'done';

CREATE TABLE dead_letters (
    id               bigserial PRIMARY KEY,
    queue            text NOT NULL,
    message_id       text NOT NULL,
    body             jsonb NOT NULL,
    properties       jsonb NOT NULL DEFAULT '{}'::jsonb,
    reason           text NOT NULL,
    description      text NOT NULL DEFAULT '',
    delivery_count   int NOT NULL DEFAULT 0,
    enqueued_at      timestamptz,
    dead_lettered_at timestamptz NOT NULL DEFAULT now(),
    replay_count     int NOT NULL DEFAULT 0
);
CREATE INDEX dead_letters_queue_idx ON dead_letters (queue, id);
CREATE INDEX dead_letters_job_idx ON dead_letters ((properties ->> 'job_id'));

-- Wake idle workers at once: one notification per statement and queue, not per row.
CREATE FUNCTION coremachine_notify_queue() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    q text;
BEGIN
    FOR q IN SELECT DISTINCT queue FROM new_rows LOOP
        PERFORM pg_notify('coremachine_queue', q);
    END LOOP;
    RETURN NULL;
END;
$$;

CREATE TRIGGER queue_messages_notify
    AFTER INSERT ON queue_messages
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION coremachine_notify_queue();

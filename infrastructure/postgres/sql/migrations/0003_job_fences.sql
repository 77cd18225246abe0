-- Control counters and the finalize fence live on the job row, never in the event log:
--   plan_attempts       how many times the current stage's planner (create_tasks) has failed transiently; it names
--                       the re-sent stage message, and resets when the job moves to another stage or round;
--   finalize_deferrals  how many finalize messages were re-sent for later; it names each of them;
--   finalize_owner / finalize_claim_until
--                       who runs finalize now and until when (renewed while it runs): finalize is fenced on it.
-- retry_round counts every operator round (retry or rerun) and names the messages of that round; round_started_at
-- is when the current round began.
ALTER TABLE jobs
    ADD COLUMN plan_attempts int NOT NULL DEFAULT 0 CHECK (plan_attempts >= 0),
    ADD COLUMN finalize_deferrals int NOT NULL DEFAULT 0 CHECK (finalize_deferrals >= 0),
    ADD COLUMN finalize_owner text,
    ADD COLUMN finalize_claim_until timestamptz,
    ADD COLUMN round_started_at timestamptz;
UPDATE jobs SET round_started_at = created_at;
ALTER TABLE jobs ALTER COLUMN round_started_at SET DEFAULT now(), ALTER COLUMN round_started_at SET NOT NULL;

-- A rerun starts the job again under the same id; each ended round is kept here, with its tasks.
CREATE TABLE job_rounds (
    job_id      text NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    round       int NOT NULL CHECK (round >= 0),
    status      job_status NOT NULL,
    result      jsonb,
    error       jsonb,
    stages      jsonb NOT NULL DEFAULT '[]'::jsonb,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    archived_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, round)
);

CREATE TABLE task_history (
    job_id      text NOT NULL,
    round       int NOT NULL,
    task_id     text NOT NULL,
    stage       int NOT NULL,
    idx         int NOT NULL,
    task_type   text NOT NULL,
    status      task_status NOT NULL,
    attempt     int NOT NULL,
    errors      jsonb NOT NULL,
    result      jsonb,
    finished_at timestamptz,
    PRIMARY KEY (job_id, round, task_id),
    FOREIGN KEY (job_id, round) REFERENCES job_rounds (job_id, round) ON DELETE CASCADE
);

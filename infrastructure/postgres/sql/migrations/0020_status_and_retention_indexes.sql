-- Indexes that keep the status path, the janitor and pruning independent of how much history the tables hold.
-- Every one is partial or narrow: the hot path (claim, complete) pays one extra index entry per claim at most.

-- Running tasks of one job, per stage: status counts and "oldest running" read these, never the job's tasks;
-- their number is bounded by the workers' concurrency, not by the stage's width. updated_at = claim time.
CREATE INDEX tasks_running_job_idx ON tasks (job_id, stage, updated_at) WHERE status = 'running';

-- Tasks waiting for a scheduled retry, per job (status counts, "next retry").
CREATE INDEX tasks_retry_job_idx ON tasks (job_id, stage, not_before) WHERE status = 'retry_scheduled';

-- Tasks that ever failed an attempt, newest first per job ("recent errors").
CREATE INDEX tasks_errors_job_idx ON tasks (job_id, updated_at DESC) WHERE errors <> '[]'::jsonb;

-- Retention: finished jobs of one terminal state, oldest first.
CREATE INDEX jobs_finished_idx ON jobs (status, finished_at) WHERE finished_at IS NOT NULL;

-- A task's message can be sent again without a new attempt: when its retry message arrived before the task was
-- due (deferred to its due time), or when a due retry has no live message (the janitor re-sends it). Each re-send
-- takes the next number of this counter for its message id, so control data never comes from job_events.
ALTER TABLE tasks ADD COLUMN resend_count int NOT NULL DEFAULT 0 CHECK (resend_count >= 0);

-- The janitor's scan for overdue retries.
CREATE INDEX tasks_retry_due_idx ON tasks (not_before) WHERE status = 'retry_scheduled';

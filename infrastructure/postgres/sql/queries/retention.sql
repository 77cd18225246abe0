-- Named queries of pruning (core/retention.py). Every statement is guarded on the job still being in the
-- terminal state, finished before the cutoff, that made it a candidate; each runs in its own short transaction.

-- name: prune_count
SELECT count(*) FROM jobs
WHERE status = %(status)s::job_status AND finished_at < %(before)s

-- name: prune_candidates
SELECT job_id FROM jobs
WHERE status = %(status)s::job_status AND finished_at < %(before)s
ORDER BY finished_at
LIMIT %(limit)s

-- name: prune_guard
-- Lock the candidates still eligible: a retry cannot revive one while its rows are being deleted, and a second
-- janitor working at the same time skips them instead of waiting (or deadlocking) on the same jobs.
SELECT job_id FROM jobs
WHERE job_id = ANY(%(job_ids)s::text[]) AND status = %(status)s::job_status AND finished_at < %(before)s
ORDER BY job_id
FOR UPDATE SKIP LOCKED

-- name: prune_tasks
DELETE FROM tasks WHERE task_id IN (
    SELECT task_id FROM tasks WHERE job_id = ANY(%(job_ids)s::text[]) LIMIT %(limit)s
)

-- name: prune_events
DELETE FROM job_events WHERE id IN (
    SELECT id FROM job_events WHERE job_id = ANY(%(job_ids)s::text[]) LIMIT %(limit)s
)

-- name: prune_task_history
-- Tasks of earlier rounds (kept by a rerun) go in chunks too; their round rows go with the job (ON DELETE CASCADE).
DELETE FROM task_history WHERE (job_id, round, task_id) IN (
    SELECT job_id, round, task_id FROM task_history WHERE job_id = ANY(%(job_ids)s::text[]) LIMIT %(limit)s
)

-- name: prune_settled_messages
-- Settled rows only: a message still ready is a live delivery, and answers "no such task" when it arrives.
-- Retention is never shorter than the duplicate-detection window, so the job's rows all settled before the
-- cutoff, a range the settled-message purge keeps small (queue_messages_done_idx).
DELETE FROM queue_messages
WHERE state = 'done' AND done_at < %(before)s AND properties ->> 'job_id' = ANY(%(job_ids)s::text[])

-- name: prune_dead_letters
DELETE FROM dead_letters WHERE properties ->> 'job_id' = ANY(%(job_ids)s::text[])

-- name: prune_left_tasks
-- Tasks a chunk may have left (normally none: the chunks ran until they deleted nothing). Tasks have no foreign
-- key to their stage (migration 0030), so they go here, before the job row.
DELETE FROM tasks WHERE job_id = ANY(%(job_ids)s::text[])

-- name: prune_jobs
-- Stages (and the job's other rows a chunk left) go with the job row through ON DELETE CASCADE.
DELETE FROM jobs
WHERE job_id = ANY(%(job_ids)s::text[]) AND status = %(status)s::job_status AND finished_at < %(before)s
RETURNING job_id

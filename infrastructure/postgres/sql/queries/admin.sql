-- Named queries of the admin API: paged job and task listings, and the operator's retry of a failed job.
-- Status guards arrive as parameters computed from the transition tables in core/states.py.

-- name: admin_list_jobs
SELECT job_id, job_type, status, parameters, current_stage, total_stages, failure_policy, result, error,
       created_at, updated_at, finished_at, outcome
FROM jobs
WHERE (cardinality(%(statuses)s::job_status[]) = 0 OR status = ANY(%(statuses)s::job_status[]))
  AND (%(job_type)s::text IS NULL OR job_type = %(job_type)s::text)
  AND (%(after_created)s::timestamptz IS NULL
       OR (created_at, job_id) < (%(after_created)s::timestamptz, %(after_id)s::text))
ORDER BY created_at DESC, job_id DESC
LIMIT %(limit)s

-- name: admin_list_tasks
SELECT task_id, job_id, stage, idx, task_type, status, attempt, max_attempts, lease_until, not_before,
       claimed_by, errors, result, updated_at
FROM tasks
WHERE job_id = %(job_id)s
  AND (%(stage)s::int IS NULL OR stage = %(stage)s::int)
  AND (cardinality(%(statuses)s::task_status[]) = 0 OR status = ANY(%(statuses)s::task_status[]))
  AND (%(after_stage)s::int IS NULL OR (stage, idx) > (%(after_stage)s::int, %(after_idx)s::int))
ORDER BY stage, idx
LIMIT %(limit)s

-- name: admin_retry_job
WITH old AS (
    SELECT job_id, error FROM jobs
    WHERE job_id = %(job_id)s AND current_stage = %(stage)s AND status = ANY(%(sources)s::job_status[])
    FOR UPDATE
)
UPDATE jobs j SET status = 'processing', outcome = NULL, error = NULL, result = NULL, finished_at = NULL,
    updated_at = now(), retry_round = j.retry_round + 1
FROM old
WHERE j.job_id = old.job_id
RETURNING j.job_type, j.retry_round, old.error

-- name: admin_lock_stage
SELECT stage FROM stages WHERE job_id = %(job_id)s AND stage = %(stage)s FOR UPDATE

-- name: admin_requeue_stage_tasks
WITH old AS (
    SELECT task_id, status AS was FROM tasks
    WHERE job_id = %(job_id)s AND stage = %(stage)s AND status IN ('failed', 'cancelled')
    FOR UPDATE
)
UPDATE tasks t
SET status = 'queued', max_attempts = t.attempt + %(stage_max)s, lease_until = NULL, not_before = NULL,
    claimed_by = NULL, result = NULL, finished_at = NULL, updated_at = now()
FROM old
WHERE t.task_id = old.task_id
RETURNING t.task_id, t.task_type, t.attempt, old.was

-- name: admin_reopen_stage
UPDATE stages s SET status = 'processing', completed_at = NULL,
    remaining = (SELECT count(*) FROM tasks t
                 WHERE t.job_id = s.job_id AND t.stage = s.stage AND t.status NOT IN ('completed', 'failed')),
    failed = (SELECT count(*) FROM tasks t WHERE t.job_id = s.job_id AND t.stage = s.stage AND t.status = 'failed')
WHERE s.job_id = %(job_id)s AND s.stage = %(stage)s
RETURNING remaining

-- Named queries of the admin API: paged job and task listings. (Operator actions are units of work of the
-- state store: store.sql.)

-- name: admin_list_jobs
SELECT job_id, job_type, status, parameters, current_stage, total_stages, failure_policy, result, error,
       created_at, updated_at, finished_at, outcome, retry_round, plan_attempts
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

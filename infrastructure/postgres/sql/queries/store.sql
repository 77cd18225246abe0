-- Named queries of the PostgreSQL state store. Status guards arrive as parameters computed from the
-- transition tables in core/states.py, so the state machine has one source of truth.

-- name: insert_job
INSERT INTO jobs (job_id, job_type, parameters, total_stages, failure_policy)
VALUES (%(job_id)s, %(job_type)s, %(parameters)s, %(total_stages)s, %(failure_policy)s)
ON CONFLICT (job_id) DO NOTHING
RETURNING job_id, job_type, status, parameters, current_stage, total_stages, failure_policy, result, error,
          created_at, updated_at, finished_at, outcome

-- name: select_job
SELECT job_id, job_type, status, parameters, current_stage, total_stages, failure_policy, result, error,
       created_at, updated_at, finished_at, outcome
FROM jobs WHERE job_id = %(job_id)s

-- name: insert_event
INSERT INTO job_events (job_id, kind, stage, task_id, detail)
VALUES (%(job_id)s, %(kind)s, %(stage)s, %(task_id)s, %(detail)s)

-- name: insert_event_if_job_exists
INSERT INTO job_events (job_id, kind, stage, task_id, detail)
SELECT %(job_id)s, %(kind)s, %(stage)s, %(task_id)s, %(detail)s
WHERE EXISTS (SELECT 1 FROM jobs WHERE job_id = %(job_id)s)

-- name: lock_job_for_stage
UPDATE jobs SET status = 'processing', updated_at = now()
WHERE job_id = %(job_id)s AND status = ANY(%(sources)s::job_status[]) AND current_stage = %(stage)s
RETURNING job_type, total_stages

-- name: insert_stage
INSERT INTO stages (job_id, stage, name, task_count, remaining)
VALUES (%(job_id)s, %(stage)s, %(name)s, %(task_count)s, %(task_count)s)
ON CONFLICT (job_id, stage) DO NOTHING
RETURNING stage

-- name: copy_tasks
COPY tasks (task_id, job_id, stage, idx, task_type, parameters, max_attempts, timeout_seconds) FROM STDIN

-- name: copy_messages
COPY queue_messages (queue, message_id, body, properties) FROM STDIN

-- name: complete_stage
UPDATE stages SET status = 'completed', completed_at = now()
WHERE job_id = %(job_id)s AND stage = %(stage)s AND status = 'processing'
RETURNING task_count, failed

-- name: advance_job
UPDATE jobs SET current_stage = current_stage + 1, updated_at = now()
WHERE job_id = %(job_id)s AND status = 'processing' AND current_stage = %(stage)s
  AND current_stage < total_stages
RETURNING job_type, current_stage, retry_round

-- name: finalize_after_last_stage
UPDATE jobs j SET status = 'finalizing', updated_at = now(),
    outcome = CASE WHEN EXISTS (SELECT 1 FROM stages s WHERE s.job_id = j.job_id AND s.failed > 0)
                   THEN 'completed_with_errors'::job_status ELSE 'completed'::job_status END
WHERE j.job_id = %(job_id)s AND j.status = 'processing' AND j.current_stage = %(stage)s
  AND j.current_stage = j.total_stages
RETURNING j.job_type, j.outcome, j.retry_round

-- name: stage_results
SELECT task_id, idx, status, result FROM tasks
WHERE job_id = %(job_id)s AND stage = %(stage)s AND status = 'completed'
ORDER BY idx

-- name: claim_tasks
UPDATE tasks t
SET status = 'running', attempt = t.attempt + 1, claimed_by = %(worker_id)s, updated_at = now(),
    lease_until = now() + make_interval(secs => coalesce(%(lease_seconds)s::float8, t.timeout_seconds)),
    errors = CASE WHEN t.status = 'running' THEN t.errors || jsonb_build_array(jsonb_build_object(
        'type', 'LeaseExpired', 'class', 'transient', 'attempt', t.attempt, 'where', t.claimed_by, 'at', now(),
        'message', 'the worker holding this task stopped before finishing; taken back'))
        ELSE t.errors END
FROM jobs j
WHERE t.task_id = ANY(%(task_ids)s::text[]) AND j.job_id = t.job_id AND j.status = 'processing'
  AND ((t.status = ANY(%(sources)s::task_status[]) AND t.status <> 'running'
        AND (t.not_before IS NULL OR t.not_before <= now()))
       OR (t.status = 'running' AND t.lease_until < now()))
RETURNING t.task_id, t.job_id, j.job_type, t.stage, t.idx, t.task_type, t.parameters, t.attempt,
          t.max_attempts, t.timeout_seconds, j.failure_policy

-- name: renew_task_leases
-- Extend the leases a worker still holds (running at the claimed attempt); each comes back with its job's status.
UPDATE tasks t
SET lease_until = now() + make_interval(secs => coalesce(u.lease_seconds, t.timeout_seconds))
FROM unnest(%(task_ids)s::text[], %(attempts)s::int[], %(lease_seconds)s::float8[]) AS u(task_id, attempt, lease_seconds),
     jobs j
WHERE t.task_id = ANY(%(task_ids)s::text[]) AND t.task_id = u.task_id AND t.status = 'running'
  AND t.attempt = u.attempt AND j.job_id = t.job_id
RETURNING t.task_id, j.status

-- name: release_claims
-- Claims of tasks that were never started: back to queued as if the claim had not happened.
UPDATE tasks t
SET status = 'queued', attempt = t.attempt - 1, lease_until = NULL, claimed_by = NULL, updated_at = now()
FROM unnest(%(task_ids)s::text[], %(attempts)s::int[]) AS u(task_id, attempt)
WHERE t.task_id = ANY(%(task_ids)s::text[]) AND t.task_id = u.task_id
  AND t.status = ANY(%(sources)s::task_status[]) AND t.attempt = u.attempt
RETURNING t.task_id

-- name: live_jobs
SELECT job_id FROM jobs WHERE job_id = ANY(%(job_ids)s::text[]) AND status = 'processing'

-- name: defer_early_tasks
-- Messages that arrived before their retry is due: count a re-send on each task still waiting for exactly
-- that attempt; the caller sends the fresh message, due when the task is.
UPDATE tasks t SET resend_count = t.resend_count + 1
FROM unnest(%(task_ids)s::text[], %(attempts)s::int[]) AS u(task_id, attempt), jobs j
WHERE t.task_id = ANY(%(task_ids)s::text[]) AND t.task_id = u.task_id AND t.status = 'retry_scheduled'
  AND t.attempt + 1 = u.attempt AND t.not_before > now() AND j.job_id = t.job_id AND j.status = 'processing'
RETURNING t.task_id, t.job_id, j.job_type, t.stage, t.task_type, t.attempt, t.resend_count,
          greatest(0, extract(epoch FROM t.not_before - now()))::float8

-- name: resend_overdue_retries
-- Retries due for longer than the deadline whose message never came: re-send them, due again from now (so the
-- next pass waits the whole deadline again before another copy).
WITH overdue AS (
    SELECT t.task_id FROM tasks t JOIN jobs j ON j.job_id = t.job_id
    WHERE t.status = 'retry_scheduled' AND j.status = 'processing'
      AND t.not_before < now() - make_interval(secs => %(overdue)s)
    ORDER BY t.not_before
    LIMIT %(limit)s
    FOR UPDATE OF t SKIP LOCKED
)
UPDATE tasks t SET resend_count = t.resend_count + 1, not_before = now(), updated_at = now()
FROM overdue, jobs j
WHERE t.task_id = overdue.task_id AND j.job_id = t.job_id
RETURNING t.task_id, t.job_id, j.job_type, t.stage, t.task_type, t.attempt, t.resend_count

-- name: complete_tasks
UPDATE tasks t
SET status = 'completed', result = u.result, lease_until = NULL, finished_at = now(), updated_at = now()
FROM unnest(%(task_ids)s::text[], %(attempts)s::int[], %(results)s::jsonb[]) AS u(task_id, attempt, result)
WHERE t.task_id = ANY(%(task_ids)s::text[]) AND t.task_id = u.task_id AND t.status = 'running'
  AND t.attempt = u.attempt
RETURNING t.job_id, t.stage, t.task_id

-- name: schedule_retries
UPDATE tasks t
SET status = 'retry_scheduled', errors = t.errors || jsonb_build_array(u.error), lease_until = NULL,
    not_before = now() + make_interval(secs => u.delay), updated_at = now()
FROM unnest(%(task_ids)s::text[], %(attempts)s::int[], %(errors)s::jsonb[], %(delays)s::float8[])
     AS u(task_id, attempt, error, delay)
WHERE t.task_id = ANY(%(task_ids)s::text[]) AND t.task_id = u.task_id AND t.status = 'running'
  AND t.attempt = u.attempt
RETURNING t.job_id, t.stage, t.task_id, t.task_type, t.attempt, u.delay, u.error

-- name: fail_tasks
UPDATE tasks t
SET status = 'failed', errors = t.errors || jsonb_build_array(u.error), lease_until = NULL,
    finished_at = now(), updated_at = now()
FROM unnest(%(task_ids)s::text[], %(attempts)s::int[], %(errors)s::jsonb[]) AS u(task_id, attempt, error)
WHERE t.task_id = ANY(%(task_ids)s::text[]) AND t.task_id = u.task_id AND t.status = 'running'
  AND t.attempt = u.attempt
RETURNING t.job_id, t.stage, t.task_id, u.error

-- name: lock_stages
-- Taken first by a batch that may fail its job, so every transaction locks stage rows before job rows.
SELECT s.job_id, s.stage FROM stages s
JOIN unnest(%(job_ids)s::text[], %(stages)s::int[]) AS u(job_id, stage) ON s.job_id = u.job_id AND s.stage = u.stage
ORDER BY s.job_id, s.stage
FOR UPDATE OF s

-- name: decrement_stage
UPDATE stages SET remaining = remaining - %(done)s, failed = failed + %(failed)s
WHERE job_id = %(job_id)s AND stage = %(stage)s
RETURNING remaining

-- name: job_to_finalizing
UPDATE jobs SET status = 'finalizing', outcome = %(outcome)s, updated_at = now(),
    error = COALESCE(error, %(error)s)
WHERE job_id = %(job_id)s AND status = ANY(%(sources)s::job_status[])
RETURNING job_type, retry_round

-- name: cancel_unstarted_tasks
UPDATE tasks SET status = 'cancelled', lease_until = NULL, finished_at = now(), updated_at = now()
WHERE job_id = %(job_id)s AND status IN ('queued', 'retry_scheduled')

-- name: live_lease_seconds
SELECT extract(epoch FROM max(lease_until) - now())::float8 FROM tasks
WHERE job_id = %(job_id)s AND status = 'running' AND lease_until > now()

-- name: count_finalize_deferrals
SELECT j.job_type, j.retry_round,
       (SELECT count(*) FROM job_events e WHERE e.job_id = j.job_id AND e.kind = 'finalize_deferred')
FROM jobs j WHERE j.job_id = %(job_id)s AND j.status = 'finalizing'
FOR UPDATE OF j

-- name: finish_job
UPDATE jobs SET status = %(status)s, result = %(result)s, finished_at = now(), updated_at = now(),
    error = CASE WHEN %(error)s::jsonb IS NULL THEN error
                 WHEN error IS NULL THEN %(error)s::jsonb
                 ELSE error || jsonb_build_object('finalize_error', %(error)s::jsonb) END
WHERE job_id = %(job_id)s AND status = ANY(%(sources)s::job_status[])
RETURNING job_id

-- name: cancel_leftover_tasks
UPDATE tasks SET status = 'cancelled', lease_until = NULL, finished_at = now(), updated_at = now()
WHERE job_id = %(job_id)s AND status IN ('queued', 'running', 'retry_scheduled')

-- name: cancel_open_stages
UPDATE stages SET status = 'cancelled', completed_at = now()
WHERE job_id = %(job_id)s AND status = 'processing'

-- name: requeue_expired_leases
WITH expired AS (
    SELECT t.task_id FROM tasks t JOIN jobs j ON j.job_id = t.job_id
    WHERE t.status = 'running' AND j.status = 'processing'
      AND t.lease_until < now() - make_interval(secs => %(grace)s)
    ORDER BY t.lease_until
    LIMIT %(limit)s
    FOR UPDATE OF t SKIP LOCKED
)
UPDATE tasks t
SET status = 'queued', lease_until = NULL, claimed_by = NULL, updated_at = now(),
    errors = t.errors || jsonb_build_array(jsonb_build_object(
        'type', 'LeaseExpired', 'class', 'transient', 'attempt', t.attempt, 'where', t.claimed_by,
        'at', now(), 'message', 'the worker holding this task stopped before finishing; taken back'))
FROM expired, jobs j
WHERE t.task_id = expired.task_id AND j.job_id = t.job_id
RETURNING t.task_id, t.job_id, j.job_type, t.stage, t.task_type, t.attempt

-- name: stuck_jobs
SELECT job_id, job_type, status, parameters, current_stage, total_stages, failure_policy, result, error,
       created_at, updated_at, finished_at, outcome
FROM jobs j
WHERE j.status IN ('queued', 'processing', 'finalizing')
  AND j.updated_at < now() - make_interval(secs => %(older)s)
  AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.job_id = j.job_id
                  AND t.updated_at >= now() - make_interval(secs => %(older)s))
ORDER BY j.updated_at
LIMIT %(limit)s

-- name: snapshot_events
SELECT at, kind, stage, task_id, detail FROM (
    SELECT id, at, kind, stage, task_id, detail FROM job_events
    WHERE job_id = %(job_id)s ORDER BY id DESC LIMIT %(limit)s
) recent ORDER BY id

-- name: oldest_running_task
SELECT task_id, job_id, stage, idx, task_type, status, attempt, max_attempts, lease_until, not_before,
       claimed_by, errors, result, updated_at
FROM tasks WHERE job_id = %(job_id)s AND status = 'running' ORDER BY updated_at LIMIT 1

-- name: next_retry_task
SELECT task_id, job_id, stage, idx, task_type, status, attempt, max_attempts, lease_until, not_before,
       claimed_by, errors, result, updated_at
FROM tasks WHERE job_id = %(job_id)s AND status = 'retry_scheduled' ORDER BY not_before LIMIT 1

-- name: recent_error_tasks
SELECT task_id, job_id, stage, idx, task_type, status, attempt, max_attempts, lease_until, not_before,
       claimed_by, errors, result, updated_at
FROM tasks WHERE job_id = %(job_id)s AND errors <> '[]'::jsonb ORDER BY updated_at DESC LIMIT %(limit)s

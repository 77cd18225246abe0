-- Named queries of the PostgreSQL state store: each is one guarded statement of the unit-of-work port
-- (core/uow.py); the decisions are core's (core/store.py, core/outcomes.py, core/rounds.py). Status guards arrive
-- as parameters computed from the transition tables in core/states.py, so the state machine has one source of
-- truth. Lock order: task rows, then stage rows, then job rows; `task_id = ANY(...)` and `job_id = ANY(...)`
-- statements are index scans, which visit (and lock) the rows in key order.

-- name: insert_jobs
-- New jobs, in the order given: an id that exists, or came earlier in the list, is not inserted.
INSERT INTO jobs (job_id, job_type, parameters, total_stages, failure_policy)
SELECT u.job_id, u.job_type, u.parameters, u.total_stages, u.failure_policy
FROM unnest(%(job_ids)s::text[], %(job_types)s::text[], %(parameters)s::jsonb[], %(total_stages)s::int[],
            %(failure_policies)s::text[]) WITH ORDINALITY AS u(job_id, job_type, parameters, total_stages,
                                                               failure_policy, n)
ORDER BY u.n
ON CONFLICT (job_id) DO NOTHING
RETURNING job_id, job_type, status, parameters, current_stage, total_stages, failure_policy, result, error,
       created_at, updated_at, finished_at, outcome, retry_round, plan_attempts

-- name: select_job
SELECT job_id, job_type, status, parameters, current_stage, total_stages, failure_policy, result, error,
       created_at, updated_at, finished_at, outcome, retry_round, plan_attempts
FROM jobs WHERE job_id = %(job_id)s

-- name: select_jobs
SELECT job_id, job_type, status, parameters, current_stage, total_stages, failure_policy, result, error,
       created_at, updated_at, finished_at, outcome, retry_round, plan_attempts
FROM jobs WHERE job_id = ANY(%(job_ids)s::text[])

-- name: job_statuses
SELECT job_id, status FROM jobs WHERE job_id = ANY(%(job_ids)s::text[])

-- name: lock_jobs
SELECT job_id, job_type, status, current_stage, total_stages, failure_policy, retry_round, outcome, error, result,
       plan_attempts, finalize_deferrals, finalize_owner, extract(epoch FROM finalize_claim_until - now())::float8
FROM jobs WHERE job_id = ANY(%(job_ids)s::text[])
ORDER BY job_id
FOR NO KEY UPDATE

-- name: read_jobs
SELECT job_id, job_type, status, current_stage, total_stages, failure_policy, retry_round, outcome, error, result,
       plan_attempts, finalize_deferrals, finalize_owner, extract(epoch FROM finalize_claim_until - now())::float8
FROM jobs WHERE job_id = ANY(%(job_ids)s::text[])

-- name: start_job_stages
-- The callers pass the jobs in job id order.
UPDATE jobs j SET status = 'processing', updated_at = now()
FROM unnest(%(job_ids)s::text[], %(stages)s::int[], %(rounds)s::int[]) AS u(job_id, stage, round)
WHERE j.job_id = u.job_id AND j.current_stage = u.stage AND j.retry_round = u.round
  AND j.status = ANY(%(sources)s::job_status[])
RETURNING j.job_id

-- name: move_jobs
-- A batch's jobs moved on (their stages completed, or a fail-fast job failed), in one statement: the rows locked
-- in job id order (the locked CTE), each guarded by its move. An advance needs the job on that stage with a stage
-- after it; a finish goes through finalizing to completed (two edges, guarded by the first); a fail keeps the
-- job's error if it has one.
WITH u AS (
    SELECT * FROM unnest(%(job_ids)s::text[], %(stages)s::int[], %(moves)s::text[], %(outcomes)s::job_status[],
                         %(results)s::jsonb[], %(errors)s::jsonb[]) AS u(job_id, stage, move, outcome, result, error)
), locked AS (
    SELECT j.job_id FROM jobs j JOIN u USING (job_id)
    WHERE CASE u.move
              WHEN 'advance' THEN j.status = ANY(%(advance_sources)s::job_status[]) AND j.current_stage = u.stage
                                  AND j.current_stage < j.total_stages
              WHEN 'fail' THEN j.status = ANY(%(fail_sources)s::job_status[])
              ELSE j.status = ANY(%(finalize_sources)s::job_status[]) END
    ORDER BY j.job_id
    FOR NO KEY UPDATE OF j
)
UPDATE jobs j
SET current_stage = CASE WHEN u.move = 'advance' THEN j.current_stage + 1 ELSE j.current_stage END,
    plan_attempts = CASE WHEN u.move = 'advance' THEN 0 ELSE j.plan_attempts END,
    status = CASE u.move WHEN 'advance' THEN j.status WHEN 'finish' THEN 'completed'::job_status
                         ELSE 'finalizing'::job_status END,
    outcome = CASE WHEN u.move = 'advance' THEN j.outcome ELSE u.outcome END,
    result = CASE WHEN u.move = 'finish' THEN u.result ELSE j.result END,
    error = CASE WHEN u.move = 'fail' THEN coalesce(j.error, u.error) ELSE j.error END,
    finished_at = CASE WHEN u.move = 'finish' THEN now() ELSE j.finished_at END,
    updated_at = now()
FROM locked l JOIN u USING (job_id)
WHERE j.job_id = l.job_id
RETURNING j.job_id

-- name: job_to_finalizing
UPDATE jobs SET status = 'finalizing', outcome = %(outcome)s, updated_at = now(), error = COALESCE(error, %(error)s)
WHERE job_id = %(job_id)s AND status = ANY(%(sources)s::job_status[])
RETURNING job_id

-- name: count_plan_attempt
UPDATE jobs SET plan_attempts = plan_attempts + 1, updated_at = now()
WHERE job_id = %(job_id)s AND current_stage = %(stage)s AND status = ANY(%(sources)s::job_status[])
RETURNING plan_attempts

-- name: claim_finalize
UPDATE jobs SET finalize_owner = %(owner)s, finalize_claim_until = now() + make_interval(secs => %(claim_seconds)s),
    updated_at = now()
WHERE job_id = %(job_id)s AND status = ANY(%(sources)s::job_status[])
  AND (finalize_owner IS NULL OR finalize_owner = %(owner)s OR finalize_claim_until < now())
RETURNING job_id, job_type, status, parameters, current_stage, total_stages, failure_policy, result, error,
       created_at, updated_at, finished_at, outcome, retry_round, plan_attempts

-- name: renew_finalize_claim
UPDATE jobs SET finalize_claim_until = now() + make_interval(secs => %(claim_seconds)s), updated_at = now()
WHERE job_id = %(job_id)s AND status = ANY(%(sources)s::job_status[]) AND finalize_owner = %(owner)s
RETURNING job_id

-- name: count_finalize_deferral
UPDATE jobs SET finalize_deferrals = finalize_deferrals + 1
WHERE job_id = %(job_id)s AND status = ANY(%(sources)s::job_status[])
RETURNING finalize_deferrals

-- name: finish_job
UPDATE jobs SET status = %(status)s, result = %(result)s, error = %(error)s, finished_at = now(), updated_at = now(),
    finalize_claim_until = NULL
WHERE job_id = %(job_id)s AND status = ANY(%(sources)s::job_status[]) AND finalize_owner = %(owner)s
RETURNING job_id

-- name: reopen_job
UPDATE jobs SET status = 'processing', outcome = NULL, error = NULL, result = NULL, finished_at = NULL,
    retry_round = retry_round + 1, plan_attempts = 0, finalize_owner = NULL, finalize_claim_until = NULL,
    round_started_at = now(), updated_at = now()
WHERE job_id = %(job_id)s AND status = ANY(%(sources)s::job_status[])
RETURNING retry_round

-- name: restart_job
UPDATE jobs SET status = 'queued', current_stage = 1, outcome = NULL, error = NULL, result = NULL, finished_at = NULL,
    retry_round = retry_round + 1, plan_attempts = 0, finalize_owner = NULL, finalize_claim_until = NULL,
    round_started_at = now(), updated_at = now()
WHERE job_id = %(job_id)s AND status = ANY(%(sources)s::job_status[])
RETURNING retry_round

-- name: insert_events
-- The events of one unit of work as one JSON array, in the order they were recorded (the function scan keeps it,
-- so ids follow it); a `checked` event is dropped when its job does not exist. One JSON parameter costs the
-- client one serialisation and the server one parse, about what a single-row INSERT did, however many events.
INSERT INTO job_events (job_id, kind, stage, task_id, detail)
SELECT e.job_id, e.kind, e.stage, e.task_id, e.detail
FROM jsonb_to_recordset(%(events)s::jsonb)
     AS e(job_id text, kind text, stage int, task_id text, detail jsonb, checked boolean)
WHERE NOT e.checked OR EXISTS (SELECT 1 FROM jobs j WHERE j.job_id = e.job_id)

-- name: lock_stages
SELECT s.job_id, s.stage FROM stages s
JOIN unnest(%(job_ids)s::text[], %(stages)s::int[]) AS u(job_id, stage) ON s.job_id = u.job_id AND s.stage = u.stage
ORDER BY s.job_id, s.stage
FOR NO KEY UPDATE OF s

-- name: insert_stages
INSERT INTO stages (job_id, stage, name, task_count, remaining)
SELECT u.job_id, u.stage, u.name, u.task_count, u.task_count
FROM unnest(%(job_ids)s::text[], %(stages)s::int[], %(names)s::text[], %(task_counts)s::int[])
     AS u(job_id, stage, name, task_count)
ON CONFLICT (job_id, stage) DO NOTHING
RETURNING job_id, stage

-- name: decrement_stages
-- The fan-in counters of a batch's stages in one statement, the rows locked in (job, stage) order.
WITH locked AS (
    SELECT s.job_id, s.stage, u.done, u.failed
    FROM stages s
    JOIN unnest(%(job_ids)s::text[], %(stages)s::int[], %(done)s::int[], %(failed)s::int[])
         AS u(job_id, stage, done, failed) ON s.job_id = u.job_id AND s.stage = u.stage
    ORDER BY s.job_id, s.stage FOR NO KEY UPDATE OF s
)
UPDATE stages s SET remaining = s.remaining - locked.done, failed = s.failed + locked.failed
FROM locked WHERE s.job_id = locked.job_id AND s.stage = locked.stage
RETURNING s.job_id, s.stage, s.remaining

-- name: complete_stages
-- Only stages whose counter is zero: a close that comes late (after a retry reopened the stage) changes nothing.
-- The rows locked in (job, stage) order.
WITH locked AS (
    SELECT s.job_id, s.stage
    FROM stages s
    JOIN unnest(%(job_ids)s::text[], %(stages)s::int[]) AS u(job_id, stage) ON s.job_id = u.job_id AND s.stage = u.stage
    WHERE s.status = ANY(%(sources)s::stage_status[]) AND s.remaining = 0
    ORDER BY s.job_id, s.stage FOR NO KEY UPDATE OF s
)
UPDATE stages s SET status = 'completed', completed_at = now()
FROM locked
WHERE s.job_id = locked.job_id AND s.stage = locked.stage AND s.status = ANY(%(sources)s::stage_status[])
  AND s.remaining = 0
RETURNING s.job_id, s.stage, s.task_count, s.failed

-- name: counted_stages
-- The open statuses spelled out too, so the generic plan uses jobs_status_updated_idx (see take_back_expired).
SELECT s.job_id, s.stage
FROM jobs j JOIN stages s ON s.job_id = j.job_id
WHERE j.status IN ('queued', 'processing', 'finalizing') AND j.status = ANY(%(job_sources)s::job_status[])
  AND s.status = ANY(%(stage_sources)s::stage_status[]) AND s.remaining = 0
ORDER BY j.updated_at, s.job_id, s.stage
LIMIT %(limit)s

-- name: stage_totals
SELECT job_id, stage, task_count, remaining, failed FROM stages WHERE job_id = ANY(%(job_ids)s::text[])
ORDER BY job_id, stage

-- name: cancel_stages
UPDATE stages SET status = 'cancelled', completed_at = now()
WHERE job_id = %(job_id)s AND status = ANY(%(sources)s::stage_status[])

-- name: reopen_stage
UPDATE stages s SET status = 'processing', completed_at = NULL,
    remaining = (SELECT count(*) FROM tasks t WHERE t.job_id = s.job_id AND t.stage = s.stage
                 AND t.status = ANY(%(pending)s::task_status[])),
    failed = (SELECT count(*) FROM tasks t WHERE t.job_id = s.job_id AND t.stage = s.stage AND t.status = 'failed')
WHERE s.job_id = %(job_id)s AND s.stage = %(stage)s AND s.status = ANY(%(sources)s::stage_status[])
RETURNING remaining

-- name: archive_round_job
INSERT INTO job_rounds (job_id, round, status, result, error, stages, started_at, finished_at)
SELECT j.job_id, %(round)s, j.status, j.result, j.error,
       COALESCE((SELECT jsonb_agg(jsonb_build_object('stage', s.stage, 'name', s.name, 'status', s.status,
                                                     'tasks', s.task_count, 'failed', s.failed) ORDER BY s.stage)
                 FROM stages s WHERE s.job_id = j.job_id), '[]'::jsonb),
       j.round_started_at, j.finished_at
FROM jobs j WHERE j.job_id = %(job_id)s

-- name: archive_round_tasks
INSERT INTO task_history (job_id, round, task_id, stage, idx, task_type, status, attempt, errors, result, finished_at)
SELECT job_id, %(round)s, task_id, stage, idx, task_type, status, attempt, errors, result, finished_at
FROM tasks WHERE job_id = %(job_id)s

-- name: delete_round_tasks
DELETE FROM tasks WHERE job_id = %(job_id)s

-- name: delete_round_stages
DELETE FROM stages WHERE job_id = %(job_id)s

-- name: insert_tasks
-- Small stages' task rows in one statement (a large stage's are copied: `copy_tasks`).
INSERT INTO tasks (task_id, job_id, stage, idx, task_type, parameters, max_attempts, timeout_seconds)
-- The parameters come as one JSON array (one serialisation, not one per task), in task order.
SELECT u.task_id, u.job_id, u.stage, u.idx, u.task_type, p.parameters, u.max_attempts, u.timeout_seconds
FROM unnest(%(task_ids)s::text[], %(job_ids)s::text[], %(stages)s::int[], %(idxs)s::int[], %(task_types)s::text[],
            %(max_attempts)s::int[], %(timeouts)s::float8[])
     WITH ORDINALITY AS u(task_id, job_id, stage, idx, task_type, max_attempts, timeout_seconds, n)
JOIN jsonb_array_elements(%(parameters)s::jsonb) WITH ORDINALITY AS p(parameters, n) ON p.n = u.n

-- name: copy_tasks
COPY tasks (task_id, job_id, stage, idx, task_type, parameters, max_attempts, timeout_seconds) FROM STDIN

-- name: copy_messages
COPY queue_messages (queue, message_id, body, properties) FROM STDIN

-- name: claim_tasks
-- The lease lasts `lease_seconds`, never longer than the task's time limit (the running worker renews it).
-- The claim waits for its WAL flush: a claim lost in a server crash would put the task back to queued while the
-- worker still runs it, and its outcome, then late, would settle the task's only message.
-- The tasks are reached by id alone: the job's status is a per-row subquery and its columns are joined after the
-- update. Joined in the update, a planner that took the running jobs for rare started from the job and read every
-- task of it (tasks_job_stage_idx), about 6 ms per claim in a 10,000-task stage with history in the database.
WITH claimed AS (
    UPDATE tasks t
    SET status = 'running', attempt = t.attempt + 1, claimed_by = %(worker_id)s, updated_at = now(),
        lease_until = now() + make_interval(secs => least(coalesce(%(lease_seconds)s::float8, t.timeout_seconds),
                                                          t.timeout_seconds)),
        errors = CASE WHEN t.status = ANY(%(leased)s::task_status[])
                      THEN t.errors || jsonb_build_array(%(taken_back)s::jsonb || jsonb_build_object(
                           'attempt', t.attempt, 'where', t.claimed_by, 'at', now()))
                      ELSE t.errors END
    WHERE t.task_id = ANY(%(task_ids)s::text[])
      AND (SELECT j.status FROM jobs j WHERE j.job_id = t.job_id) = ANY(%(job_sources)s::job_status[])
      AND ((t.status = ANY(%(sources)s::task_status[]) AND (t.not_before IS NULL OR t.not_before <= now()))
           OR (t.status = ANY(%(leased)s::task_status[]) AND t.lease_until < now()))
    RETURNING t.task_id, t.job_id, t.stage, t.idx, t.task_type, t.parameters, t.attempt, t.max_attempts,
              t.timeout_seconds
)
SELECT c.task_id, c.job_id, j.job_type, c.stage, c.idx, c.task_type, c.parameters, c.attempt, c.max_attempts,
       c.timeout_seconds, j.failure_policy, j.retry_round,
       (SELECT s.task_count FROM stages s WHERE s.job_id = c.job_id AND s.stage = c.stage)
FROM claimed c JOIN jobs j ON j.job_id = c.job_id

-- name: complete_tasks
UPDATE tasks t
SET status = 'completed', result = u.result, lease_until = NULL, finished_at = now(), updated_at = now()
FROM unnest(%(task_ids)s::text[], %(attempts)s::int[], %(results)s::jsonb[]) AS u(task_id, attempt, result)
WHERE t.task_id = ANY(%(task_ids)s::text[]) AND t.task_id = u.task_id AND t.status = ANY(%(sources)s::task_status[])
  AND t.attempt = u.attempt
RETURNING t.task_id, t.job_id, t.stage, t.task_type, t.attempt

-- name: complete_tasks_counted
-- complete_tasks, then decrement_stages for the stages it touched, in one statement (run alone, in autocommit):
-- task rows locked first, then stage rows in (job, stage) order (the locked CTE), as everywhere; then the task
-- messages settled as `queue_acknowledge` does, last: the acked CTE reads counted before it updates a row, so it
-- runs once every stage row is held. The row without a task id says how many messages it settled.
WITH done AS (
    UPDATE tasks t
    SET status = 'completed', result = u.result, lease_until = NULL, finished_at = now(), updated_at = now()
    FROM unnest(%(task_ids)s::text[], %(attempts)s::int[], %(results)s::jsonb[]) AS u(task_id, attempt, result)
    WHERE t.task_id = ANY(%(task_ids)s::text[]) AND t.task_id = u.task_id
      AND t.status = ANY(%(sources)s::task_status[]) AND t.attempt = u.attempt
    RETURNING t.task_id, t.job_id, t.stage, t.task_type, t.attempt
), tally AS (
    SELECT job_id, stage, count(*)::int AS done FROM done GROUP BY job_id, stage
), locked AS (
    SELECT s.job_id, s.stage, tally.done FROM stages s JOIN tally USING (job_id, stage)
    ORDER BY s.job_id, s.stage FOR NO KEY UPDATE OF s
), counted AS (
    UPDATE stages s SET remaining = s.remaining - locked.done FROM locked
    WHERE s.job_id = locked.job_id AND s.stage = locked.stage
    RETURNING s.job_id, s.stage, s.remaining
), acked AS (
    UPDATE queue_messages AS q
    SET state = 'done', done_at = now(), lock_token = NULL
    FROM unnest(%(ack_ids)s::bigint[], %(ack_tokens)s::uuid[]) AS m(id, lock_token)
    WHERE (SELECT count(*) FROM counted) >= 0
      AND q.id = ANY(%(ack_ids)s::bigint[]) AND q.id = m.id AND q.lock_token = m.lock_token AND q.state = 'ready'
    RETURNING q.id
)
SELECT d.task_id, d.job_id, d.stage, d.task_type, d.attempt, c.remaining
FROM done d JOIN counted c USING (job_id, stage)
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, count(*)::int FROM acked

-- name: end_tasks
UPDATE tasks t
SET status = %(status)s::task_status, errors = t.errors || jsonb_build_array(u.error), lease_until = NULL,
    finished_at = now(), updated_at = now()
FROM unnest(%(task_ids)s::text[], %(attempts)s::int[], %(errors)s::jsonb[]) AS u(task_id, attempt, error)
WHERE t.task_id = ANY(%(task_ids)s::text[]) AND t.task_id = u.task_id AND t.status = ANY(%(sources)s::task_status[])
  AND t.attempt = u.attempt
RETURNING t.task_id, t.job_id, t.stage, t.task_type, t.attempt

-- name: schedule_retries
UPDATE tasks t
SET status = 'retry_scheduled', errors = t.errors || jsonb_build_array(u.error), lease_until = NULL,
    not_before = now() + make_interval(secs => u.delay), updated_at = now()
FROM unnest(%(task_ids)s::text[], %(attempts)s::int[], %(errors)s::jsonb[], %(delays)s::float8[])
     AS u(task_id, attempt, error, delay)
WHERE t.task_id = ANY(%(task_ids)s::text[]) AND t.task_id = u.task_id AND t.status = ANY(%(sources)s::task_status[])
  AND t.attempt = u.attempt
RETURNING t.task_id, t.job_id, t.stage, t.task_type, t.attempt

-- name: task_states
SELECT task_id, status, attempt FROM tasks WHERE task_id = ANY(%(task_ids)s::text[])

-- name: cancel_tasks
WITH ordered AS (
    SELECT task_id FROM tasks WHERE job_id = %(job_id)s AND status = ANY(%(sources)s::task_status[])
    ORDER BY task_id
    FOR NO KEY UPDATE
)
UPDATE tasks t SET status = 'cancelled', lease_until = NULL, finished_at = now(), updated_at = now()
FROM ordered WHERE t.task_id = ordered.task_id AND t.status = ANY(%(sources)s::task_status[])

-- name: requeue_tasks
UPDATE tasks t
SET status = 'queued', max_attempts = t.attempt + %(more_attempts)s, lease_until = NULL, not_before = NULL,
    claimed_by = NULL, result = NULL, finished_at = NULL, updated_at = now()
WHERE t.job_id = %(job_id)s AND t.stage = %(stage)s AND t.status = ANY(%(sources)s::task_status[])
RETURNING t.task_id, t.job_id, t.stage, t.task_type, t.attempt

-- name: take_back_expired
-- `t.status = 'running'` is spelled out beside the guard so the planner can use the partial index tasks_lease_idx
-- (a parameter cannot prove an index predicate); the guard parameter (LEASED_TASK) is the rule and says the same.
WITH expired AS (
    SELECT t.task_id FROM tasks t JOIN jobs j ON j.job_id = t.job_id
    WHERE t.status = 'running' AND t.status = ANY(%(leased)s::task_status[])
      AND j.status = ANY(%(job_sources)s::job_status[])
      AND t.lease_until < now() - make_interval(secs => %(grace)s)
    ORDER BY t.lease_until
    LIMIT %(limit)s
    FOR UPDATE OF t SKIP LOCKED
)
UPDATE tasks t
SET status = 'queued', lease_until = NULL, claimed_by = NULL, updated_at = now(),
    errors = t.errors || jsonb_build_array(%(taken_back)s::jsonb || jsonb_build_object(
        'attempt', t.attempt, 'where', t.claimed_by, 'at', now()))
FROM expired, jobs j
WHERE t.task_id = expired.task_id AND j.job_id = t.job_id
RETURNING t.task_id, t.job_id, t.stage, t.task_type, t.attempt, j.job_type, j.retry_round

-- name: live_lease_seconds
SELECT extract(epoch FROM max(lease_until) - now())::float8 FROM tasks
WHERE job_id = %(job_id)s AND status = ANY(%(leased)s::task_status[]) AND lease_until > now()

-- name: renew_task_leases
-- Extend the leases a worker still holds (running at the claimed attempt); each comes back with its job's status,
-- read per row so that the tasks are reached by id alone (see claim_tasks).
UPDATE tasks t
SET lease_until = now() + make_interval(secs => least(coalesce(%(lease_seconds)s::float8, t.timeout_seconds),
                                                      t.timeout_seconds))
FROM unnest(%(task_ids)s::text[], %(attempts)s::int[]) AS u(task_id, attempt)
WHERE t.task_id = ANY(%(task_ids)s::text[]) AND t.task_id = u.task_id AND t.attempt = u.attempt
  AND t.status = ANY(%(leased)s::task_status[])
RETURNING t.task_id, (SELECT j.status FROM jobs j WHERE j.job_id = t.job_id)

-- name: release_claims
-- Claims of tasks that were never started: back to queued as if the claim had not happened.
UPDATE tasks t
SET status = 'queued', attempt = t.attempt - 1, lease_until = NULL, claimed_by = NULL, updated_at = now()
FROM unnest(%(task_ids)s::text[], %(attempts)s::int[]) AS u(task_id, attempt)
WHERE t.task_id = ANY(%(task_ids)s::text[]) AND t.task_id = u.task_id
  AND t.status = ANY(%(sources)s::task_status[]) AND t.attempt = u.attempt
RETURNING t.task_id

-- name: count_early_resends
-- Messages that arrived before their retry is due: count a re-send on each task still waiting for exactly
-- that attempt; the caller sends the fresh message, due when the task is.
UPDATE tasks t SET resend_count = t.resend_count + 1
FROM unnest(%(task_ids)s::text[], %(attempts)s::int[]) AS u(task_id, attempt), jobs j
WHERE t.task_id = ANY(%(task_ids)s::text[]) AND t.task_id = u.task_id AND t.status = ANY(%(sources)s::task_status[])
  AND t.attempt + 1 = u.attempt AND t.not_before > now() AND j.job_id = t.job_id
  AND j.status = ANY(%(job_sources)s::job_status[])
RETURNING t.task_id, t.job_id, t.stage, t.task_type, t.attempt, j.job_type, j.retry_round, t.resend_count,
          greatest(0, extract(epoch FROM t.not_before - now()))::float8

-- name: count_overdue_resends
-- Retries due for longer than the deadline whose message never came: re-send them, due again from now (so the
-- next pass waits the whole deadline again before another copy).
WITH overdue AS (
    -- `'retry_scheduled'` spelled out for the partial index tasks_retry_due_idx, as in take_back_expired.
    SELECT t.task_id FROM tasks t JOIN jobs j ON j.job_id = t.job_id
    WHERE t.status = 'retry_scheduled' AND t.status = ANY(%(sources)s::task_status[])
      AND j.status = ANY(%(job_sources)s::job_status[])
      AND t.not_before < now() - make_interval(secs => %(overdue)s)
    ORDER BY t.not_before
    LIMIT %(limit)s
    FOR UPDATE OF t SKIP LOCKED
)
UPDATE tasks t SET resend_count = t.resend_count + 1, not_before = now(), updated_at = now()
FROM overdue, jobs j
WHERE t.task_id = overdue.task_id AND j.job_id = t.job_id
RETURNING t.task_id, t.job_id, t.stage, t.task_type, t.attempt, j.job_type, j.retry_round, t.resend_count,
          0::float8

-- name: stage_results
SELECT task_id, idx, status, result FROM tasks
WHERE job_id = %(job_id)s AND stage = %(stage)s AND status = 'completed'
ORDER BY idx
LIMIT %(limit)s

-- name: stages_results
-- `stage_results` of several stages in one read, each stage by the (job, stage, idx) index.
SELECT t.job_id, t.stage, t.task_id, t.idx, t.status, t.result
FROM unnest(%(job_ids)s::text[], %(stages)s::int[]) AS s(job_id, stage)
CROSS JOIN LATERAL (
    SELECT task_id, job_id, stage, idx, status, result FROM tasks
    WHERE tasks.job_id = s.job_id AND tasks.stage = s.stage AND tasks.status = 'completed'
    ORDER BY idx
) AS t
LIMIT %(limit)s

-- name: stuck_jobs
SELECT job_id, job_type, status, parameters, current_stage, total_stages, failure_policy, result, error,
       created_at, updated_at, finished_at, outcome, retry_round, plan_attempts
FROM jobs j
-- The open statuses spelled out too, so the generic plan uses jobs_status_updated_idx (see take_back_expired).
WHERE j.status IN ('queued', 'processing', 'finalizing') AND j.status = ANY(%(statuses)s::job_status[])
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

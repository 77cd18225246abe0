-- Named queries of the status path. None reads more of `tasks` than the tasks in flight: counts come from the
-- stage counters and the partial indexes of running and retry-scheduled tasks (migration 0020).

-- name: stage_progress
SELECT s.stage, s.name, s.status, s.task_count, s.remaining, s.failed, s.started_at, s.completed_at,
       (SELECT count(*) FROM tasks t
        WHERE t.job_id = s.job_id AND t.stage = s.stage AND t.status = 'running')::int AS running,
       (SELECT count(*) FROM tasks t
        WHERE t.job_id = s.job_id AND t.stage = s.stage AND t.status = 'retry_scheduled')::int AS retry_scheduled,
       j.status AS job_status
FROM stages s JOIN jobs j ON j.job_id = s.job_id
WHERE s.job_id = %(job_id)s
ORDER BY s.stage

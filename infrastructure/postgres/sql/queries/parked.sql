-- name: parked_delete
-- Remove dead letters after their replay or purge; answers the ids this call removed (a racing replay may
-- have removed some first).
DELETE FROM dead_letters WHERE id = ANY(%(ids)s::bigint[]) RETURNING id

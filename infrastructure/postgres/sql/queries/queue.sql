-- The PostgreSQL queue (transport) and the outbox relay: sends, claims, settlements and dead letters.
-- A locked message has available_at = its lock expiry, so "due" and "not locked" are one condition.

-- name: queue_listen
LISTEN coremachine_queue

-- name: queue_send
-- A message id still in the queue, or enqueued within the duplicate window, is dropped; a settled row older
-- than the window is taken over by the new message. The insert trigger notifies for new rows; taken-over
-- rows notify here (one notification per queue and transaction either way). Neither notifies while
-- `queue_notify` is off (Service Bus mode: nobody listens). A message is due at now + its due offset: its delay,
-- or, for a continuation of a started job, a day ago (`OutgoingMessage.due_offset_seconds`), so that the claim's
-- order by due time hands it out first.
WITH written AS (
    INSERT INTO queue_messages AS q (queue, message_id, body, properties, available_at)
    SELECT u.queue, u.message_id, u.body, u.properties, now() + make_interval(secs => u.due_offset)
    FROM unnest(%(queues)s::text[], %(message_ids)s::text[], %(bodies)s::jsonb[], %(properties)s::jsonb[],
                %(due_offsets)s::float8[]) AS u(queue, message_id, body, properties, due_offset)
    ON CONFLICT (queue, message_id) DO UPDATE
    SET body = excluded.body, properties = excluded.properties, state = 'ready', enqueued_at = now(),
        available_at = excluded.available_at, delivery_count = 0, lock_token = NULL, done_at = NULL
    WHERE q.state = 'done' AND q.enqueued_at < now() - make_interval(secs => %(window_seconds)s::float8)
    RETURNING q.queue
)
SELECT w.queue, pg_notify('coremachine_queue', w.queue)::text AS notified
FROM (SELECT DISTINCT queue FROM written) AS w
WHERE coalesce((SELECT enabled FROM queue_notify), true)

-- name: queue_claim
-- Lock up to `limit` due messages; those already delivered `max_deliveries` times go to the dead letters
-- instead. Returns kind 'message' rows (in claim order) and one kind 'dead' row per dead-lettered message. When
-- nothing was due at all, one kind 'idle' row instead: due_in = seconds until the earliest scheduled or locked
-- message becomes due (NULL: none), so an idle receiver knows how long to sleep in the same round trip. A due
-- message this claim skipped is locked by a transaction still running: another receiver's claim (it takes it), or
-- a release or abandon (which notifies when it commits); neither is a reason to look again in 20 ms.
-- The claim commits without waiting for its WAL flush (synchronous_commit off for this one transaction): a claim
-- lost in a server crash only makes the message available again uncounted, as if the receiver had crashed
-- before claiming, and anything durable the receiver commits afterwards flushes the claim with it. That saves a
-- disk flush on every hop of a job.
WITH due AS (
    SELECT id, available_at
    FROM queue_messages
    WHERE queue = %(queue)s AND state = 'ready' AND available_at <= now()
    ORDER BY available_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
claimed AS (
    UPDATE queue_messages AS q
    SET available_at = now() + make_interval(secs => %(lock_seconds)s::float8),
        delivery_count = q.delivery_count + 1,
        lock_token = gen_random_uuid()
    FROM due
    WHERE q.id = due.id AND q.delivery_count < %(max_deliveries)s::int
    RETURNING q.id, q.queue, q.message_id, q.body, q.properties, q.delivery_count, q.lock_token, q.enqueued_at
),
expired AS (
    UPDATE queue_messages AS q
    SET state = 'done', done_at = now(), lock_token = NULL
    FROM due
    WHERE q.id = due.id AND q.delivery_count >= %(max_deliveries)s::int
    RETURNING q.queue, q.message_id, q.body, q.properties, q.delivery_count, q.enqueued_at
),
dead AS (
    INSERT INTO dead_letters
        (queue, message_id, body, properties, reason, description, delivery_count, enqueued_at, replay_count)
    SELECT e.queue, e.message_id, e.body, e.properties, 'MaxDeliveryCountExceeded',
           'delivered ' || e.delivery_count || ' times, the maximum is ' || %(max_deliveries)s::int,
           e.delivery_count, e.enqueued_at,
           CASE WHEN e.properties ->> 'replay_count' ~ '^[0-9]{1,9}$'
                THEN (e.properties ->> 'replay_count')::int ELSE 0 END
    FROM expired AS e
    RETURNING id
)
SELECT * FROM (
    SELECT 'message' AS kind, c.queue, c.message_id, c.body, c.properties, c.delivery_count, c.lock_token,
           c.enqueued_at, due.available_at AS due_at, c.id, NULL::float8 AS due_in
    FROM claimed AS c JOIN due ON due.id = c.id
    UNION ALL
    SELECT 'dead', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, dead.id, NULL
    FROM dead
    UNION ALL
    SELECT 'idle', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           (SELECT extract(epoch FROM min(w.available_at) - clock_timestamp())::float8
            FROM queue_messages AS w WHERE w.queue = %(queue)s AND w.state = 'ready' AND w.available_at > now())
    WHERE NOT EXISTS (SELECT 1 FROM due)
) AS result
WHERE (SELECT set_config('synchronous_commit', 'off', true)) IS NOT NULL
ORDER BY kind DESC, due_at, id

-- name: queue_complete
-- Completing commits without waiting for its WAL flush, like the claim: what the message caused was committed
-- (durably) before it is settled, so a completion lost in a server crash only delivers the message once more, and
-- every handler treats a repeated delivery as the duplicate it is.
UPDATE queue_messages AS q
SET state = 'done', done_at = now(), lock_token = NULL
FROM unnest(%(queues)s::text[], %(message_ids)s::text[], %(lock_tokens)s::uuid[]) AS m(queue, message_id, lock_token)
WHERE q.queue = m.queue AND q.message_id = m.message_id AND q.lock_token = m.lock_token AND q.state = 'ready'
  AND (SELECT set_config('synchronous_commit', 'off', true)) IS NOT NULL

-- name: queue_complete_by_id
-- Settle by primary key: an index lookup whatever the statistics of this constantly changing table say. Without
-- waiting for the WAL flush, as `queue_complete`.
UPDATE queue_messages AS q
SET state = 'done', done_at = now(), lock_token = NULL
FROM unnest(%(ids)s::bigint[], %(lock_tokens)s::uuid[]) AS m(id, lock_token)
WHERE q.id = ANY(%(ids)s::bigint[]) AND q.id = m.id AND q.lock_token = m.lock_token AND q.state = 'ready'
  AND (SELECT set_config('synchronous_commit', 'off', true)) IS NOT NULL

-- name: queue_acknowledge
-- `queue_complete_by_id` inside a store's unit of work: the messages whose outcomes it records, settled by the
-- same commit, which waits for its WAL flush as the outcomes need. The unit's last statement: queue rows are
-- locked after every other row.
UPDATE queue_messages AS q
SET state = 'done', done_at = now(), lock_token = NULL
FROM unnest(%(ids)s::bigint[], %(lock_tokens)s::uuid[]) AS m(id, lock_token)
WHERE q.id = ANY(%(ids)s::bigint[]) AND q.id = m.id AND q.lock_token = m.lock_token AND q.state = 'ready'

-- name: queue_abandon
-- Release the lock (available again now or after the delay) and wake idle receivers of the queue.
WITH released AS (
    UPDATE queue_messages
    SET available_at = now() + make_interval(secs => %(delay_seconds)s::float8), lock_token = NULL
    WHERE queue = %(queue)s AND message_id = %(message_id)s AND lock_token = %(lock_token)s::uuid
      AND state = 'ready'
    RETURNING queue
)
SELECT r.queue, pg_notify('coremachine_queue', r.queue)::text AS notified
FROM released AS r

-- name: queue_release
-- Hand back unstarted messages: available at once, in the place they had before this delivery (`due_at`: a
-- continuation keeps its head start), and this delivery is not counted.
WITH released AS (
    UPDATE queue_messages AS q
    SET available_at = least(now(), coalesce(m.due_at, now())), lock_token = NULL,
        delivery_count = greatest(q.delivery_count - 1, 0)
    FROM unnest(%(ids)s::bigint[], %(lock_tokens)s::uuid[], %(due_ats)s::timestamptz[]) AS m(id, lock_token, due_at)
    WHERE q.id = ANY(%(ids)s::bigint[]) AND q.id = m.id AND q.lock_token = m.lock_token AND q.state = 'ready'
    RETURNING q.queue
)
SELECT r.queue, pg_notify('coremachine_queue', r.queue)::text AS notified
FROM (SELECT DISTINCT queue FROM released) AS r

-- name: queue_renew_locks
-- A receiver still working on its messages extends their locks (a locked row's available_at is its lock expiry).
UPDATE queue_messages AS q
SET available_at = now() + make_interval(secs => %(lock_seconds)s::float8)
FROM unnest(%(ids)s::bigint[], %(lock_tokens)s::uuid[]) AS m(id, lock_token)
WHERE q.id = ANY(%(ids)s::bigint[]) AND q.id = m.id AND q.lock_token = m.lock_token AND q.state = 'ready'

-- name: queue_dead_letter
WITH settled AS (
    UPDATE queue_messages
    SET state = 'done', done_at = now(), lock_token = NULL
    WHERE queue = %(queue)s AND message_id = %(message_id)s AND lock_token = %(lock_token)s::uuid
      AND state = 'ready'
    RETURNING queue, message_id, body, properties, delivery_count, enqueued_at
)
INSERT INTO dead_letters
    (queue, message_id, body, properties, reason, description, delivery_count, enqueued_at, replay_count)
SELECT s.queue, s.message_id, s.body, s.properties, %(reason)s, %(description)s, s.delivery_count, s.enqueued_at,
       CASE WHEN s.properties ->> 'replay_count' ~ '^[0-9]{1,9}$'
            THEN (s.properties ->> 'replay_count')::int ELSE 0 END
FROM settled AS s
RETURNING id

-- name: queue_purge_settled
DELETE FROM queue_messages
WHERE state = 'done' AND done_at < now() - make_interval(secs => %(older_than_seconds)s::float8)

-- name: queue_list_dead_letters
SELECT id, queue, message_id, body, properties, reason, description, delivery_count, dead_lettered_at,
       replay_count
FROM dead_letters
WHERE (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))
  AND (%(job_id)s::text IS NULL OR properties ->> 'job_id' = %(job_id)s::text)
  AND (%(task_type)s::text IS NULL OR properties ->> 'task_type' = %(task_type)s::text)
  AND (%(reason)s::text IS NULL OR reason = %(reason)s::text)
  AND id > %(after)s::bigint AND (%(upto)s::bigint IS NULL OR id <= %(upto)s::bigint)
ORDER BY id
LIMIT %(limit)s

-- name: queue_lock_dead_letters
-- The next batch of selected dead letters to replay, locked until the replay commits.
SELECT id, queue, message_id, body, properties, reason, description, delivery_count, dead_lettered_at,
       replay_count
FROM dead_letters
WHERE (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))
  AND (%(job_id)s::text IS NULL OR properties ->> 'job_id' = %(job_id)s::text)
  AND (%(task_type)s::text IS NULL OR properties ->> 'task_type' = %(task_type)s::text)
  AND (%(reason)s::text IS NULL OR reason = %(reason)s::text)
  AND id > %(after)s::bigint AND (%(upto)s::bigint IS NULL OR id <= %(upto)s::bigint)
ORDER BY id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- name: queue_dead_letters_high_water
SELECT coalesce(max(id), 0) AS upto FROM dead_letters

-- name: queue_get_dead_letter
SELECT id, queue, message_id, body, properties, reason, description, delivery_count, dead_lettered_at,
       replay_count
FROM dead_letters
WHERE id = %(id)s

-- name: queue_delete_dead_letters
DELETE FROM dead_letters WHERE id = ANY(%(ids)s::bigint[])

-- name: queue_purge_dead_letters
DELETE FROM dead_letters
WHERE (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))
  AND (%(job_id)s::text IS NULL OR properties ->> 'job_id' = %(job_id)s::text)
  AND (%(task_type)s::text IS NULL OR properties ->> 'task_type' = %(task_type)s::text)
  AND (%(reason)s::text IS NULL OR reason = %(reason)s::text)

-- name: dead_letter_park
-- A dead letter the Functions host cannot settle itself (Python triggers cannot dead-letter): parked here.
INSERT INTO dead_letters
    (queue, message_id, body, properties, reason, description, delivery_count, enqueued_at, replay_count)
VALUES (%(queue)s, %(message_id)s, %(body)s, %(properties)s, %(reason)s, %(description)s, %(delivery_count)s,
        %(enqueued_at)s, %(replay_count)s)

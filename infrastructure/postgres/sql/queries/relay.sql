-- name: relay_claim
-- Ready outbox rows nobody holds a live lease on (optionally only those enqueued longer ago than
-- `older_than_seconds`), leased to this relay for `lease_seconds`. The row locks last only this statement's
-- transaction; the lease is what keeps racing relays apart while the rows are sent.
-- `delay_seconds` keeps a scheduled message's remaining delay.
WITH picked AS (
    SELECT id
    FROM queue_messages
    WHERE state = 'ready'
      AND (relay_until IS NULL OR relay_until < now())
      AND (%(older_than_seconds)s::float8 IS NULL
           OR enqueued_at < now() - make_interval(secs => %(older_than_seconds)s::float8))
    ORDER BY id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE queue_messages q
SET relay_token = %(token)s, relay_until = now() + make_interval(secs => %(lease_seconds)s::float8)
FROM picked
WHERE q.id = picked.id
RETURNING q.id, q.queue, q.message_id, q.body, q.properties,
          greatest(0, extract(epoch FROM q.available_at - now()))::float8 AS delay_seconds

-- name: relay_mark_done
-- Only while this relay still holds the lease; a row whose lease lapsed and was claimed again is the other
-- relay's to mark.
UPDATE queue_messages SET state = 'done', done_at = now(), lock_token = NULL, relay_token = NULL, relay_until = NULL
WHERE id = ANY(%(ids)s::bigint[]) AND state = 'ready' AND relay_token = %(token)s

-- name: relay_release
-- Give leased rows back at once (the send failed for a reason that may pass): the next flush takes them.
UPDATE queue_messages SET relay_token = NULL, relay_until = NULL
WHERE id = ANY(%(ids)s::bigint[]) AND state = 'ready' AND relay_token = %(token)s

-- name: relay_set_aside
-- A row the transport refuses for good (too large, invalid) leaves the outbox for the dead letters, with the
-- reason, where the dead-letter tooling lists, replays and purges it; the rows behind it flow on.
WITH refused AS (
    UPDATE queue_messages
    SET state = 'done', done_at = now(), lock_token = NULL, relay_token = NULL, relay_until = NULL
    WHERE id = %(id)s AND state = 'ready' AND relay_token = %(token)s
    RETURNING queue, message_id, body, properties, delivery_count, enqueued_at
)
INSERT INTO dead_letters
    (queue, message_id, body, properties, reason, description, delivery_count, enqueued_at, replay_count)
SELECT queue, message_id, body, properties, %(reason)s, %(description)s, delivery_count, enqueued_at,
       CASE WHEN properties ->> 'replay_count' ~ '^[0-9]{1,9}$' THEN (properties ->> 'replay_count')::int ELSE 0 END
FROM refused
